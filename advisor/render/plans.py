"""The recommendation as a table that reads at 80 columns: one line per plan with what a user compares (model,
quant, engine, speed, score) and an indented line with its settings and memory. Model ids are never cut: they are
what the user types next. ``--json`` carries everything; this is for people."""

from __future__ import annotations

from advisor.plan import LLAMA_CPP, Plan
from advisor.render.text import printable

HEADER = ("#", "model", "quant", "engine", "t/s", "score")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}G"


def settings_line(plan: Plan) -> str:
    """The settings and memory that make the plan, short: context per slot, slots, layers, KV type; memory per
    device."""
    if plan.backend == LLAMA_CPP and plan.llama_cpp is not None:
        s = plan.llama_cpp
        parts = [f"ctx {s.ctx // max(1, s.parallel)} x{s.parallel}", f"ngl {s.n_gpu_layers}"]
        if s.n_cpu_moe:
            parts.append(f"cpu-moe {s.n_cpu_moe}")
        if s.cache_type_k != "f16":
            parts.append(f"kv {s.cache_type_k}")
    elif plan.vllm is not None:
        v = plan.vllm
        parts = [f"len {v.max_model_len}", f"seqs {v.max_num_seqs}", f"tp {v.tensor_parallel_size}",
                 f"util {v.gpu_memory_utilization:g}"]
        if v.kv_cache_dtype != "auto":
            parts.append(f"kv {v.kv_cache_dtype}")
    else:
        parts = []
    ram = sum(d.total_bytes for d in plan.memory if d.device in ("cpu", "host"))
    mem = [f"{d.device} {_gib(d.total_bytes)}" for d in plan.memory if d.device.startswith("gpu")]
    mem += [f"ram {_gib(ram)}"] if ram else []
    return ", ".join(parts) + ("; " + " ".join(mem) if mem else "")


def table(plans: list[Plan]) -> str:
    rows = [HEADER]
    for i, p in enumerate(plans, 1):
        speed = p.predicted.decode_tokens_per_s
        rows.append((str(i), printable(p.model.id, 1000), p.model.quant or "-", p.engine_ref.name,
                     f"{speed:.0f}" if speed is not None else "?", f"{p.score:g}"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(HEADER))]
    right = {0, 4, 5}  # numbers line up on the right

    def line(row: tuple[str, ...]) -> str:
        cells = [cell.rjust(w) if c in right else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    out = ["Recommended (speeds are estimates)", line(rows[0])]
    indent = " " * (widths[0] + 2)
    for plan, row in zip(plans, rows[1:]):
        out.append(line(row))
        out.append(indent + settings_line(plan))
    return "\n".join(out) + "\n"
