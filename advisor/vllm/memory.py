"""vLLM's start-up memory per rank, as vLLM computes it (V1 engine, 0.8+). Pure functions, no I/O.

vllm/v1/worker/gpu_worker.py ``determine_available_memory``: after loading the weights, a profile run
(gpu_model_runner.py ``profile_run``: ``_dummy_run(max_num_batched_tokens)`` then ``_dummy_sampler_run``) measures
the torch peak increase (the "activation peak") and the non-torch increase (cuBLAS/attention workspaces, NCCL),
vllm/utils/mem_utils.py ``memory_profiling``; then

    available KV = gpu_memory_utilization x total - (weights + activation peak + non-torch)

logged as "Available KV cache memory: X GiB". The KV cache is cut into blocks (vllm/v1/core/kv_cache_utils.py
``get_kv_cache_config``) and logged as "GPU KV cache size: N tokens" and "Maximum concurrency for L tokens per
request: C x". CUDA graphs are captured after the KV cache is allocated: they do not reduce it (they must fit in
what ``1 - gpu_memory_utilization`` leaves).

The coefficients vLLM's code does not state (the activation factor, the sampler's bytes per logit, non-torch memory)
are data in rules/vllm.toml (``vllm-memory``, ``vllm-activation``), read into ``Coefficients``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

MIB = 2**20

#: Sampler path of the profile run's warm-up per vLLM version family (vllm/v1/sample/ops/topk_topp_sampler.py
#: TopKTopPSampler): FlashInfer's fused top-k/top-p was the default where installed up to 0.10.x, 0.11 made the
#: PyTorch-native path the default (FlashInfer opt-in with VLLM_USE_FLASHINFER_SAMPLER=1).
NATIVE_SAMPLER_SINCE = (0, 11)
#: V1 is the default engine from 0.8.0 (vllm/envs.py VLLM_USE_V1); before it the V0 worker profiles differently.
V1_SINCE = (0, 8)
LATEST = (0, 11)


class Arch(Protocol):
    """The config facts the memory model reads (advisor.catalog.model.Architecture has them all)."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ff: int
    vocab_size: int
    sliding_window: int
    sliding_window_pattern: int
    n_expert: int
    n_expert_used: int
    n_ff_expert: int
    kv_lora_rank: int
    qk_rope_head_dim: int


@dataclass(frozen=True)
class Coefficients:
    """rules/vllm.toml's memory constants (``coefficients(resolved_rules)`` reads them)."""

    activation_factor: float  # activation_floats_per_token
    non_torch_mib: int  # one GPU's non-torch increase
    non_torch_tp_mib: int  # added per rank when tensor_parallel_size > 1 (NCCL, custom all-reduce)
    sampler_bytes_per_logit: dict[str, float]  # "native", "flashinfer"


def coefficients(rules: Any) -> Coefficients:
    """From resolved rules (advisor.rules.Resolved or a mapping with the same keys)."""
    return Coefficients(float(rules["activation_floats_per_token"]), int(rules["non_torch_mib"]),
                        int(rules["non_torch_tp_mib"]), dict(rules["sampler_bytes_per_logit"]))


def sampler_for(version: tuple[int, int]) -> str:
    return "native" if version >= NATIVE_SAMPLER_SINCE else "flashinfer"


def dummy_run_bytes(a: Arch, mnbt: int, tp: int, factor: float) -> int:
    """The profile forward pass (``_dummy_run(max_num_batched_tokens)``): per batched token about
    (2 n_ff + 4 n_embd + q/k/v widths) values in 16-bit, times ``factor`` for temporaries kept alive; the
    tensor-parallel parts are split across ranks (an estimate: the logs give only the overall peak)."""
    ff = a.n_ff_expert * a.n_expert_used if a.n_expert else a.n_ff
    widths = 2 * ff + 4 * a.n_embd + (a.n_head + 2 * a.n_head_kv) * a.head_dim_k
    return int(mnbt * widths * 2 * factor / tp)


def sampler_bytes(a: Arch, mnbt: int, max_num_seqs: int, per_logit: float) -> int:
    """Peak of the sampler warm-up: ``min(max_num_seqs, mnbt)`` rows of full-vocabulary logits (gathered on every
    rank, so TP does not divide this)."""
    return int(min(mnbt, max_num_seqs) * a.vocab_size * per_logit)


def activation_peak_bytes(a: Arch, mnbt: int, max_num_seqs: int, tp: int, c: Coefficients,
                          sampler: str = "native") -> int:
    """vLLM's "PyTorch activation peak" (torch_peak_increase): forward pass and sampler warm-up run one after the
    other, so the peak is the larger of the two."""
    return max(dummy_run_bytes(a, mnbt, tp, c.activation_factor),
               sampler_bytes(a, mnbt, max_num_seqs, c.sampler_bytes_per_logit[sampler]))


