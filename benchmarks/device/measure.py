"""Measure llama.cpp on a GPU machine: its own memory plan per buffer (memprobe) and llama-bench speed.

Run on the GPU machine from the repository root, with the binaries built as benchmarks/device/README.md says:

    python3 benchmarks/device/measure.py --bin DIR --out DIR [--models DIR] [--budget SECONDS]

Steps, each bounded in time, each writing its results as soon as it has them:

1. ``probe``: the machine as advisor's probe reads it (nvidia-smi outputs, /proc/cpuinfo, ``advisor probe --json``,
   ``advisor bench --memory``), for tests/data.
2. ``memprobe``: catalog models rebuilt header-only with their real tensor inventories (tests/gguf_from_catalog.py),
   every case of MEM_SETTINGS; llama.cpp's dry run (no_alloc) gives each buffer in bytes -> memprobe.jsonl.
3. ``bench``: llama-bench pp512/tg128 on catalog models whose data region is zero except what makes the run
   realistic (norms 1, random router and token embeddings, so MoE routing spreads over the experts as with
   trained weights) -> bench.jsonl.

Zero weights run the same kernels over the same bytes as trained ones; the GPU may clock slightly higher on zeros
when it is power-bound, so prefill on zeros is an upper bound.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.cuda_memprobe import MEM_SETTINGS  # noqa: E402

#: One model per catalog architecture (the GGUF quant most people run), sized by their real tensor inventories.
MEM_MODELS: list[tuple[str, str]] = [
    ("llama-3.1-8b-instruct", "Q4_K_M"), ("gpt-oss-20b", "MXFP4_MOE"), ("qwen3-30b-a3b", "Q4_K_M"),
    ("gemma-3-12b-it", "Q4_K_M"), ("deepseek-v3.1", "Q4_K_M"), ("deepseek-coder-v2-lite-instruct", "Q4_K_M"),
    ("qwen3-next-80b-a3b-instruct", "Q4_K_M"), ("granite-4.0-h-tiny", "Q4_K_M"), ("glm-4.5-air", "Q4_K_M"),
    ("gemma-3n-e4b-it", "Q4_K_M"), ("qwen3.5-35b-a3b", "Q4_K_M"), ("qwen3.5-9b", "Q4_K_M"),
    ("llama-4-scout-17b-16e-instruct", "Q4_K_M"), ("gpt-oss-120b", "MXFP4_MOE"), ("gemma-2-9b-it", "Q4_K_M"),
    ("phi-4-mini-instruct", "Q4_K_M"), ("deepseek-r1-distill-qwen-7b", "Q4_K_M"),
    ("deepseek-r1-0528-qwen3-8b", "Q4_K_M"), ("codegemma-1.1-7b-it", "Q4_K_M"), ("starcoder2-7b", "Q4_K_M"),
    ("smollm3-3b", "Q4_K_M"),
]


#: (model, quant, llama-bench flags) run in this order; the dense 8B in four weight types, a 70B, two MoE models
#: on the GPU and with their experts on the CPU, and one CPU-only run (the GPU hidden).
BENCH: list[tuple[str, str, str, bool]] = [
    ("llama-3.1-8b-instruct", "Q4_K_M", "-p 512 -n 128 -r 3 -fa 0,1", False),
    ("llama-3.1-8b-instruct", "Q4_0", "-p 512 -n 128 -r 3 -fa 0,1", False),
    ("llama-3.1-8b-instruct", "Q8_0", "-p 512 -n 128 -r 3 -fa 0,1", False),
    ("llama-3.1-8b-instruct", "F16", "-p 512 -n 128 -r 3 -fa 0,1", False),
    ("qwen3-30b-a3b", "Q4_K_M", "-p 512 -n 128 -r 3 -fa 1", False),
    ("gpt-oss-20b", "MXFP4_MOE", "-p 512 -n 128 -r 3 -fa 1", False),
    ("llama-3.1-8b-instruct", "Q4_K_M", "-p 512,4096 -n 128 -d 0,16384 -r 2 -fa 1", False),
    ("qwen3-30b-a3b", "Q4_K_M", "-p 512 -n 64 -r 2 -fa 1 -ncmoe 48", False),
    ("gpt-oss-20b", "MXFP4_MOE", "-p 512 -n 64 -r 2 -fa 1 -ncmoe 24", False),
    ("llama-3.3-70b-instruct", "Q4_K_M", "-p 512 -n 64 -r 2 -fa 1", False),
    ("llama-3.1-8b-instruct", "Q4_0", "-p 512 -n 32 -r 2 -ngl 0", True),
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_model(args: tuple[str, str, str, bool]) -> str:
    """Header-only GGUF of a catalog model in any GGUF quant; ``realistic``: see fill_realistic."""
    from tests import gguf_from_catalog

    model_id, quant, path, realistic = args
    if Path(path).exists():
        return path
    gguf_from_catalog.write_any_quant(path + ".part", model_id, quant)
    if realistic:
        fill_realistic(path + ".part")
    os.replace(path + ".part", path)
    return path


#: Byte offsets of the fp16 scale fields inside one block of each type (ggml-common.h block_* structs): random
#: bytes there could be Inf/NaN, so they get a fixed small scale.
SCALES = {"Q4_0": (18, (0,)), "Q8_0": (34, (0,)), "Q4_K": (144, (0, 2)), "Q5_K": (176, (0, 2)),
          "Q6_K": (210, (208,)), "Q5_0": (22, (0,)), "Q4_1": (20, (0, 2))}


def fill_realistic(path: str) -> None:
    """Norm weights 1, routers and token embeddings random: the rest of the model stays zero."""
    import gguf

    rng = np.random.default_rng(0)
    r = gguf.GGUFReader(path)
    with open(path, "r+b") as f:
        for t in r.tensors:
            kind = t.tensor_type.name
            if t.name.endswith("norm.weight") and kind == "F32":
                data = np.ones(int(t.n_elements), np.float32).tobytes()
            elif ".ffn_gate_inp." in t.name and kind == "F32":
                data = (rng.standard_normal(int(t.n_elements), np.float32) * 0.05).tobytes()
            elif t.name == "token_embd.weight":
                data = random_blocks(rng, kind, int(t.n_bytes))
            else:
                continue
            f.seek(int(t.data_offset))
            f.write(data)


def random_blocks(rng: np.random.Generator, kind: str, nbytes: int) -> bytes:
    if kind in ("F16", "F32", "BF16"):
        n = nbytes // {"F16": 2, "F32": 4, "BF16": 2}[kind]
        vals = rng.standard_normal(n, np.float32) * 0.05
        if kind == "BF16":
            return (vals.view(np.uint32) >> 16).astype(np.uint16).tobytes()
        return vals.astype(np.float16 if kind == "F16" else np.float32).tobytes()
    size, fields = SCALES.get(kind, (None, ()))
    if size is None:
        return bytes(nbytes)  # a type without an entry stays zero
    blocks = rng.integers(0, 256, (nbytes // size, size), np.uint8)
    scale = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    for off in fields:
        blocks[:, off:off + 2] = scale
    return blocks.tobytes()


def arch_of(model_id: str):  # noqa: ANN201 - advisor.catalog.model.Architecture
    from tests import gguf_from_catalog as gc

    return gc.load_catalog().get(model_id).arch


def step_probe(out: Path) -> None:
    run_to(out / "probe.txt", [
        ["nvidia-smi", "-L"], ["nvidia-smi", "-q"], ["nvidia-smi", "-q", "-x"],
        ["sh", "-c", "nvidia-smi --query-gpu=$(python3 -c 'from advisor.probe.nvidia import QUERY_FIELDS as q; "
                     "print(\",\".join(q))') --format=csv"],
        ["cat", "/proc/cpuinfo"], ["cat", "/proc/meminfo"], ["nproc"],
        [sys.executable, "-m", "advisor", "probe", "--json"],
        [sys.executable, "-m", "advisor", "bench", "--memory", "--json"],
    ])


def run_to(path: Path, cmds: list[list[str]]) -> None:
    with path.open("a") as f:
        for cmd in cmds:
            f.write(f"\n===== {' '.join(cmd)}\n")
            f.flush()
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
                f.write(p.stdout + (f"\n----- stderr (rc {p.returncode})\n" + p.stderr[-4000:] if p.returncode else ""))
            except Exception as e:  # noqa: BLE001 - a recording step must not stop the others
                f.write(f"failed: {e!r}\n")


def step_memprobe(binary: Path, models: Path, out: Path, deadline: float, only: set[str] = frozenset()) -> None:
    chosen = [(m, q) for m, q in MEM_MODELS if not only or m in only]
    jobs = [(m, q, str(models / f"{m}-{q}.gguf"), False) for m, q in chosen]
    with ProcessPoolExecutor(8) as pool:
        done = list(pool.map(safe_write, jobs))
    cases = []
    for (m, q), path in zip(chosen, done):
        if path is None:
            continue
        arch = arch_of(m)
        for label, flags in MEM_SETTINGS.items():
            if "{all}" in flags and not arch.n_expert:  # --n-cpu-moe: MoE models only
                continue
            flags = flags.format(half=arch.n_layer // 2, all=arch.n_layer)
            cases.append(f"{m}|{q}|{label} -m {path} {flags}")
    log(f"memprobe: {len(cases)} cases")
    with (out / "memprobe.jsonl").open("a") as f, (out / "memprobe.err").open("a") as err:
        p = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=f, stderr=err, text=True)
        try:
            p.communicate("\n".join(cases) + "\n", timeout=max(10, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            log("memprobe: out of time")


def safe_write(job: tuple[str, str, str, bool]) -> str | None:
    try:
        return write_model(job)
    except Exception as e:  # noqa: BLE001 - one model that cannot be written must not stop the others
        print(f"write {job[0]} {job[1]} failed: {e!r}", flush=True)
        return None


def step_bench(binary: Path, models: Path, out: Path, deadline: float) -> None:
    for model_id, quant, flags, cpu_only in BENCH:
        left = deadline - time.time()
        if left < 20:
            log("bench: out of time")
            return
        path = safe_write((model_id, quant, str(models / f"bench-{model_id}-{quant}.gguf"), True))
        if path is None:
            continue
        env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if cpu_only else {}))
        cmd = [str(binary), "-m", path, "-o", "jsonl", *flags.split()]
        cmd += ["-t", str(os.cpu_count())] if cpu_only else []
        log("bench: " + " ".join(cmd))
        with (out / "bench.jsonl").open("a") as f, (out / "bench.err").open("a") as err:
            try:
                subprocess.run(cmd, stdout=f, stderr=err, env=env, timeout=left - 10)
            except subprocess.TimeoutExpired:
                log("bench: timed out")
        os.unlink(path)  # the page cache of one model at a time


def device_parser(budget: float) -> argparse.ArgumentParser:
    """The options every device script takes: the binaries, the output folder, where models are written, and the
    seconds it may use."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", type=Path, default=Path("/tmp/advisor-models"))
    ap.add_argument("--budget", type=float, default=budget, help="seconds for all steps")
    return ap


def main() -> int:
    ap = device_parser(480.0)
    ap.add_argument("--steps", default="probe,memprobe,bench")
    ap.add_argument("--only", default="", help="memprobe: these catalog models only (comma-separated ids)")
    a = ap.parse_args()
    start = time.time()
    a.models.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)
    steps = a.steps.split(",")
    if "probe" in steps:
        log("probe")
        step_probe(a.out)
    if "memprobe" in steps:
        only = set(filter(None, a.only.split(",")))
        step_memprobe(a.bin / "llama-memprobe", a.models, a.out, start + a.budget * 0.45, only)
    if "bench" in steps:
        step_bench(a.bin / "llama-bench", a.models, a.out, start + a.budget)
    log(f"done in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
