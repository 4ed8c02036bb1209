"""vLLM settings and memory for one checkpoint on one machine (vllm/v1/worker/gpu_worker.py determine_available_memory, vllm/v1/core/kv_cache_utils.py).

Per GPU (rank): ``gpu_memory_utilization x total`` is vLLM's; from it come the weights (1/TP each), the activation
peak of the profile run (grows with max_num_batched_tokens) and non-torch allocations; what is left is the KV cache.
The CUDA context and the CUDA graphs, captured after the KV cache, must fit in what vLLM leaves (``1 - util``).
At start-up vLLM refuses a max_model_len whose one full sequence does not fit the KV cache
(``check_enough_kv_cache_memory``); the plan is built so that it does.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from dataclasses import dataclass, field
from typing import Any

from advisor.catalog.model import Catalog, Model, Variant, VllmSupport
from advisor.planner.machine import MIB, Machine
from advisor.plan import DeviceMemory, VllmSettings
from advisor.vllm import memory as M

CHECKPOINT_QUANT = {"safetensors": None, "awq": "awq", "gptq": "gptq", "fp8": "fp8", "mxfp4": "mxfp4"}
#: A faster kernel vLLM picks for the same checkpoint where the GPU allows it (awq_marlin.py, gptq_marlin.py).
MARLIN = {"awq": "awq_marlin", "gptq": "gptq_marlin"}


@dataclass(frozen=True)
class VllmChoice:
    settings: VllmSettings
    memory: list[DeviceMemory]
    kv_tokens: int  # KV cache capacity per rank, tokens
    weights_bytes: int  # per rank
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VllmMiss:
    template: str  # why-not template id
    params: dict[str, object]
    shortfall_bytes: int = 0


def quantization_for(catalog: Catalog, variant: Variant, m: Machine) -> tuple[str | None, str] | VllmMiss:
    """The --quantization value for ``variant`` on these GPUs, from catalog/quants.toml [[vllm]]."""
    base = CHECKPOINT_QUANT.get(variant.format, "?")
    if base is None:
        return None, "unquantized checkpoint: no --quantization"
    rows: dict[str, VllmSupport] = {r.format: r for r in catalog.quants.vllm}
    cc = m.subject.compute_capability
    for name in (MARLIN.get(base), base):
        row = rows.get(name) if name else None
        if row is None:
            continue
        if m.vendor == "amd":
            if row.amd:
                return name, f"{name}: supported on AMD ROCm ({row.source})"
            continue
        if row.min_capability is None or (cc is not None and cc * 10 >= row.min_capability - 1e-6):
            return name, f"{name}: needs compute capability {row.min_capability / 10 if row.min_capability else '-'}" \
                         f", this GPU has {cc} ({row.notes or row.source})"
    need = rows[base].min_capability if base in rows else None
    return VllmMiss("vllm_format", {"format": variant.format, "need": need / 10 if need else "?",
                                    "have": cc if m.vendor != "amd" else "AMD ROCm"})


# The memory maths lives in advisor/vllm/memory.py (shared with ``advisor estimate --engine vllm``); these wrappers
# take a catalog Model and the resolved rules, as the planner has them.


def _coef(factor: float, rules: Any = None) -> M.Coefficients:
    """The memory coefficients of rules/vllm.toml (``rules``: resolved rules; None: the shipped rules)."""
    c = M.coefficients(rules if rules is not None else _shipped_rules())
    return dataclasses.replace(c, activation_factor=factor)


@cache
def _shipped_rules() -> dict[str, Any]:
    from advisor.rules import load_rules

    out: dict[str, Any] = {}
    for rule in load_rules().rules:
        if rule.id.startswith("vllm-") and not rule.when:
            for k, v in rule.set.items():
                out.setdefault(k, v)
    return out


def dummy_run_bytes(model: Model, mnbt: int, tp: int, factor: float) -> int:
    return M.dummy_run_bytes(model.arch, mnbt, tp, factor)


def activation_peak_bytes(model: Model, mnbt: int, max_num_seqs: int, tp: int, factor: float,
                          sampler: str = "native", rules: Any = None) -> int:
    return M.activation_peak_bytes(model.arch, mnbt, max_num_seqs, tp, _coef(factor, rules), sampler)


def non_torch_bytes(tp: int, base_mib: int, rules: Any = None) -> int:
    return M.non_torch_bytes(tp, dataclasses.replace(_coef(0.0, rules), non_torch_mib=base_mib))


available_kv_bytes = M.available_kv_bytes
KvLayout = M.KvLayout


def kv_bytes_per_token(model: Model, tp: int, dtype_bytes: int = 2) -> list[int]:
    return M.kv_bytes_per_token(model.arch, tp, dtype_bytes)


def kv_layout(model: Model, tp: int, block: int, dtype_bytes: int = 2) -> M.KvLayout:
    return M.kv_layout(model.arch, tp, block, dtype_bytes)


def kv_capacity_tokens(model: Model, available: int, tp: int, block: int, dtype_bytes: int = 2) -> int:
    return M.kv_capacity_tokens(model.arch, available, tp, block, dtype_bytes)


def kv_need(model: Model, tp: int, max_model_len: int, mnbt: int, block: int) -> int:
    return M.kv_need(model.arch, tp, max_model_len, mnbt, block)


def plan_vllm(model: Model, variant: Variant, weights_total: int, m: Machine, want_len: int, floor: int,
              fixed_len: bool, concurrency: int, quantization: str | None) -> VllmChoice | VllmMiss:
    r = m.rules
    block, mnbt, seqs_default = r["block_size"], r["max_num_batched_tokens"], r["max_num_seqs"]
    n = len(m.gpus)
    tps = [t for t in (1, 2, 4, 8) if t <= n and model.arch.n_head % t == 0]
    best_miss: VllmMiss | None = None
    for tp in tps:
        devs = m.gpus[:tp]
        total = min(d.total_bytes for d in devs)
        free = min(d.capacity_bytes for d in devs)  # free memory, less the display reserve
        w = -(-weights_total // tp)
        # the newer sampler path (PyTorch-native top-k/top-p, 0.11+) is the larger: plan for it
        act = activation_peak_bytes(model, mnbt, seqs_default, tp, r["activation_floats_per_token"], rules=r) \
            + non_torch_bytes(tp, r["non_torch_mib"], rules=r)
        for eager in (False, True):
            outside = (r["cuda_context_mib"] + (0 if eager else r["cuda_graph_mib"]) + r["redundancy_mib"]) * MIB
            # vLLM claims util x total at start-up from what is free; the context, graphs and redundancy
            # buffer must fit beside it
            util = min(r["max_gpu_memory_utilization"], (total - outside) / total, (free - outside) / total)
            util = int(util * 100) / 100
            kv_budget = available_kv_bytes(total, util, w, act, 0)
            need_floor = kv_need(model, tp, min(floor, want_len), mnbt, block)
            if kv_budget < need_floor:
                miss = VllmMiss("vllm_kv", {"tp": tp, "len": min(floor, want_len), "need": need_floor,
                                            "avail": max(0, kv_budget), "util": util},
                                need_floor - max(0, kv_budget))
                if best_miss is None or miss.shortfall_bytes < best_miss.shortfall_bytes:
                    best_miss = miss
                continue
            kv_tokens = kv_capacity_tokens(model, kv_budget, tp, block)
            length = want_len
            if not fixed_len:
                while length > floor and kv_need(model, tp, length, mnbt, block) > kv_budget:
                    length = max(floor, length // 2)
                # several users each with a full-length sequence, when the context was not given
                while length > floor and kv_tokens // length < concurrency:
                    length = max(floor, length // 2)
            if kv_need(model, tp, length, mnbt, block) > kv_budget:
                need = kv_need(model, tp, length, mnbt, block)
                miss = VllmMiss("vllm_kv", {"tp": tp, "len": length, "need": need, "avail": kv_budget,
                                            "util": util}, need - kv_budget)
                if best_miss is None or miss.shortfall_bytes < best_miss.shortfall_bytes:
                    best_miss = miss
                continue
            full_seqs = max(1, kv_tokens // length)
            seqs = max(1, min(seqs_default, max(concurrency, full_seqs)))
            settings = VllmSettings(
                max_model_len=length, max_num_seqs=seqs, gpu_memory_utilization=util, kv_cache_dtype="auto",
                tensor_parallel_size=tp, quantization=quantization, dtype=r["vllm_dtype"], enforce_eager=eager,
                max_num_batched_tokens=mnbt,
            )
            kv_used = kv_budget
            memory = [DeviceMemory(d.name, weights_bytes=w, kv_cache_bytes=kv_used,
                                   other_bytes=act + outside, total_bytes=w + kv_used + act + outside,
                                   capacity_bytes=d.capacity_bytes) for d in devs]
            why = [
                f"gpu_memory_utilization {util:.2f}: the most that leaves {outside // MIB} MiB outside vLLM for the "
                f"CUDA context{'' if eager else ', the CUDA graphs'} and vLLM's redundancy buffer "
                f"[rule {r.rules['gpu_memory_utilization'].id}]",
                f"KV cache {kv_budget / 2**30:.2f} GiB per GPU = {kv_tokens} tokens; max_model_len {length} passes "
                f"vLLM's start-up check (one full sequence needs {kv_need(model, tp, length, mnbt, block) / 2**30:.2f}"
                " GiB)",
                f"max_num_seqs {seqs}: {full_seqs} full-length sequence(s) fit the KV cache at once"
                + (f"; raised to the {concurrency} requested" if concurrency > full_seqs else "")
                + (f"; capped at vLLM's default {seqs_default}" if full_seqs > seqs_default else ""),
            ]
            if length < want_len:
                why.append(f"max_model_len lowered from {want_len} to {length} so that the KV cache holds it"
                           + (f" {concurrency} times" if concurrency > 1 else ""))
            if tp > 1:
                why.append(f"tensor_parallel_size {tp}: the weights do not fit one GPU; {tp} divides the "
                           f"{model.arch.n_head} attention heads")
            if eager:
                why.append("enforce_eager: the CUDA graphs do not fit next to a KV cache that holds max_model_len")
            if settings.dtype != "auto":
                why.append(f"dtype {settings.dtype}: {r.rules['vllm_dtype'].reason} [rule {r.rules['vllm_dtype'].id}]")
            return VllmChoice(settings, memory, kv_tokens, w, why)
    if not tps:
        return VllmMiss("vllm_tp", {"heads": model.arch.n_head, "gpus": n})
    return best_miss or VllmMiss("vllm_kv", {"tp": 1, "len": floor, "need": 0, "avail": 0, "util": 0})
