"""vLLM settings and memory for one checkpoint on one machine (vllm/v1/worker/gpu_worker.py
determine_available_memory, vllm/v1/core/kv_cache_utils.py).

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
from advisor.planner.llamacpp import Contexts, rungs
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


def _stage(model: Model, pp: int):
    """The architecture one pipeline stage holds: the first stage's layers (the largest share,
    vllm/distributed/utils.py get_pp_indices gives the remainder to the last)."""
    a = model.arch
    return a if pp <= 1 else dataclasses.replace(a, n_layer=-(-a.n_layer // pp))


def kv_bytes_per_token(model: Model, tp: int, dtype_bytes: int = 2, pp: int = 1) -> list[int]:
    return M.kv_bytes_per_token(_stage(model, pp), tp, dtype_bytes)


def kv_layout(model: Model, tp: int, block: int, dtype_bytes: int = 2, pp: int = 1) -> M.KvLayout:
    return M.kv_layout(_stage(model, pp), tp, block, dtype_bytes)


def kv_capacity_tokens(model: Model, available: int, tp: int, block: int, dtype_bytes: int = 2, pp: int = 1) -> int:
    return M.kv_capacity_tokens(_stage(model, pp), available, tp, block, dtype_bytes)


def kv_need(model: Model, tp: int, max_model_len: int, mnbt: int, block: int, dtype_bytes: int = 2,
            pp: int = 1) -> int:
    """Bytes one sequence of max_model_len tokens takes on one rank (check_enough_kv_cache_memory)."""
    return M.kv_need(_stage(model, pp), tp, max_model_len, mnbt, block, dtype_bytes)


#: Bytes per KV element of each --kv-cache-dtype the planner uses (vllm/utils STR_DTYPE_TO_TORCH_DTYPE: fp8 is
#: one byte, "auto" the model's 16-bit dtype).
KV_DTYPE_BYTES = {"auto": 2, "fp8": 1}


@dataclass(frozen=True)
class Layout:
    """How the GPUs of a node run one model: tensor parallel ranks, pipeline stages, data-parallel replicas."""

    tp: int = 1
    pp: int = 1
    dp: int = 1

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp


def _tp_ok(model: Model, tp: int) -> bool:
    """vLLM shards attention heads over TP ranks: the query heads must divide, and the KV heads divide or are
    replicated (vllm/model_executor/layers/linear.py QKVParallelLinear)."""
    a = model.arch
    kv = a.n_head_kv or a.n_head
    return a.n_head % tp == 0 and (kv % tp == 0 or tp % kv == 0)


def layouts(model: Model, n: int, concurrency: int) -> list[Layout]:
    """Ways to use the node's ``n`` GPUs, preferred first: replicas of a model that fits one GPU when several users
    share it (no all-reduce per layer, each replica serves its own batch), then tensor parallel over every GPU, then
    the largest tensor-parallel group that divides the heads with pipeline stages for the rest, then fewer GPUs."""
    out: list[Layout] = []
    if n > 1 and concurrency > 1:
        out.append(Layout(dp=n))
    for tp in (8, 4, 2, 1):
        if tp <= n and n % tp == 0 and _tp_ok(model, tp) and n // tp <= model.arch.n_layer:
            out.append(Layout(tp=tp, pp=n // tp))
    for tp in (4, 2, 1):  # fewer GPUs than the node has
        if tp < n and _tp_ok(model, tp) and Layout(tp=tp) not in out:
            out.append(Layout(tp=tp))
    return list(dict.fromkeys(out))


def _layout_reason(model: Model, lay: Layout, n: int) -> str:
    if lay.dp > 1:
        return (f"data_parallel_size {lay.dp}: the model fits one GPU, so each of the {lay.dp} GPUs holds a replica "
                "and serves its own requests (vLLM docs 'Data Parallel Deployment': dense and MoE models)")
    parts = []
    if lay.tp > 1:
        parts.append(f"tensor_parallel_size {lay.tp}: {lay.tp} divides the {model.arch.n_head} attention heads; "
                     "each GPU reads 1/{0} of the weights per token and holds 1/{0} of the KV cache".format(lay.tp))
    if lay.pp > 1:
        parts.append(f"pipeline_parallel_size {lay.pp}: tensor parallel over {n} GPUs does not divide the heads, "
                     f"so the layers are split in {lay.pp} stages")
    if lay.gpus < n:
        parts.append(f"{lay.gpus} of the {n} GPUs: no layout over all of them fits")
    return "; ".join(parts) or "one GPU"


def plan_vllm(model: Model, variant: Variant, weights_total: int, m: Machine, cx: Contexts, concurrency: int,
              quantization: str | None) -> VllmChoice | VllmMiss:
    r = m.rules
    block, mnbt, seqs_default = r["block_size"], r["max_num_batched_tokens"], r["max_num_seqs"]
    n = len(m.gpus)
    plan = rungs(cx, list(r["vllm_kv_cache_dtypes"]))
    best_miss: VllmMiss | None = None
    found: list[tuple[tuple[int, int, int, int], VllmChoice]] = []
    for order, lay in enumerate(layouts(model, n, concurrency)):
        got = _fit_layout(model, m, lay, weights_total, plan, concurrency)
        if isinstance(got, VllmMiss):
            if best_miss is None or got.shortfall_bytes < best_miss.shortfall_bytes:
                best_miss = got
            continue
        rung, eager, short, util, kv_budget, kv_tokens, act, outside = got
        length, kv_dtype = plan[rung]
        typical = r["typical_request_tokens"]
        seqs = max(1, min(seqs_default, max(concurrency // lay.dp, kv_tokens // typical)))
        settings = VllmSettings(
            max_model_len=length, max_num_seqs=seqs, gpu_memory_utilization=util, kv_cache_dtype=kv_dtype,
            tensor_parallel_size=lay.tp, pipeline_parallel_size=lay.pp, data_parallel_size=lay.dp,
            quantization=quantization, dtype=r["vllm_dtype"], enforce_eager=eager, max_num_batched_tokens=mnbt,
        )
        w = -(-weights_total // (lay.tp * lay.pp))
        memory = [DeviceMemory(d.name, weights_bytes=w, kv_cache_bytes=kv_budget, other_bytes=act + outside,
                               total_bytes=w + kv_budget + act + outside, capacity_bytes=d.capacity_bytes)
                  for d in m.gpus[:lay.gpus]]
        need = kv_need(model, lay.tp, length, mnbt, block, KV_DTYPE_BYTES[kv_dtype], lay.pp)
        why = [
            f"gpu_memory_utilization {util:.2f}: the most that leaves {outside // MIB} MiB outside vLLM for the "
            f"CUDA context{'' if eager else ', the CUDA graphs'} and vLLM's redundancy buffer "
            f"[rule {r.rules['gpu_memory_utilization'].id}]",
            f"KV cache {kv_budget / 2**30:.2f} GiB per GPU = {kv_tokens} tokens; max_model_len {length} passes "
            f"vLLM's start-up check (one full sequence needs {need / 2**30:.2f} GiB)",
            f"max_num_seqs {seqs}: the KV cache holds {kv_tokens // typical} requests of a typical "
            f"{typical} tokens at once ({r.why('typical_request_tokens')})"
            + (f"; raised to the {concurrency // lay.dp} requested per replica" if concurrency // lay.dp >
               kv_tokens // typical else "")
            + (f"; capped at vLLM's default {seqs_default}" if kv_tokens // typical > seqs_default else ""),
            _layout_reason(model, lay, n),
        ]
        if length < cx.want:
            why.append(f"max_model_len lowered from {cx.want} to {length} so that the KV cache holds it")
        if kv_dtype != "auto":
            why.append(f"kv_cache_dtype {kv_dtype}: the 16-bit cache does not hold the {length} tokens this task "
                       f"needs; {r.why('vllm_kv_cache_dtypes')}")
        if eager:
            why.append("enforce_eager: the CUDA graphs do not fit next to a KV cache that holds max_model_len")
        if settings.dtype != "auto":
            why.append(f"dtype {settings.dtype}: {r.rules['vllm_dtype'].reason} [rule {r.rules['vllm_dtype'].id}]")
        found.append(((rung, int(eager), int(short), order), VllmChoice(settings, memory, kv_tokens, w, why)))
    if found:
        return min(found, key=lambda f: f[0])[1]
    if not layouts(model, n, concurrency):
        return VllmMiss("vllm_tp", {"heads": model.arch.n_head, "gpus": n})
    return best_miss or VllmMiss("vllm_kv", {"tp": 1, "len": cx.floor, "need": 0, "avail": 0, "util": 0})


def _fit_layout(model: Model, m: Machine, lay: Layout, weights_total: int, plan: list[tuple[int, str]],
                concurrency: int) -> tuple[int, bool, bool, float, int, int, int, int] | VllmMiss:
    """The first rung (max_model_len, KV dtype) whose one full sequence fits the KV cache of every rank of
    ``lay``: (rung index, eager, too few typical requests fit, util, KV bytes, KV tokens, activation, outside)."""
    r = m.rules
    block, mnbt, seqs_default = r["block_size"], r["max_num_batched_tokens"], r["max_num_seqs"]
    devs = m.gpus[:lay.gpus]
    total = min(d.total_bytes for d in devs)
    free = min(d.capacity_bytes for d in devs)  # free memory, less the display reserve
    ranks = lay.tp * lay.pp
    w = -(-weights_total // ranks)
    # the newer sampler path (PyTorch-native top-k/top-p, 0.11+) is the larger: plan for it
    act = activation_peak_bytes(model, mnbt, seqs_default, lay.tp, r["activation_floats_per_token"], rules=r) \
        + non_torch_bytes(ranks, r["non_torch_mib"], rules=r)
    miss: VllmMiss | None = None
    for eager in (False, True):
        outside = (r["cuda_context_mib"] + (0 if eager else r["cuda_graph_mib"]) + r["redundancy_mib"]) * MIB
        # vLLM claims util x total at start-up from what is free; the context, graphs and redundancy
        # buffer must fit beside it
        util = min(r["max_gpu_memory_utilization"], (total - outside) / total, (free - outside) / total)
        util = int(util * 100) / 100
        kv_budget = available_kv_bytes(total, util, w, act, 0)
        for i, (length, kv_dtype) in enumerate(plan):
            nbytes = KV_DTYPE_BYTES[kv_dtype]
            need = kv_need(model, lay.tp, length, mnbt, block, nbytes, lay.pp)
            if need <= kv_budget:
                tokens = kv_capacity_tokens(model, kv_budget, lay.tp, block, nbytes, lay.pp)
                short = concurrency > 1 and tokens * lay.dp < concurrency * r["typical_request_tokens"]
                return i, eager, short, util, kv_budget, tokens, act, outside
            if miss is None or need - max(0, kv_budget) < miss.shortfall_bytes:
                miss = VllmMiss("vllm_kv", {"tp": lay.tp, "len": length, "need": need, "avail": max(0, kv_budget),
                                            "util": util}, need - max(0, kv_budget))
    return miss or VllmMiss("vllm_kv", {"tp": lay.tp, "len": 0, "need": 0, "avail": 0, "util": 0})
