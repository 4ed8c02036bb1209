"""The best plan per recorded machine and task (the machines of tests/test_recommend_matrix.py, replayed through
the real probe): model, quant, engine, placement, context, predicted decode speed, and a datasheet check of that
speed (GPU bandwidth / bytes read per token). Run: ``python benchmarks/recommend_matrix.py [machine ...]``."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from advisor.catalog.load import load_catalog  # noqa: E402
from advisor.planner import Request, recommend  # noqa: E402
from advisor.probe import probe  # noqa: E402
from advisor.rules import load_rules  # noqa: E402
from tests.test_recommend_matrix import MACHINES  # noqa: E402

TASKS = {"chat": Request(task="chat"), "code": Request(task="code"), "code x8": Request(task="code", concurrency=8),
         "chat 64k": Request(task="chat", context=65536)}


def placement(p) -> str:
    if p.llama_cpp:
        s = p.llama_cpp
        out = f"ngl {s.n_gpu_layers}"
        if getattr(s, "n_cpu_moe", None):
            out += f" cpu-moe {s.n_cpu_moe}"
        if s.cache_type_k != "f16":
            out += f" kv {s.cache_type_k}"
        if getattr(s, "split_mode", None) and s.split_mode != "layer":
            out += f" sm {s.split_mode}"
        return out + f" ctx {s.ctx // s.parallel}x{s.parallel}"
    v = p.vllm
    out = f"tp {v.tensor_parallel_size}"
    if getattr(v, "pipeline_parallel_size", 1) > 1:
        out += f" pp {v.pipeline_parallel_size}"
    if getattr(v, "data_parallel_size", 1) > 1:
        out += f" dp {v.data_parallel_size}"
    if v.kv_cache_dtype != "auto":
        out += f" kv {v.kv_cache_dtype}"
    return out + f" len {v.max_model_len} seqs {v.max_num_seqs}"


def main(names: list[str]) -> None:
    catalog, rules = load_catalog(), load_rules()
    print("| machine | task | model | quant | engine | placement | t/s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or sorted(MACHINES):
            prof = probe(MACHINES[name](Path(tmp) / name / "root").system())
            for label, req in TASKS.items():
                try:
                    p = recommend(prof, catalog, rules, req).best()
                except Exception as exc:  # noqa: BLE001
                    print(f"| {name} | {label} | - | - | - | {type(exc).__name__}: {str(exc)[:80]} | - |")
                    continue
                print(f"| {name} | {label} | {p.model.id} | {p.model.quant} | {p.backend} | {placement(p)} | "
                      f"{p.predicted.decode_tokens_per_s} |")


if __name__ == "__main__":
    main(sys.argv[1:])
