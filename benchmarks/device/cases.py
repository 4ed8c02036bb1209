"""Extra llama.cpp memory-plan cases on the GPU machine: the settings MEM_SETTINGS does not cover, and the same
cases under environment switches of the backend (GGML_CUDA_DISABLE_FUSION=1 turns off the CUDA fusions whose
allocation dependencies ggml-cuda.cu graph_optimize adds).

    python3 benchmarks/device/cases.py --bin DIR --out DIR CASES_FILE

CASES_FILE: one case per line, ``model|quant|ENV=V,ENV=V|llama-server flags`` (ENV part may be empty); lines
starting with # are skipped. Output: memprobe.jsonl with ``label`` = ``model|quant|env|flags`` (spaces
in the flags written as _).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import device_parser, log, safe_write  # noqa: E402


def main() -> int:
    ap = device_parser(240.0)
    ap.add_argument("cases", type=Path)
    a = ap.parse_args()
    start = time.time()
    a.models.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)
    rows = [line.strip().split("|", 3) for line in a.cases.read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    bad = [r for r in rows if len(r) != 4]
    if bad:
        print(f"{a.cases}: lines need model|quant|ENV|flags: {'|'.join(bad[0])}", file=sys.stderr)
        return 2
    models = sorted({(m, q) for m, q, _, _ in rows})
    with ProcessPoolExecutor(8) as pool:
        paths = dict(zip(models, pool.map(safe_write, [(m, q, str(a.models / f"{m}-{q}.gguf"), False)
                                                         for m, q in models])))
    by_env: dict[str, list[str]] = {}
    for m, q, env, flags in rows:
        if paths.get((m, q)):
            label = f"{m}|{q}|{env}|{flags.replace(' ', '_')}"  # memprobe's label is one word
            by_env.setdefault(env, []).append(f"{label} -m {paths[(m, q)]} {flags}")
    for env, cases in by_env.items():
        extra = dict(kv.split("=", 1) for kv in env.split(",") if kv)
        log(f"{len(cases)} cases with {extra or 'no switches'}")
        with (a.out / "memprobe.jsonl").open("a") as f, (a.out / "memprobe.err").open("a") as err:
            p = subprocess.Popen([str(a.bin / "llama-memprobe")], stdin=subprocess.PIPE, stdout=f, stderr=err,
                                 text=True, env=dict(os.environ, **extra))
            try:
                p.communicate("\n".join(cases) + "\n", timeout=max(10, start + a.budget - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                log("out of time")
    log(f"done in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
