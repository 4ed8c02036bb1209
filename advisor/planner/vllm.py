"""vLLM settings and memory for one checkpoint on one machine (vllm/v1/worker/gpu_worker.py determine_available_memory, vllm/v1/core/kv_cache_utils.py).

Per GPU (rank): ``gpu_memory_utilization x total`` is vLLM's; from it come the weights (1/TP each), the activation
peak of the profile run (grows with max_num_batched_tokens) and non-torch allocations; what is left is the KV cache.
The CUDA context and the CUDA graphs, captured after the KV cache, must fit in what vLLM leaves (``1 - util``).
At start-up vLLM refuses a max_model_len whose one full sequence does not fit the KV cache
(``check_enough_kv_cache_memory``); the plan is built so that it does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from advisor.catalog.model import Catalog, Model, Variant, VllmSupport
from advisor.planner.machine import MIB, Machine
from advisor.plan import DeviceMemory, VllmSettings

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


#: The profile run's sampler warm-up (gpu_model_runner.py profile_run -> _dummy_sampler_run) holds, per logit of
#: ``min(max_num_seqs, max_num_batched_tokens) x vocab``, this many bytes at its peak. Two code paths
#: (vllm/v1/sample/ops/topk_topp_sampler.py TopKTopPSampler): the PyTorch-native top-k/top-p (float32 logits, a full
#: sort with int64 indices, softmax, cumsum, masks) and FlashInfer's fused kernels, the default where installed
#: in V1 up to about 0.10.1 and opt-in (VLLM_USE_FLASHINFER_SAMPLER=1) in 0.11. Calibrated on real start-ups
#: (tests/data/gpu-logs): native 38.5 from v12 (gpt-oss-20b, H100, 0.11.0: activation peak 7.38 GiB reported,
#: 1024 x 201088 logits), held out on v14 (Llama-3.3-70B TP2: predicts 4.71 GiB, log 4.84); flashinfer 11.0 from v06
#: (Qwen2-7B, A100, 0.10.1.1: 0.53 GiB of activation + non-torch, 256 x 152064 logits), held out on v09 and v11.
SAMPLER_BYTES_PER_LOGIT = {"native": 38.5, "flashinfer": 11.0}
#: Non-torch memory that NCCL / custom all-reduce add per rank when tensor_parallel_size > 1, on top of the
#: ``non_torch_mib`` of one GPU (vllm/utils/mem_utils.py memory_profiling: non_torch_increase since the snapshot taken
#: before init_worker_distributed_environment). Calibrated on v14 (2x H100 TP2, 0.11.0: 0.55 GiB against 0.14 GiB
#: for the same model at TP1 and 0.13 GiB for v12), i.e. 0.42 GiB.
NON_TORCH_TP_BYTES = 430 * MIB


def dummy_run_bytes(model: Model, mnbt: int, tp: int, factor: float) -> int:
    """The profile forward pass (``_dummy_run(max_num_batched_tokens)``): per batched token about
    (2 n_ff + 4 n_embd + q/k/v widths) values in 16-bit, times ``factor`` for temporaries kept alive; the
    tensor-parallel parts are split across ranks (an estimate: the logs give only the overall peak)."""
    a = model.arch
    ff = a.n_ff_expert * a.n_expert_used if a.n_expert else a.n_ff
    widths = 2 * ff + 4 * a.n_embd + (a.n_head + 2 * a.n_head_kv) * a.head_dim_k
    return int(mnbt * widths * 2 * factor / tp)


def sampler_bytes(model: Model, mnbt: int, max_num_seqs: int, sampler: str = "native") -> int:
    """Peak of the sampler warm-up in the profile run: ``min(max_num_seqs, mnbt)`` rows of full-vocabulary logits
    (the logits are gathered on every rank, so TP does not divide this)."""
    return int(min(mnbt, max_num_seqs) * model.arch.vocab_size * SAMPLER_BYTES_PER_LOGIT[sampler])


def activation_peak_bytes(model: Model, mnbt: int, max_num_seqs: int, tp: int, factor: float,
                          sampler: str = "native") -> int:
    """vLLM's "PyTorch activation peak" / torch_peak_increase of the profile run: the forward pass and the sampler
    warm-up run one after the other, so the peak is the larger of the two."""
    return max(dummy_run_bytes(model, mnbt, tp, factor), sampler_bytes(model, mnbt, max_num_seqs, sampler))


def non_torch_bytes(tp: int, base_mib: int) -> int:
    """non_torch_increase: cuBLAS/attention workspaces outside torch's allocator, plus NCCL buffers when TP > 1."""
    return base_mib * MIB + (NON_TORCH_TP_BYTES if tp > 1 else 0)


