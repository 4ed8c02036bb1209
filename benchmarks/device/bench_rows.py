"""Rows for tests/data/llama-bench/measured.csv from a llama-bench JSONL recorded by benchmarks/device/measure.py.

Usage: python benchmarks/device/bench_rows.py tests/data/llama-bench/h200-bench.jsonl > rows.csv

Split "measured": kept apart from the public calibration and evaluation sets (benchmarks/speed_accuracy.py reports
it as a third set; it sets only what the public rows cannot show: the CUDA MoE prefill constant, op offload's copy
rate and Hopper's matrix rates with a current build). One row per test at flash attention on (llama-bench's current default,
"auto", resolves to on for these GPUs); llama-bench's ``n_depth`` becomes a ``@dN`` suffix of the test, ``n_cpu_moe`` the ``n_cpu_moe`` column. The model
key is the models.csv shape the catalog model has (Llama 3.1 8B and 3.3 70B have Llama 3 8B's and 70B's).
"""

from __future__ import annotations

import csv
import json
import sys

MODEL_KEY = {"llama 8B": "llama3-8b", "llama 70B": "llama3-70b", "qwen3moe 30B.A3B": "qwen3-30b-a3b",
             "gpt-oss 20B": "gpt-oss-20b"}
QUANT = {"Q4_K - Medium": "Q4_K_M", "MXFP4 MoE": "MXFP4", "Q4_0": "Q4_0", "Q8_0": "Q8_0", "F16": "F16"}
COLUMNS = ["split", "source_url", "via", "model", "quant", "size_gib", "backend", "device", "n_gpus", "ngl",
           "threads", "test", "tps", "build", "date", "note", "n_cpu_moe", "host_device"]
SOURCE = "benchmarks/device/measure.py (this repository), tests/data/llama-bench/h200-bench.jsonl"
NOTE = ("llama-bench -r 2-3, weights zero except norms, routers and token embeddings (random); llama.cpp vendored by "
        "llama-cpp-python 0.3.36, CUDA 13 sm_90, CPU code AVX2 only")


def rows(path: str) -> list[dict[str, str]]:
    out, seen = [], set()
    for line in open(path):
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if r["flash_attn"] == 0:
            continue
        arch_size, _, quant = r["model_type"].partition(" ")[2].partition(" ")
        key = MODEL_KEY[r["model_type"].split(" ")[0] + " " + arch_size]
        cpu_only = r["n_gpu_layers"] == 0
        test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
        if r["n_depth"]:
            test += f"@d{r['n_depth']}"
        seen_as = (r["model_type"], test, r.get("n_cpu_moe"), r["n_gpu_layers"])
        if seen_as in seen:  # a test repeated by a later run (the depth sweep repeats pp512/tg128): the first
            continue
        seen.add(seen_as)
        out.append({
            "split": "measured", "source_url": SOURCE, "via": "", "model": key, "quant": QUANT[quant],
            "size_gib": f"{r['model_size'] / 2**30:.2f}", "backend": "CPU" if cpu_only else "CUDA",
            "device": "Xeon (H200 host, 16 vCPU)" if cpu_only else "H200", "n_gpus": "" if cpu_only else "1",
            "ngl": str(max(r["n_gpu_layers"], 0) if cpu_only else 99),
            "threads": str(r["n_threads"]) if cpu_only else "",
            "test": test, "tps": f"{r['avg_ts']:.1f}", "build": "", "date": r["test_time"][:7], "note": NOTE,
            "n_cpu_moe": str(r.get("n_cpu_moe") or ""),
            "host_device": "Xeon (H200 host, 16 vCPU)" if r.get("n_cpu_moe") else "",
        })
    return out


def main() -> int:
    w = csv.DictWriter(sys.stdout, COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows(sys.argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