def non_torch_bytes(tp: int, c: Coefficients) -> int:
    """non_torch_increase: workspaces outside torch's allocator, plus NCCL buffers when TP > 1."""
    return (c.non_torch_mib + (c.non_torch_tp_mib if tp > 1 else 0)) * MIB


def available_kv_bytes(total: int, util: float, weights: int, activation: int, non_torch: int) -> int:
    """determine_available_memory: requested_memory = total x util, less non_kv_cache_memory = weights + torch
    peak increase + non-torch increase. May be negative (vLLM then refuses to start)."""
    return int(total * util) - weights - activation - non_torch


def kv_bytes_per_token(a: Arch, tp: int, dtype_bytes: int = 2) -> list[int]:
    """Per layer, one token's K and V on one rank (kv_cache_interface.py: num_kv_heads = max(1, kv // tp);
    MLA keeps one latent of kv_lora_rank + rope dims per token, MLAAttentionSpec)."""
    if a.kv_lora_rank:
        return [(a.kv_lora_rank + a.qk_rope_head_dim) * dtype_bytes] * a.n_layer
    heads = max(1, a.n_head_kv // tp)
    return [heads * (a.head_dim_k + a.head_dim_v) * dtype_bytes] * a.n_layer


@dataclass(frozen=True)
class VllmArch:
    """An Arch read from a transformers config.json (advisor.vllm.config), with the per-layer attention kind where
    the config lists it (``layer_types``)."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ff: int
    vocab_size: int
    sliding_window: int = 0
    sliding_window_pattern: int = 0
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_expert: int = 0
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    swa_layers: tuple[bool, ...] = ()  # per layer, from layer_types; () = use sliding_window_pattern


def is_swa(a: Arch, il: int) -> bool:
    """Whether layer ``il`` gets a SlidingWindowSpec: the config's layer_types where given, else llama.cpp-style
    pattern (il % p < p - 1; p = 1: every layer)."""
    layers = getattr(a, "swa_layers", ())
    if layers:
        return a.sliding_window > 0 and il < len(layers) and layers[il]
    p = a.sliding_window_pattern
    return a.sliding_window > 0 and p > 0 and (p == 1 or il % p < p - 1)


@dataclass(frozen=True)
class KvLayout:
    """How vLLM lays the KV cache out (get_kv_cache_config)."""

    page_bytes: int  # one block of one layer (FullAttentionSpec / SlidingWindowSpec / MLAAttentionSpec page_size)
    group_size: int  # layers sharing one KV tensor pool (num_layers when every layer has the same spec)
    n_groups: int  # KV cache groups (1 for a uniform model)
    block_size: int
    groups_swa: tuple[bool, ...] = (False,)  # per group: sliding-window spec

    def num_blocks(self, available: int) -> int:
        """get_num_blocks: available // page_size // num_layers (per group for hybrid models)."""
        return max(0, available) // self.page_bytes // self.group_size

    def tokens(self, available: int) -> int:
        """The logged "GPU KV cache size: N tokens": num_blocks // len(kv_cache_groups) x block_size."""
        return self.num_blocks(available) // self.n_groups * self.block_size


def kv_layout(a: Arch, tp: int, block: int, dtype_bytes: int = 2) -> KvLayout:
    """Uniform models: one group of every layer. Sliding-window + full attention with equal page sizes (gpt-oss,
    Gemma): _get_kv_cache_config_uniform_page_size groups each attention type's layers into groups of
    ``group_size`` = the fewest layers of a type (or the most, when that is under 1.25x the fewest)."""
    page = kv_bytes_per_token(a, tp, dtype_bytes)[0] * block
    kinds: dict[bool, int] = {}
    for il in range(a.n_layer):
        kinds[is_swa(a, il)] = kinds.get(is_swa(a, il), 0) + 1
    if len(kinds) == 1:
        return KvLayout(page, a.n_layer, 1, block, (next(iter(kinds)),))
    lo, hi = min(kinds.values()), max(kinds.values())
    size = hi if hi < lo * 1.25 else lo
    groups = tuple(swa for swa, n in sorted(kinds.items()) for _ in range(-(-n // size)))
    return KvLayout(page, size, len(groups), block, groups)


def kv_capacity_tokens(a: Arch, available: int, tp: int, block: int, dtype_bytes: int = 2) -> int:
    """KV tokens vLLM reports for ``available`` bytes per rank (all ranks get the same: unify_kv_cache_configs)."""
    return kv_layout(a, tp, block, dtype_bytes).tokens(available)


def _spec_blocks(a: Arch, swa: bool, max_model_len: int, mnbt: int, block: int) -> int:
    """Blocks one request of max_model_len needs in one layer (FullAttentionSpec / SlidingWindowSpec
    max_memory_usage_bytes: the window plus a batch of new tokens, and one block more)."""
    if swa:
        return -(-min(a.sliding_window - 1 + mnbt, max_model_len) // block) + 1
    return -(-max_model_len // block)


def kv_need(a: Arch, tp: int, max_model_len: int, mnbt: int, block: int, dtype_bytes: int = 2) -> int:
    """Bytes one sequence of max_model_len tokens takes (check_enough_kv_cache_memory)."""
    per = kv_bytes_per_token(a, tp, dtype_bytes)
    return sum(_spec_blocks(a, is_swa(a, il), max_model_len, mnbt, block) * block * per[il]
               for il in range(a.n_layer))


def max_concurrency(a: Arch, available: int, tp: int, max_model_len: int, mnbt: int, block: int,
                    dtype_bytes: int = 2) -> float:
    """The logged "Maximum concurrency for L tokens per request": num_blocks / blocks one request needs across the
    groups (kv_cache_utils.get_max_concurrency_for_kv_cache_config)."""
    lay = kv_layout(a, tp, block, dtype_bytes)
    per_req = sum(_spec_blocks(a, swa, max_model_len, mnbt, block) for swa in lay.groups_swa)
    return lay.num_blocks(available) / per_req if per_req else 0.0


@dataclass(frozen=True)
class Config:
    """The vLLM settings that move start-up memory (vLLM's own option names)."""

    gpu_memory_utilization: float
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    block_size: int = 16
    kv_cache_dtype_bytes: int = 2
    enforce_eager: bool = False
    version: tuple[int, int] = LATEST


@dataclass(frozen=True)
class Rank:
    rank: int
    total_bytes: int
    weights_bytes: int
    activation_peak_bytes: int
    non_torch_bytes: int
    kv_cache_bytes: int  # "Available KV cache memory"
    kv_tokens: int  # "GPU KV cache size: N tokens"

    def to_dict(self) -> dict[str, int]:
        return {"rank": self.rank, "total_bytes": self.total_bytes, "weights_bytes": self.weights_bytes,
                "activation_peak_bytes": self.activation_peak_bytes, "non_torch_bytes": self.non_torch_bytes,
                "kv_cache_bytes": self.kv_cache_bytes, "kv_tokens": self.kv_tokens}


def pp_layers(a: Arch, pp: int) -> list[int]:
    """Layers per pipeline stage: vllm/distributed/utils.py get_pp_indices gives each stage n // pp and one more to
    the n % pp stages just before the last (``partitions[-i] += 1`` for i in 2 .. rem + 1)."""
    base, rem = divmod(a.n_layer, pp)
    parts = [base] * pp
    for i in range(2, rem + 2):
        parts[-i] += 1
    return parts


def startup(a: Arch, weights_total: int, totals: list[int], cfg: Config, c: Coefficients) -> list[Rank]:
    """Per rank (tp x pp ranks; ``totals`` the device memory of each, as torch reports it): what vLLM's profile
    gives. Weights split evenly over TP and by layers over PP. Every rank gets the KV of the smallest (vLLM unifies
    the KV cache configs of all workers: the minimum num_blocks)."""
    tp, pp = cfg.tensor_parallel_size, cfg.pipeline_parallel_size
    stages = pp_layers(a, pp)
    sampler = sampler_for(cfg.version)
    out: list[Rank] = []
    for stage, n_layers in enumerate(stages):
        sa = _StageArch(a, n_layers)
        w = int(weights_total * n_layers / a.n_layer) // tp
        # the last stage computes the logits and runs the sampler; other stages only the forward pass
        act = activation_peak_bytes(sa, cfg.max_num_batched_tokens, cfg.max_num_seqs, tp, c, sampler) \
            if stage == pp - 1 else dummy_run_bytes(sa, cfg.max_num_batched_tokens, tp, c.activation_factor)
        nt = non_torch_bytes(tp * pp, c)
        for r in range(tp):
            i = stage * tp + r
            total = totals[i] if i < len(totals) else totals[-1]
            avail = available_kv_bytes(total, cfg.gpu_memory_utilization, w, act, nt)
            out.append(Rank(i, total, w, act, nt, avail, 0))
    floor_avail = min(r.kv_cache_bytes for r in out)
    res = []
    for r in out:
        sa = _StageArch(a, stages[r.rank // tp])
        tok = kv_capacity_tokens(sa, floor_avail, tp, cfg.block_size, cfg.kv_cache_dtype_bytes)
        res.append(Rank(r.rank, r.total_bytes, r.weights_bytes, r.activation_peak_bytes, r.non_torch_bytes,
                        r.kv_cache_bytes, tok))
    return res


@dataclass(frozen=True)
class _StageArch:
    """An Arch with only one pipeline stage's layers."""

    base: Any
    n_layer: int

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)