def available_kv_bytes(total: int, util: float, weights: int, activation: int, non_torch: int) -> int:
    """vllm/v1/worker/gpu_worker.py determine_available_memory (V1, 0.10+): requested_memory = total x util, less
    non_kv_cache_memory = weights + torch peak increase + non-torch increase (mem_utils.py memory_profiling).
    Logged as "Available KV cache memory: X GiB". May be negative (then vLLM refuses to start)."""
    return int(total * util) - weights - activation - non_torch


def kv_bytes_per_token(model: Model, tp: int, dtype_bytes: int = 2) -> list[int]:
    """Per layer, one token's K and V on one rank (kv_cache_interface.py: num_kv_heads = max(1, kv // tp);
    MLA keeps one latent of kv_lora_rank + rope dims per token)."""
    a = model.arch
    if a.kv_lora_rank:
        return [(a.kv_lora_rank + a.qk_rope_head_dim) * dtype_bytes] * a.n_layer
    heads = max(1, a.n_head_kv // tp)
    return [heads * (a.head_dim_k + a.head_dim_v) * dtype_bytes] * a.n_layer


def _swa(model: Model, il: int) -> bool:
    a = model.arch
    p = a.sliding_window_pattern
    return a.sliding_window > 0 and p > 0 and (p == 1 or il % p < p - 1)


@dataclass(frozen=True)
class KvLayout:
    """How vLLM lays the KV cache out (vllm/v1/core/kv_cache_utils.py get_kv_cache_config)."""

    page_bytes: int  # one block of one layer (FullAttentionSpec / SlidingWindowSpec / MLAAttentionSpec page_size_bytes)
    group_size: int  # layers sharing one KV tensor pool (num_layers when every layer has the same spec)
    n_groups: int  # KV cache groups (1 for a uniform model)
    block_size: int

    def num_blocks(self, available: int) -> int:
        """get_num_blocks: available // page_size // num_layers (per group for hybrid models)."""
        return max(0, available) // self.page_bytes // self.group_size

    def tokens(self, available: int) -> int:
        """The logged "GPU KV cache size: N tokens": num_blocks // len(kv_cache_groups) x block_size."""
        return self.num_blocks(available) // self.n_groups * self.block_size


def kv_layout(model: Model, tp: int, block: int, dtype_bytes: int = 2) -> KvLayout:
    """Uniform models: one group of every layer. Sliding-window + full attention with equal page sizes (gpt-oss,
    Gemma): _get_kv_cache_config_uniform_page_size groups each attention type's layers into groups of
    ``group_size`` = the fewest layers of a type (or the most, when that is under 1.25x the fewest), and one tensor
    per group slot holds one layer of each group."""
    per_tok = kv_bytes_per_token(model, tp, dtype_bytes)
    page = per_tok[0] * block
    kinds: dict[bool, int] = {}
    for il in range(model.arch.n_layer):
        kinds[_swa(model, il)] = kinds.get(_swa(model, il), 0) + 1
    if len(kinds) == 1:
        return KvLayout(page, model.arch.n_layer, 1, block)
    lo, hi = min(kinds.values()), max(kinds.values())
    size = hi if hi < lo * 1.25 else lo
    return KvLayout(page, size, sum(-(-n // size) for n in kinds.values()), block)


def kv_capacity_tokens(model: Model, available: int, tp: int, block: int, dtype_bytes: int = 2) -> int:
    """KV tokens vLLM reports for ``available`` bytes per rank (all ranks get the same: unify_kv_cache_configs)."""
    return kv_layout(model, tp, block, dtype_bytes).tokens(available)


def kv_need(model: Model, tp: int, max_model_len: int, mnbt: int, block: int) -> int:
    """Bytes one sequence of max_model_len tokens takes (FullAttentionSpec / SlidingWindowSpec
    max_memory_usage_bytes)."""
    total = 0
    for il, per_tok in enumerate(kv_bytes_per_token(model, tp)):
        if _swa(model, il):
            blocks = -(-min(model.arch.sliding_window - 1 + mnbt, max_model_len) // block) + 1
        else:
            blocks = -(-max_model_len // block)
        total += blocks * block * per_tok
    return total


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
        act = activation_peak_bytes(model, mnbt, seqs_default, tp, r["activation_floats_per_token"]) \
            + non_torch_bytes(tp, r["non_torch_mib"])
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
