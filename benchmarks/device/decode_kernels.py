"""Token generation with llama.cpp's CUDA graphs and op fusions on and off, on the GPU machine: what a kernel of the
decode graph costs beyond its memory traffic (rules/speed.toml decode-graph-kernels, decode-layer-overhead).

    python3 benchmarks/device/decode_kernels.py --bin DIR --out DIR [--budget SECONDS]

Models of different kernels per layer (benchmarks/graph_kernels.py: llama 19, gemma3 28, qwen35 37, gpt-oss 35,
qwen3moe 38), written as measure.py's bench models (zero weights but norms, routers and embeddings), each run by
llama-bench tg64 under four environments: default, GGML_CUDA_DISABLE_FUSION=1, GGML_CUDA_DISABLE_GRAPHS=1, both.
Writes decode-kernels.jsonl: llama-bench's JSON lines, each with the environment added as "env".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.device.measure import device_parser, log, safe_write  # noqa: E402

MODELS = [("llama-3.1-8b-instruct", "Q4_K_M"), ("gemma-3-12b-it", "Q4_K_M"), ("qwen3.5-9b", "Q4_K_M"),
          ("gpt-oss-20b", "MXFP4_MOE"), ("qwen3-30b-a3b", "Q4_K_M")]
ENVS = {"default": {}, "no-fusion": {"GGML_CUDA_DISABLE_FUSION": "1"}, "no-graphs": {"GGML_CUDA_DISABLE_GRAPHS": "1"},
        "neither": {"GGML_CUDA_DISABLE_FUSION": "1", "GGML_CUDA_DISABLE_GRAPHS": "1"}}


def main() -> int:
    ap = device_parser(300.0)
    a = ap.parse_args()
    deadline = time.time() + a.budget
    a.models.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)
    for model_id, quant in MODELS:
        path = safe_write((model_id, quant, str(a.models / f"bench-{model_id}-{quant}.gguf"), True))
        if path is None:
            continue
        for name, extra in ENVS.items():
            left = deadline - time.time()
            if left < 15:
                log("out of time")
                return 0
            cmd = [str(a.bin / "llama-bench"), "-m", path, "-o", "jsonl", "-p", "0", "-n", "64", "-r", "3",
                   "-fa", "1"]
            log(f"{name}: {' '.join(cmd)}")
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **extra),
                                   timeout=left - 5)
            except subprocess.TimeoutExpired:
                log("timed out")
                continue
            with (a.out / "decode-kernels.jsonl").open("a") as f:
                for line in p.stdout.splitlines():
                    if line.startswith("{"):
                        f.write(json.dumps({**json.loads(line), "env": name}) + "\n")
            if p.returncode:
                with (a.out / "decode-kernels.err").open("a") as err:
                    err.write(p.stderr[-3000:])
        os.unlink(path)  # the page cache and disk of one model at a time
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
