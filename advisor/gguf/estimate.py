"""Memory estimate for llama.cpp from GGUF facts: weights, KV cache, compute and output buffers per device.

Pure functions, no I/O. Each rule cites llama.cpp (file/function), a recorded log or a measurement
against llama-cpp-python 0.3.36's llama.cpp on this project's CPU machine (tests/test_llamacpp_accuracy.py,
benchmarks/estimate_accuracy.py reproduce them).

What is modelled:
- context: n_ctx 0 = trained context; padded to 256; per-slot (non-unified) or unified cells
  (llama_context::llama_context).
- KV cache: per layer n_stream * cells * (row(type_k, n_head_kv*head_k) + row(type_v, n_head_kv*head_v)),
  sliding-window layers with the SWA cell count (llama_kv_cache / llama_kv_cache_iswa).
- weights per device for n_gpu_layers: token_embd on the CPU, the output layer offloaded first, then the last
  repeating layers (llama_model::load_tensors); a tied output duplicates token_embd on the GPU.
- output buffer: n_vocab * 4 bytes per sequence (llama_context::output_reserve).
- compute buffer: on one device, for the architectures whose graph advisor/gguf/galloc.py builds (``REPLAYED``:
  llama, Qwen2/3, Qwen3-MoE, GLM-4.5, DeepSeek-V2/V3 in both MLA layouts, Gemma 2/3, Phi-3, SmolLM3, StarCoder2,
  gpt-oss, Llama 4), llama.cpp's allocator replayed on that graph, with ggml-cuda's MoE fusion dependencies and the
  scheduler's input copies on a GPU (``_replayed``: to the byte on the recorded plans); otherwise (several devices,
  hybrids and other architectures, old builds) the peak of three phases of one layer's graph (attention, FFN,
  logits), in floats per ubatch token, coefficients measured on the CPU backend (see ``compute_bytes``), which bound
  where ggml-alloc's holes fall.

GPU backends (checked against the real start-up logs in tests/data/gpu-logs by tests/test_gpu_logs.py and
benchmarks/gpu_logs.py): each buffer is reported on the device llama.cpp allocates it on: ``gpu0``..``gpuN`` (CUDA0,
ROCm0, Metal, Vulkan0, SYCL0), ``host`` (the GPU backend's pinned host buffer type, CUDA_Host/ROCm_Host/Vulkan_Host/
SYCL_Host: the CPU side's compute buffer and the output buffer) and ``cpu`` (weights and KV left on the CPU; on Metal,
which has no host buffer type, also the CPU compute and output buffers). What differs per backend is data in
rules/backends.toml (``backend_rules``); the build era (``Settings.llama_build``) selects the placement rules that
changed over time (output layer, SWA cache, MoE graph).

Recurrent state (Mamba, Mamba2, RWKV, LFM2 and the hybrids jamba / granitehybrid / nemotron-h / falcon-h1 /
qwen3next ...): ``recurrent_bytes`` per device, a field of its own (llama.cpp's "RS buffer", not its "KV buffer"), in
the totals; hybrids keep the KV cache on their attention layers only (``recurrent_bytes``, ``kv_layer_bytes``).

Also modelled: per-layer head sizes of SWA layers (key_length_swa / value_length_swa), Gemma-3n/4 KV sharing
(n_layer_kv_from_start), MLA's V-less cache (MLA_V_LESS_SINCE), mmapped model buffers as file spans
(``mapped_spans``). Not modelled: the DSA indexer cache (2026 builds), CUDA context/pool memory (outside every
buffer: rules/backends.toml context_overhead_bytes; llama.cpp --fit keeps a 1 GiB margin for it), server
prompt cache.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path
from typing import Any, Literal

from advisor.gguf import galloc, ggml
from advisor.errors import BadInputError
from advisor.gguf.facts import ModelFacts

FlashAttn = Literal["on", "off", "auto"]
Backend = Literal["cpu", "cuda", "rocm", "metal", "vulkan", "sycl"]
BACKENDS: tuple[str, ...] = ("cpu", "cuda", "rocm", "metal", "vulkan", "sycl")

CTX_PAD = 256  # llama_context: cparams.n_ctx = GGML_PAD(n_ctx, 256); SWA cache also padded to 256
PARALLEL_AUTO = 4  # llama-server: -np -1 (auto) -> 4 slots with kv_unified = true (tools/server/server.cpp)
MIB = 1024 * 1024
# Build eras (llama.cpp build numbers, "bNNNN"). Each is the first build with the newer behaviour, as closely as the
# logs pin it down; None in Settings.llama_build means a current build.
# Output layer offloaded first (n_layer + 1 slots): b6182 still offloaded it only when ngl > n_layer (gpu-logs l06:
# "-ngl 24" -> "offloaded 24/25"), 2026 builds offload it first (l24: "-ngl 15" -> output + 14 layers);
# The exact first build is not pinned down: anything after b6182.
OUTPUT_FIRST_SINCE = 6183
# Separate SWA cache (llama_kv_cache_unified_iswa, llama.cpp PR #13194, May 2025): b4879 still gave gemma3's SWA
# layers full-size cells (gpu-logs l11: 26 layers x 8192 cells), b6182 has the iSWA cache (l06: 640 SWA cells).
ISWA_SINCE = 5450
# Batched MoE (one ggml_mul_mat_id over all used experts, llama.cpp PR #6505, April 2024): before it,
# llm_build_moe_ffn looped over the n_expert_used slots, so one slot's activations were live at a time (gpu-logs l26,
# ~b2400 Mixtral: 115.50 MiB = 4*ub*(3F + 4E) within 0.5 %).
MOE_BATCHED_SINCE = 2600
# Pipeline parallelism: GGML_SCHED_MAX_COPIES = 4 copies of the graph inputs (ggml/src/ggml-backend.cpp), used with
# several GPUs, every layer and the output offloaded, KV offloaded and no tensor overrides (llama_context
# constructor, "pipeline parallelism enabled (n_copies=4)", gpu-logs l20).
PP_COPIES = 4
# Per-sequence KV streams (kv_unified false, n_stream = n_seq_max): b6182 prints "kv_unified = false" (gpu-logs
# l06), b5398 has no such line (l04, l13) and early-2025 builds kept one cache of n_ctx cells shared by all
# sequences, every mask spanning all of them (l20: 4 sequences, "kv_size = 8192", KQ over 8192 cells).
# Approximate: somewhere between b5398 and b6182.
KV_STREAMS_SINCE = 6000
# KV/SWA cache padding: mid-2025 builds padded to 256 with flash attention and 32 without ("padding = 32", gpu-logs
# l04/l13; l06 b6182: SWA cache of 640 cells = 128 + 512 padded to 32), current builds always to 256.
KV_PAD_256_SINCE = 6183
# Fused SwiGLU (ggml_swiglu_split, one new F-wide tensor): before it the FFN ran silu and mul in place on the gate,
# so the GPU FFN phase held 2F instead of 3F (gpu-logs l23, b~4700: 164.01 MiB, below 3F's 236 MiB). Approximate
# first build (June 2025).
SWIGLU_FUSED_SINCE = 5700
# The KQ mask input in f16 with flash attention (build_attn_inp_kq_mask, src/llama-graph.cpp: "flash attention
# requires an f16 mask"; llama.cpp PR #23764, merged 2026-05-27, between b9263 and b9587): before it the mask was an
# f32 input cast to f16 for the FA op, so the host side held 4 bytes per cell (gpu-logs l03 b5500: host 96.17 MiB =
# 4*ub*(E + kv) with FA on). Approximate first build.
MASK_F16_SINCE = 9350
# The embeddings input beside the token ids (src/llama-graph.cpp build_inp_embd, "select one of the 2 inputs", llama.cpp
# PR #18550, January 2026): a second n_embd-wide f32 graph input on the host side. Approximate first build.
EMBD_INPUT_SINCE = 7700
# KV cache writes through ggml_set_rows by default (llama.cpp PR #14959, "enable LLAMA_SET_ROWS=1 by default",
# August 2025; PR #14285 added the path): the transposed V cache then takes an index input per V value.
# Approximate first build.
SET_ROWS_SINCE = 6070
# V-less KV cache for MLA models (llama.cpp PR #19067, merged 2026-01-24: "kv-cache : support V-less cache"):
# before it the cache also held a V tensor of value_length per cell (gpu-logs l18, b5331: K 1098 MiB + V 976 MiB).
# Approximate first build (b9174 is 2026-05-16 at about 11 builds a day).
MLA_V_LESS_SINCE = 7950
# Hadamard rotation of K and V in a quantized cache (llama.cpp PR #21038, "llama : rotate activations for better
# quantization", merged 2026-04-01): Q and K (and V, and back the attention output) are multiplied by an n x n
# input before the cache write (llama-kv-cache.cpp attn_rot_k / attn_rot_v). Approximate first build (b9174 is
# 2026-05-16 at about 11 builds a day: 45 days earlier).
ATTN_ROT_SINCE = 8680

#: Every build-era rule above, by the name ``era`` reports it under.
ERA_RULES: dict[str, int] = {
    "moe_batched": MOE_BATCHED_SINCE, "iswa_cache": ISWA_SINCE, "swiglu_fused": SWIGLU_FUSED_SINCE,
    "kv_streams": KV_STREAMS_SINCE, "output_layer_first": OUTPUT_FIRST_SINCE, "kv_pad_256": KV_PAD_256_SINCE,
    "fa_mask_f16": MASK_F16_SINCE, "mla_v_less": MLA_V_LESS_SINCE, "embd_input": EMBD_INPUT_SINCE,
    "set_rows_v_idxs": SET_ROWS_SINCE, "attn_rot": ATTN_ROT_SINCE,
}


def era(build: int | None) -> dict[str, bool]:
    """Which of the build-era rules a llama.cpp build ``bN`` has (None: a current build has them all)."""
    return {name: build is None or build >= since for name, since in ERA_RULES.items()}


@dataclasses.dataclass(frozen=True)
class Settings:
    """llama.cpp run settings; the defaults are llama-server's (common/common.h)."""

    n_ctx: int = 0  # -c: 0 = the model's trained context (common.h n_ctx = 0; llama_context constructor)
    n_batch: int = 2048  # -b (common.h n_batch = 2048)
    n_ubatch: int = 512  # -ub (common.h n_ubatch = 512)
    n_parallel: int = -1  # -np: -1 = auto -> 4 slots, unified KV (server.cpp)
    kv_unified: bool | None = None  # -kvu: None = on iff n_parallel is auto (arg.cpp help text)
    flash_attn: FlashAttn = "auto"  # -fa (common.h LLAMA_FLASH_ATTN_TYPE_AUTO)
    cache_type_k: str = "f16"  # -ctk (common.h GGML_TYPE_F16)
    cache_type_v: str = "f16"  # -ctv
    n_gpu_layers: int = -1  # -ngl: -1 = all (llama_model_default_params n_gpu_layers = 999; --fit may trim)
    n_gpus: int = 0  # devices to split over (from the probe); 0 = CPU only
    tensor_split: tuple[float, ...] | None = None  # -ts; None = even split (llama.cpp uses free memory)
    swa_full: bool = False  # --swa-full (common.h false; llama_context_default_params has true)
    offload_kqv: bool = True  # --no-kv-offload inverts it (common.h)
    mmap: bool = True  # --mmap (common.h use_mmap = true)
    backend: Backend | None = None  # GPU backend of the n_gpus devices; None: unnamed (no host buffers split out)
    n_cpu_moe: int = 0  # --n-cpu-moe K: experts of the first K layers stay on the CPU; -1 = all (--cpu-moe)
    llama_build: int | None = None  # llama.cpp build number whose placement rules apply; None = current
    tensor_overrides: bool = False  # -ot/--override-tensor given (beyond --n-cpu-moe): no pipeline parallelism
    cuda_fusion: bool = True  # GGML_CUDA_DISABLE_FUSION=1 unset: ggml-cuda fuses ops and adds their allocation deps

    def since(self, build: int) -> bool:
        """Whether the llama.cpp build modelled has the behaviour that first shipped in ``build`` (a build era)."""
        return self.llama_build is None or self.llama_build >= build

    def resolved_parallel(self) -> tuple[int, bool]:
        """(n_seq_max, kv_unified) after llama-server's auto rule."""
        if self.n_parallel < 0:
            return PARALLEL_AUTO, True if self.kv_unified is None else self.kv_unified
        return max(1, self.n_parallel), bool(self.kv_unified)


@dataclasses.dataclass(frozen=True)
class BackendRule:
    """One ``[[backend]]`` of rules/backends.toml: what a llama.cpp GPU backend allocates beyond the model's buffers.

    Schema (all keys required): name, llama_name (device prefix in llama.cpp's log), host_buffers (the backend has
    a pinned host buffer type, "<llama_name>_Host", that holds the CPU side's compute and the output buffers),
    op_offload (the scheduler runs big-batch ops of CPU-resident weights on the GPU, copying the weight into the
    GPU's compute buffer: ggml_backend_dev_offload_op), offload_without_layers (that also reaches a GPU holding no
    layer, -ngl 0), mapped_weights (mmapped weights are wrapped zero-copy, so
    the GPU "model buffer" is the file mapping: Metal), compute_buffer_rule ("gpu" or "cpu": which phase
    coefficients of compute_bytes apply), context_overhead_bytes (per device, allocated by the driver/runtime and
    reported by no llama.cpp buffer), reason, source.
    """

    name: str
    llama_name: str
    host_buffers: bool
    op_offload: bool
    offload_without_layers: bool
    mapped_weights: bool
    compute_buffer_rule: Literal["gpu", "cpu"]
    context_overhead_bytes: int
    reason: str
    source: str


@dataclasses.dataclass(frozen=True)
class _BackendFile:
    schema: int
    backend: list[BackendRule]


# Used when Settings.backend is None with GPUs: the pre-issue-7 behaviour (no host buffer split out, GPU phases).
GENERIC_GPU = BackendRule("gpu", "GPU", False, False, False, False, "gpu", 0, "unnamed GPU backend", "-")


def _rules_file() -> Path:
    from advisor.settings import data_dir

    return data_dir() / "rules" / "backends.toml"


@cache
def backend_rules(path: str | None = None) -> dict[str, BackendRule]:
    """rules/backends.toml by backend name. Raises BadInputError on a malformed file."""
    from advisor.strict import build, read_toml

    f = Path(path) if path else _rules_file()
    data = read_toml(f)
    doc: _BackendFile = build(_BackendFile, data, f.name)
    if doc.schema != 1:
        raise BadInputError(f"{f.name}: schema {doc.schema}, this advisor reads schema 1")
    return {b.name: b for b in doc.backend}


@dataclasses.dataclass(frozen=True)
class DeviceEstimate:
    device: str  # "cpu", "gpu0", ...
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    output_bytes: int
    n_layers: int  # repeating layers whose weights live here
    recurrent_bytes: int = 0  # recurrent-state cache (llama.cpp's "RS buffer"): Mamba/RWKV/hybrid models only

    @property
    def total_bytes(self) -> int:
        return (self.weights_bytes + self.kv_cache_bytes + self.recurrent_bytes + self.compute_bytes
                + self.output_bytes)


@dataclasses.dataclass(frozen=True)
class Estimate:
    settings: Settings
    n_ctx: int  # padded, all streams
    n_ctx_seq: int
    n_seq: int
    kv_unified: bool
    n_stream: int
    kv_cells: int  # per stream, full-attention layers
    swa_cells: int  # per stream, sliding-window layers (0: none)
    n_batch: int
    n_ubatch: int
    flash_attn: bool
    devices: tuple[DeviceEstimate, ...]
    # flash attention on, but its ops run on the CPU: the GPU backend has no kernel for these head sizes
    flash_attn_on_cpu: bool = False

    @property
    def weights_bytes(self) -> int:
        return sum(d.weights_bytes for d in self.devices)

    @property
    def kv_cache_bytes(self) -> int:
        return sum(d.kv_cache_bytes for d in self.devices)

    @property
    def recurrent_bytes(self) -> int:
        return sum(d.recurrent_bytes for d in self.devices)

    @property
    def compute_bytes(self) -> int:
        return sum(d.compute_bytes for d in self.devices)

    @property
    def output_bytes(self) -> int:
        return sum(d.output_bytes for d in self.devices)

    @property
    def total_bytes(self) -> int:
        return sum(d.total_bytes for d in self.devices)

    def to_dict(self) -> dict[str, Any]:
        s = dataclasses.asdict(self.settings)
        return {
            "weights_bytes": self.weights_bytes, "kv_cache_bytes": self.kv_cache_bytes,
            "recurrent_bytes": self.recurrent_bytes, "compute_bytes": self.compute_bytes,
            "output_bytes": self.output_bytes, "total_bytes": self.total_bytes,
            "n_ctx": self.n_ctx, "n_ctx_seq": self.n_ctx_seq, "n_seq": self.n_seq, "kv_unified": self.kv_unified,
            "kv_cells": self.kv_cells, "swa_cells": self.swa_cells, "n_batch": self.n_batch,
            "n_ubatch": self.n_ubatch, "flash_attn": self.flash_attn, "flash_attn_on_cpu": self.flash_attn_on_cpu,
            "settings": s,
            "devices": [{"device": d.device, "weights_bytes": d.weights_bytes, "kv_cache_bytes": d.kv_cache_bytes,
                         "recurrent_bytes": d.recurrent_bytes, "compute_bytes": d.compute_bytes,
                         "output_bytes": d.output_bytes,
                         "total_bytes": d.total_bytes, "n_layers": d.n_layers} for d in self.devices],
        }


def pad(x: int, n: int) -> int:
    return (x + n - 1) // n * n


def kv_pad(s: Settings) -> int:
    """Cell padding of the KV caches: 256, or 32 without flash attention before KV_PAD_256_SINCE."""
    if not s.since(KV_PAD_256_SINCE) and s.flash_attn == "off":
        return 32
    return CTX_PAD


def context(facts: ModelFacts, s: Settings) -> tuple[int, int, int, bool, int]:
    """(n_ctx, n_ctx_seq, n_seq, unified, n_stream) as llama_context's constructor resolves them."""
    n_seq, unified = s.resolved_parallel()
    if not s.since(KV_STREAMS_SINCE):
        unified = True  # one cache of n_ctx cells shared by every sequence
    pad_to = kv_pad(s)
    n_ctx = pad(s.n_ctx if s.n_ctx > 0 else (facts.n_ctx_train or 4096), pad_to)
    if unified or n_seq == 1:
        return n_ctx, n_ctx, n_seq, unified, 1
    # "n_ctx is not divisible by n_seq_max - rounding down" then each stream is padded to 256 again
    n_ctx_seq = pad(n_ctx // n_seq, pad_to)
    return n_ctx_seq * n_seq, n_ctx_seq, n_seq, unified, n_seq


def _type(name: str) -> int:
    try:
        tid = ggml.type_id(name)
    except KeyError:
        raise BadInputError(f"unknown cache type {name!r} (one of {', '.join(ggml.KV_CACHE_TYPES)})") from None
    return tid


def kv_layer_bytes(facts: ModelFacts, il: int, cells: int, n_stream: int, tk: int, tv: int,
                   v_less: bool = True, v_trans: bool = False) -> int:
    """One layer's K and V tensors: ggml_new_tensor_3d(type, n_embd_{k,v}_gqa(il), cells, n_stream). A transposed V
    (``v_trans``: the cache made without flash attention) has rows of the widest layer's V (llama_kv_cache
    constructor: "!v_trans ? n_embd_v_gqa(il) : n_embd_v_gqa_max()", v_width_max here): with per-layer head sizes
    (Gemma 4's 256 on its sliding-window layers, 512 on the others) the narrow layers' V grows to the wide one's;
    measured on this CPU with a Gemma 4 E4B header, its SWA cache 1.5x without flash attention
    (tests/data/llamacpp-cpu/gemma4-cpu.jsonl)."""
    hkv = facts.n_head_kv[il]
    if hkv == 0:
        return 0  # no attention in this layer (e.g. recurrent layers of hybrids)
    if has_recurrent_state(facts, il) and facts.architecture not in KV_ON_RECURRENT_LAYERS:
        # llama_memory_hybrid gives the KV cache only the layers that are not recurrent (create_memory's
        # filter_attn = !is_recurrent(il), src/llama-model.cpp); purely recurrent models have no KV cache at all.
        return 0
    if 0 <= facts.n_layer_kv_from_start <= il:
        return 0  # KV sharing (Gemma 3n / 4): this layer reads an earlier layer's cache (create_memory reuse)
    dk, dv = facts.head_dims(il)  # per-layer sizes: key_length_swa / value_length_swa on SWA layers
    k = ggml.row_size(tk, hkv * dk)
    # MLA GGUFs (attention.key_length_mla set: llama_hparams::is_mla) store one latent per token in K and, since
    # llama.cpp PR #19067 (2026-01-24), no V tensor (llama_kv_cache constructor: has_v = !is_mla)
    v = 0 if v_less and facts.is_mla else ggml.row_size(tv, v_width_max(facts) if v_trans else hkv * dv)
    return (k + v) * cells * n_stream


# falcon-h1 runs attention and SSM in parallel in every layer: llama.cpp's create_memory passes filters that keep all
# layers in both caches (src/llama-model.cpp, LLM_ARCH_FALCON_H1).
KV_ON_RECURRENT_LAYERS = frozenset({"falcon-h1"})
# The recurrent state is F32: create_memory passes GGML_TYPE_F32 as type_r and type_s (src/llama-model.cpp).
RS_BYTES_PER_ELEMENT = 4


def has_recurrent_state(facts: ModelFacts, il: int) -> bool:
    """llama_hparams::is_recurrent(il): the layer gets a slot in llama_memory_recurrent."""
    return il < len(facts.recurrent_layers) and facts.recurrent_layers[il]


def recurrent_layer_bytes(facts: ModelFacts, il: int, n_seq: int) -> int:
    """One layer's recurrent state, llama_memory_recurrent's constructor (src/llama-memory-recurrent.cpp): r_l and s_l
    are ggml_new_tensor_1d(type, n_embd_r() * mem_size) and (n_embd_s() * mem_size), mem_size = max(1, n_seq_max)
    cells (create_memory, src/llama-model.cpp). Measured on this build: "RS buffer size" exactly, with "0 rs_seq"
    and an empty P state for mamba, mamba2 and granitehybrid (tests/test_llamacpp_accuracy.py)."""
    if not has_recurrent_state(facts, il):
        return 0
    return (facts.n_embd_r + facts.n_embd_s) * RS_BYTES_PER_ELEMENT * max(1, n_seq)


def layer_devices(facts: ModelFacts, s: Settings) -> tuple[list[str], str]:
    """Device of each repeating layer and of the output layer (llama_model::load_tensors).

    Current llama.cpp counts n_layer + 1 slots, the last being the output layer, and fills them from the end:
    -ngl N puts the output plus the last N-1 repeating layers on the GPU(s). Builds before OUTPUT_FIRST_SINCE start
    at i_gpu_start = n_layer - N, so the output is offloaded only when N > n_layer.
    The slots are counted over block_count (n_layer_all), NextN/MTP blocks included: they are the last blocks, so
    with partial offload they take GPU slots although llama.cpp skips their tensors (H200: GLM-4.5-Air, 46 + 1
    blocks, -ngl 23 puts 21 trunk layers on the GPU; tests/data/llamacpp-cuda).
    """
    n = facts.n_layer
    n_all = facts.n_layer_all
    if s.n_gpus <= 0 or s.n_gpu_layers == 0:
        return ["cpu"] * n, "cpu"
    req = n_all + 1 if s.n_gpu_layers < 0 else s.n_gpu_layers  # llama_model_default_params: 999 = everything
    if not s.since(OUTPUT_FIRST_SINCE):
        start = max(n_all - req, 0)  # old i_gpu_start: the output slot counts only once every layer is offloaded
    else:
        start = max(n_all + 1 - req, 0)
    act = min(req, n_all + 1)  # act_gpu_layers
    gpu_slots = [il for il in range(n_all + 1) if il >= start and il - start < act]
    split = list(s.tensor_split) if s.tensor_split else [1.0] * s.n_gpus
    split = (split + [0.0] * s.n_gpus)[: s.n_gpus]
    total = sum(split) or 1.0
    # llama.cpp splits the offloaded slots by cumulative fractions of tensor_split (get_layer_buft_list:
    # std::upper_bound over the normalised cumulative split, at (il - i_gpu_start) / act_gpu_layers).
    cum, acc = [], 0.0
    for w in split:
        acc += w / total
        cum.append(acc)
    devs = ["cpu"] * (n_all + 1)
    for slot in gpu_slots:
        frac = (slot - start) / act
        g = next((i for i, c in enumerate(cum) if frac < c - 1e-12), s.n_gpus - 1)
        devs[slot] = f"gpu{g}"
    return devs[:n], devs[n_all]


def ssm_phase(facts: ModelFacts, n_ubatch: int, n_seq: int) -> float:
    """f32 values per ubatch token live in one Mamba/Mamba2 layer (llm_build_mamba_base::build_mamba{,2}_layer): about
    two copies of the ssm_in projection (d_in_proj = 2*d_inner + 2*n_group*d_state + n_head for Mamba2, 2*d_inner for
    Mamba), two of the conv channels (conv_dim = d_inner + 2*n_group*d_state), and the n_seq gathered states
    (n_embd_r + n_embd_s each) spread over the ubatch's tokens. Fitted on this build's CPU backend with one
    granitehybrid shape (E 512, d_inner 1024, d_state 128, 1 group, 16 heads; tests/test_llamacpp_accuracy.py
    RECURRENT cases): within 3.5 % of the measured SSM phase at 1 and 4 sequences. 0 for RWKV / LFM2 (not measured).
    """
    if not facts.is_recurrent or facts.wkv_head_size or facts.shortconv_l_cache or not facts.ssm_d_inner:
        return 0.0
    groups = 2 * facts.ssm_n_group * facts.ssm_d_state
    d_in_proj = 2 * facts.ssm_d_inner + (groups + facts.ssm_dt_rank if facts.ssm_n_group else 0)
    conv_dim = facts.ssm_d_inner + groups
    return 2 * d_in_proj + 2 * conv_dim + n_seq * (facts.n_embd_r + facts.n_embd_s) / max(1, n_ubatch)


def _cpu_attention(facts: ModelFacts, kv: int, mask: float, flash_attn: bool, fused_qkv: bool) -> float:
    """compute_bytes' attention phase, in f32 values per ubatch token (kv: cells of one stream)."""
    E = facts.n_embd
    H = max(facts.n_head) if facts.n_head else 0
    Hk = (max(facts.n_head_kv) if facts.n_head_kv else 0) * facts.head_dim_k
    mla = mla_q_floats(facts)
    if mla:
        # absorbed MLA: the query chain stacks (q_b output, q_nope absorbed, the concatenated query), the KQ
        # scores without flash attention go on top of it, and an H x v_head slot of the previous layer's
        # attention output stays below (traced on this CPU with ggml-alloc's log, DeepSeek-V3.1: 1440.01,
        # 2472.01, 1236.00 MiB FA off and every FA-on case of tests/data/llamacpp-cpu exactly)
        return (0 if flash_attn else kv * H) + mask + 4 * E + mla + H * facts.value_length_mla
    if flash_attn:
        return mask + 4 * E + 2 * Hk + H * facts.head_dim_k
    return kv * H + mask + (3 if fused_qkv else 5) * E + 2 * Hk


def compute_bytes(facts: ModelFacts, *, n_ubatch: int, kv_cells: int, swa_cells: int, flash_attn: bool,
                  n_layers_here: int, has_output: bool, n_stream: int, n_seq: int = 1,
                  kept_hidden: bool = False) -> int:
    """Compute buffer of one backend: the peak over the graph's phases, in f32 values per ubatch token.

    ggml-alloc reuses memory between ops and lets in-place ops share their parent, so the buffer is about
    the largest working set of one phase plus what stays live across it (the KQ mask, a few residual rows).
    Measured here on the CPU backend (benchmarks/estimate_accuracy.py; E = n_embd, F = n_ff, V = n_vocab,
    H = n_head, Hk = n_head_kv * head_k, kv = cells):
      attention, FA off: kv*H (KQ, soft_max in place) + mask + 5E + 2Hk
      attention, FA on : mask + 4E + 2Hk + Hq (FA output)
      FFN              : 3F (gate, up, the SwiGLU product) + mask + 5E (4E with FA); MoE: 3 * F_exp * n_used
                         + router
      logits           : V + 2E (the f32 logits of every token and the normed last hidden state)
    mask = kv floats (f32, FA off) or kv/2 (f16, FA on) per token, one per cache kind (full, SWA); kv is the
    cells of one stream.
    These were checked exactly (to the logged 0.01 MiB) for dense llama-style layers; odd shapes where 3F < 5E
    can come out up to ~10 % high through allocator fragmentation.
    Recurrent models: an SSM phase, mask + ``ssm_phase``; purely recurrent ones (no attention layer, kv = 0) hold
    one more E row at the logits (V + 3E: measured 18.63 MiB for mamba and mamba2 with V 8000, E 512, ub 512).
    ``kept_hidden``: the final hidden state of every token is a graph output (HIDDEN_KEPT), one more E row.
    """
    E = facts.n_embd
    # Fused projections (phi3's attn_qkv, and an ffn_up 2F wide that ggml_swiglu splits, with no ffn_gate), measured
    # on the CPU backend with phi3 shapes (benchmarks/estimate_accuracy.py, and vocab 1000/5000 and F 1024/4096
    # variants, each to 0.1 %): two E rows fewer in the FA-off attention phase, one fewer in the FFN phase, and the
    # last layer's F-wide SwiGLU output still live during the logits (V + F + 2E). Only phi3 was measured.
    fused_qkv = facts.tensor("blk.0.attn_qkv.weight") is not None
    fused_up = _ffn_kind(facts) == "fused_up"
    # The mask and KQ are per stream: with per-slot streams a ubatch's tokens only see their own slot's cells, so
    # the sizes follow the cells of one stream (measured: -np 4 without -kvu costs the same as -np 1).
    mask_per = 0.5 if flash_attn else 1.0
    mask = mask_per * (kv_cells + swa_cells)
    phases = [0.0]
    if n_layers_here:
        phases.append(_cpu_attention(facts, kv_cells or swa_cells, mask, flash_attn, fused_qkv))
        rest = mask + ((4 if flash_attn else 5) - (1 if fused_up else 0)) * E
        if facts.n_expert:
            ff = 3 * facts.n_ff_exp * facts.n_expert_used + 2 * facts.n_expert + rest
            if facts.n_expert_shared:
                ff = max(ff, 3 * max(facts.n_ff) + rest)
        elif _ffn_kind(facts) == "gelu":
            # a non-gated FFN (ffn_up, GELU, ffn_down: starcoder2): two F-wide tensors and the mask; measured on
            # this CPU with starcoder2-7b shapes at F 18432 (2F + mask to 7 floats, 4096 and 32768 cells)
            ff = 2 * max(facts.n_ff) + mask
        else:
            ff = 3 * max(facts.n_ff) + rest
        phases.append(ff)
        if facts.is_recurrent:
            phases.append(mask + ssm_phase(facts, n_ubatch, n_seq))
    if has_output:
        pure_recurrent = facts.is_recurrent and not (kv_cells or swa_cells)
        # with LayerNorm and biases (output_norm.bias: starcoder2) the logits phase holds one more E-wide tensor:
        # V + 3E measured on this CPU with starcoder2-7b and an f16 cache (62977 floats per token at every context
        # and ubatch; V + 2E with a q8_0 cache, tests/cuda_memprobe.py CPU_MISSES). One architecture measured.
        norm_bias = 1 if facts.tensor("output_norm.bias") is not None else 0
        phases.append(facts.n_vocab + (3 if pure_recurrent else 2 + norm_bias + kept_hidden) * E
                      + (max(facts.n_ff) if fused_up else 0))
    return int(4 * n_ubatch * max(phases))


#: Layer-0 tensors whose shapes (not bytes) the compute-buffer phases read: a fused QKV projection, the FFN's up and
#: gate; and those whose presence the allocator replay reads: Q/K norms (GLM-4.5), DeepSeek's attention layout (one
#: attn_q or a Q LoRA, attn_kv_b whole). Compact facts (advisor/catalog/facts.py) keep them as zero-byte markers.
SHAPE_TENSORS = ("blk.0.attn_qkv.weight", "blk.0.ffn_up.weight", "blk.0.ffn_gate.weight", "blk.0.attn_q_norm.weight",
                 "blk.0.attn_q.weight", "blk.0.attn_q_a.weight", "blk.0.attn_kv_b.weight")
#: Per-layer tensors whose presence the replay reads in any layer: which layers have a router (Llama 4 interleaves
#: dense layers), and the experts' selection bias (from the first MoE layer on). Kept as markers too.
MARKER_SUFFIXES = (".ffn_gate_inp.weight", ".exp_probs_b.bias")


def is_marker(name: str) -> bool:
    """Whether compact facts keep the tensor ``name`` as a zero-byte marker (SHAPE_TENSORS, MARKER_SUFFIXES)."""
    return name in SHAPE_TENSORS or (name.startswith("blk.") and name.endswith(MARKER_SUFFIXES))


def _ffn_kind(facts: ModelFacts) -> str:
    """Layer 0's dense FFN: "gated" (ffn_gate beside ffn_up, or none seen), "fused_up" (an ffn_up 2F wide that
    ggml_swiglu splits: phi3) or "gelu" (ffn_up alone, F wide: starcoder2)."""
    up = facts.tensor("blk.0.ffn_up.weight")
    if up is None or facts.tensor("blk.0.ffn_gate.weight") is not None:
        return "gated"
    if len(up.shape) == 2 and facts.n_ff and up.shape[1] == 2 * max(facts.n_ff):
        return "fused_up"
    return "gated" if facts.n_expert else "gelu"


def estimate(facts: ModelFacts, s: Settings = Settings()) -> Estimate:
    """The memory llama.cpp will allocate for ``facts`` under ``s``, per device. Raises BadInputError."""
    n_ctx, n_ctx_seq, n_seq, unified, n_stream = context(facts, s)
    tk, tv = _type(s.cache_type_k), _type(s.cache_type_v)
    layer_dev, out_dev = layer_devices(facts, s)
    fa, fa_on_cpu, v_untransposed = _resolve_flash_attn(facts, s, tk, tv, layer_dev)
    # causal models cap n_batch at n_ctx and n_ubatch at n_batch (llama_context constructor)
    n_batch = min(n_ctx, s.n_batch)
    n_ubatch = min(n_batch, s.n_ubatch)
    swa_any, swa_cells, kv_cells = _cache_cells(facts, s, n_ctx_seq, n_seq, unified, n_ubatch)

    rule = _backend(s)
    gpus = [f"gpu{i}" for i in range(max(0, s.n_gpus))]
    host = "host" if gpus and rule.host_buffers else "cpu"
    names = ["cpu"] + gpus + (["host"] if host == "host" else [])
    cpu_moe = facts.n_layer if s.n_cpu_moe < 0 else s.n_cpu_moe
    weights, cpu_experts = _place_weights(facts, s, rule, names, gpus, layer_dev, out_dev, cpu_moe)
    iswa = s.since(ISWA_SINCE)
    kv, rs, n_layers = _place_caches(facts, s, names, layer_dev, swa_any=swa_any, swa_cells=swa_cells,
                                     kv_cells=kv_cells, iswa=iswa, n_stream=n_stream, n_seq=n_seq, tk=tk, tv=tv,
                                     v_trans=not (fa or v_untransposed))

    # output_reserve: n_vocab floats for each of max(n_outputs, n_seq_max) outputs (n_outputs_max_per_seq = 1),
    # in the host buffer type of the output device (CUDA_Host in gpu-logs l02/l24, CPU when the output layer
    # stays on the CPU, l06/l13, and always on Metal, l09); measured: V * 4 * n_seq.
    output = facts.n_vocab * 4 * n_seq
    out_buf = host if out_dev != "cpu" else "cpu"

    # Mask cells per ubatch token: one mask per cache kind (full, SWA) of the cells of one stream. Builds before the
    # iSWA cache already built both masks over the single full-size cache (gpu-logs l11: host 34.26 MiB =
    # 4*ub*(E + 2*8192)).
    mask_cells = (kv_cells or swa_cells) * (2 if swa_any else 1) if not iswa else kv_cells + swa_cells
    if not any(kv.values()) and facts.is_recurrent:
        # purely recurrent models (Mamba, RWKV) build no KQ mask and no attention: the graph's working set does not
        # grow with the context (measured: mamba/mamba2 compute buffer identical at 512 and 32768 cells)
        kv_cells = swa_cells = mask_cells = 0
    all_offloaded = bool(gpus) and all(d != "cpu" for d in layer_dev) and out_dev != "cpu"
    copies = PP_COPIES if (len(gpus) > 1 and all_offloaded and s.offload_kqv and not cpu_moe
                           and not s.tensor_overrides) else 1
    g = _Graph(n_ubatch=n_ubatch, kv_cells=kv_cells, swa_cells=swa_cells, mask_cells=mask_cells, flash_attn=fa,
               n_stream=n_stream, copies=copies, fa_on_cpu=fa_on_cpu,
               v_cont=_v_cont_floats(facts, s, kv_cells or swa_cells, n_ubatch) if v_untransposed else 0.0)
    compute = dict.fromkeys(names, 0)
    if not gpus:
        compute["cpu"] = _replayed(facts, s, g, n_seq, host_inputs=True) or compute_bytes(
            facts, n_ubatch=n_ubatch, kv_cells=kv_cells, swa_cells=swa_cells, flash_attn=fa,
            n_layers_here=n_layers["cpu"], has_output=True, n_stream=n_stream, n_seq=n_seq,
            kept_hidden=_kept_hidden(facts, s))
    else:
        # the scheduler offloads ops of CPU-resident weights to the first GPU (ggml_backend_sched backends in
        # device order), also when -ngl 0 leaves it no layer (H200 memprobe, -ngl 0: output weight + logits)
        first_gpu = next((d for d in gpus if n_layers[d]), gpus[0] if rule.offload_without_layers else None)
        cpu_layer = _host_layer_bytes(facts, layer_dev)
        for d in gpus:
            compute[d] = _gpu_compute(facts, s, rule, g, d, first=d == first_gpu, n_layers=n_layers[d],
                                      out_dev=out_dev, cpu_experts=cpu_experts, cpu_layer=cpu_layer)
        compute[host] = _host_compute(facts, s, rule, g, n_layers_cpu=n_layers["cpu"], out_dev=out_dev)
        if gpus == ["gpu0"] and n_layers["gpu0"] == facts.n_layer and out_dev == "gpu0" and not cpu_experts \
                and not s.tensor_overrides and s.offload_kqv:
            # one GPU holding every layer and the output: the graph inputs but the token ids and embeddings are
            # copied into its buffer (they stay in the host buffer type)
            compute["gpu0"] = _replayed(facts, s, g, n_seq, host_inputs=False) or compute["gpu0"]

    devices = []
    for d in names:
        devices.append(DeviceEstimate(d, weights[d], kv[d], compute[d], output if d == out_buf else 0,
                                      n_layers[d], recurrent_bytes=rs[d]))
    return Estimate(settings=s, n_ctx=n_ctx, n_ctx_seq=n_ctx_seq, n_seq=n_seq, kv_unified=unified,
                    n_stream=n_stream, kv_cells=kv_cells, swa_cells=swa_cells, n_batch=n_batch,
                    n_ubatch=n_ubatch, flash_attn=fa, devices=tuple(devices), flash_attn_on_cpu=fa_on_cpu)


#: The head sizes (K, V) ggml-cuda's flash-attention kernels cover -> the GQA ratio (n_head / n_head_kv) they need:
#: (at least, a multiple of) (ggml/src/ggml-cuda/fattn.cu ggml_cuda_get_best_fattn_kernel: the switch on K->ne[0];
#: its "gqa_opt" path needs a ratio of at least 2). ROCm builds the same file for HIP.
CUDA_FA_HEADS: dict[tuple[int, int], tuple[int, int]] = {
    **{(d, d): (1, 1) for d in (40, 64, 72, 80, 96, 112, 128, 256)},
    (192, 128): (8, 8),  # DeepSeek-V2/V3 GGUFs made before attn_kv_b was split (MHA, ratio 1): no kernel
    (320, 256): (32, 32),
    (512, 512): (2, 1),
    (576, 512): (2, 1),  # MLA with attn_k_b / attn_v_b: one KV head, the ratio is n_head
}
FA_KERNEL_TABLES = {"cuda": CUDA_FA_HEADS, "rocm": CUDA_FA_HEADS}


def gpu_has_fa_kernel(facts: ModelFacts, backend: str, layers: list[int] | None = None) -> bool:
    """Whether ``backend`` has a flash-attention kernel for the head sizes of every attention layer among ``layers``
    (default all). True for backends without a table here: their coverage is not modelled, nor are the cache types
    a kernel takes (ggml_cuda_fattn_kv_type_supported) or the build eras of the kernels."""
    table = FA_KERNEL_TABLES.get(backend)
    if table is None:
        return True
    for il in range(facts.n_layer) if layers is None else layers:
        if not facts.n_head_kv[il]:
            continue  # recurrent or KV-sharing layer: no attention of its own
        need = table.get(facts.head_dims(il))
        ratio = facts.n_head[il] // facts.n_head_kv[il]
        if need is None or ratio < need[0] or ratio % need[1]:
            return False
    return True


def _resolve_flash_attn(facts: ModelFacts, s: Settings, tk: int, tv: int,
                        layer_dev: list[str]) -> tuple[bool, bool, bool]:
    """(flash attention on, its ops on the CPU, V cache untransposed without it). llama_context's "auto" check
    (resolve_fused_ops, src/llama-context.cpp) compares each layer's FA op device with the layer's: a layer on a GPU
    whose backend has no kernel for its head sizes turns FA off. The cache was made before the check with
    attn_v_trans = !flash_attn, so V stays untransposed. A quantized V cache turns "auto" into "on" before the
    check (llama_init_from_model), and forced on the FA ops run on the CPU (H200, DeepSeek-V2-Lite K 192 / V 128:
    "Flash Attention not supported, set to disabled" with -ngl 2, kept with -ngl 1, the output layer alone, and
    kept with a q8_0 V cache; tests/data/llamacpp-cuda/h200-cases.jsonl)."""
    fa = _flash_attn(facts, s, tk, tv)
    on_gpu = [il for il, d in enumerate(layer_dev) if d != "cpu"]
    if not fa or not on_gpu or gpu_has_fa_kernel(facts, s.backend, on_gpu):
        return fa, False, False
    if s.flash_attn == "auto" and ggml.block_size(tv)[0] == 1:
        return False, False, True
    return True, True, False


def _v_cont_floats(facts: ModelFacts, s: Settings, cells: int, n_ubatch: int) -> float:
    """Without flash attention an untransposed V is copied transposed for the KQV product (llama-graph.cpp
    build_attn_mha: ggml_cont(ggml_transpose(v))): one layer's cells x KV heads x V head size, in the cache type,
    as f32 values per ubatch token."""
    hkv = max(facts.n_head_kv) if facts.n_head_kv else 0
    return cells * hkv * facts.head_dim_v * ggml.bytes_per_element(_type(s.cache_type_v)) / (4 * n_ubatch)


def _flash_attn(facts: ModelFacts, s: Settings, tk: int, tv: int) -> bool:
    """Whether flash attention is on, after checking that the cache types can be used with it and the model's head
    sizes. Raises BadInputError."""
    # FA auto resolves to enabled when every FA op can run on its layer's device: always on the CPU (measured:
    # CPU auto -> enabled); on a GPU see _resolve_flash_attn, which narrows this per head size.
    fa = s.flash_attn != "off"
    if not fa and ggml.block_size(tv)[0] > 1:
        raise BadInputError(f"cache type V {s.cache_type_v} needs flash attention (llama.cpp: 'quantized V cache "
                            "was requested, but this requires Flash Attention'); use --flash-attn on")
    for name, tid, hd in (("K", tk, facts.head_dim_k), ("V", tv, facts.head_dim_v)):
        blck = ggml.block_size(tid)[0]
        if blck > 1 and hd % blck:
            raise BadInputError(f"cache type {name} {ggml.type_name(tid).lower()} needs a head size that is a "
                                f"multiple of {blck}; this model's is {hd}")
    return fa


#: Architectures whose graph marks the final hidden state of every token as an output (res->t_h_nextn, for their
#: multi-token-prediction heads) before taking the rows to output (inp_out_ids) after the layer loop, unless a
#: context asks for masked NextN embeddings (src/models/openai-moe.cpp, qwen3next.cpp, qwen35.cpp, qwen35moe.cpp,
#: gemma4.cpp, step35.cpp, cohere2moe.cpp; llama-graph.cpp ggml_set_output(t_h_nextn)): that E-wide row stays live
#: through the logits. Traced on this CPU: gpt-oss-20b and qwen3-next at V + 3E; qwen3.5 records V + 3E + 1.
HIDDEN_KEPT = frozenset({"gpt-oss", "qwen3next", "qwen35", "qwen35moe", "gemma4", "step35", "cohere2moe"})
# First build with t_h_nextn (MTP support, 2026); approximate, at the latest the build llama-cpp-python 0.3.36 vendors.
HIDDEN_KEPT_SINCE = 9350


def _kept_hidden(facts: ModelFacts, s: Settings) -> bool:
    return facts.architecture in HIDDEN_KEPT and s.since(HIDDEN_KEPT_SINCE)


#: Architectures whose sliding window llama.cpp does not honour, though their configs (and for Phi-3 their GGUFs)
#: name one: Phi-3 ("Phi SWA is currently disabled", load_hparams, llama.cpp PR #13676; gpu-logs l10: one
#: 32768-cell cache for all 32 layers); starcoder2 (src/models/starcoder2.cpp sets no SWA type, and the converter
#: writes no window: H200, one full cache for every layer, tests/data/llamacpp-cuda).
SWA_IGNORED = frozenset({"phi3", "starcoder2"})


def _cache_cells(facts: ModelFacts, s: Settings, n_ctx_seq: int, n_seq: int, unified: bool,
                 n_ubatch: int) -> tuple[bool, int, int]:
    """(swa_any, swa_cells, kv_cells): whether the model has sliding-window layers llama.cpp honours, the cells of
    one stream of the SWA cache and of the full cache (0 when there is none of that kind)."""
    swa_any = facts.sliding_window > 0 and any(facts.swa_layers) and facts.architecture not in SWA_IGNORED
    swa_cells = 0
    if swa_any:
        # llama_kv_cache_iswa: size_swa = pad(min(size_base, n_swa * (unified ? n_seq : 1) + n_ubatch), 256),
        # or size_base with swa_full
        swa_cells = n_ctx_seq if s.swa_full else min(
            n_ctx_seq, pad(facts.sliding_window * (n_seq if unified else 1) + n_ubatch, kv_pad(s)))
    full_any = not swa_any or not all(facts.swa_layers)
    kv_cells = n_ctx_seq if full_any else 0
    return swa_any, swa_cells, kv_cells


def _place_weights(facts: ModelFacts, s: Settings, rule: BackendRule, names: list[str], gpus: list[str],
                   layer_dev: list[str], out_dev: str, cpu_moe: int) -> tuple[dict[str, int], list[int]]:
    """Model buffer bytes per device (file spans when mmapped), and the bytes of each expert tensor that
    --n-cpu-moe keeps on the CPU."""
    weights = dict.fromkeys(names, 0)
    cpu_experts: list[int] = []  # bytes of each expert tensor in host memory while a GPU is there (op offload)
    placed: list[tuple[str, Any]] = []  # (device, tensor)
    for t in facts.tensors:
        layer = t.layer
        if layer is not None and layer >= facts.n_layer:
            continue  # a NextN/MTP layer: llama.cpp skips its tensors (facts.py: n_layer leaves it out)
        if layer is not None:
            dev = layer_dev[layer]
            # --n-cpu-moe / --cpu-moe: an -ot "blk\.N\.ffn_(up|down|gate)_(ch|)exps=CPU" override per layer
            # (common/arg.cpp)
            if layer < cpu_moe and "_exps" in t.name:
                dev = "cpu"
            if dev == "cpu" and gpus and "_exps" in t.name:
                # expert tensors in host memory (--n-cpu-moe, or a layer left on the CPU): candidates for the
                # scheduler's op offload (ggml_backend_sched: a big batch runs on the GPU, the weight copied there)
                cpu_experts.append(t.nbytes)
        elif t.name.startswith(OUTPUT_SIDE):  # output.weight, output_norm.* ... follow the output layer
            dev = out_dev
        elif t.name.startswith(FIRST_LAYER_SIDE) and facts.n_layer:
            dev = layer_dev[0]
        else:
            dev = "cpu"  # token_embd and other input-side tensors stay on the CPU
        weights[dev] += t.nbytes
        placed.append((dev, t))
    embd = facts.tensor("token_embd.weight")
    copy_first = facts.architecture in OUTPUT_COPY_FIRST and not s.mmap
    if facts.tied_embeddings and (out_dev != "cpu" or copy_first) and embd is not None:
        # TENSOR_DUPLICATED: a second copy of the embedding for the output
        weights[out_dev] += embd.nbytes
        placed.append((out_dev, embd))
    if s.mmap and gpus:
        mapped = ["cpu"] + (gpus if rule.mapped_weights else [])
        for dev, span in mapped_spans(placed, mapped).items():
            weights[dev] = span
    return weights, cpu_experts


def _place_caches(facts: ModelFacts, s: Settings, names: list[str], layer_dev: list[str], *, swa_any: bool,
                  swa_cells: int, kv_cells: int, iswa: bool, n_stream: int, n_seq: int, tk: int,
                  tv: int, v_trans: bool = False) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """(KV cache bytes, recurrent state bytes, repeating layers) per device; ``v_trans``: the cache was made
    without flash attention."""
    kv = dict.fromkeys(names, 0)
    rs = dict.fromkeys(names, 0)
    n_layers = dict.fromkeys(names, 0)
    v_less = s.since(MLA_V_LESS_SINCE)
    for il in range(facts.n_layer):
        cells = swa_cells if facts.swa_layers[il] and swa_any and iswa else (kv_cells or swa_cells)
        dev = layer_dev[il] if s.offload_kqv else "cpu"
        kv[dev] += kv_layer_bytes(facts, il, cells, n_stream, tk, tv, v_less, v_trans)
        # the recurrent state is placed like the KV cache: on its layer's device when offload_kqv, else the CPU
        # (llama_memory_recurrent: "dev = ..." per layer, offload ? model.dev_layer(i) : cpu)
        rs[dev] += recurrent_layer_bytes(facts, il, n_seq)
        n_layers[layer_dev[il]] += 1
    return kv, rs, n_layers


@dataclasses.dataclass(frozen=True)
class _Graph:
    """What one ubatch's compute graph spans: its tokens, the cells of one stream of the full and SWA caches, the
    cells of its KQ masks, flash attention, the KV streams and the pipeline-parallel copies of its inputs."""

    n_ubatch: int
    kv_cells: int
    swa_cells: int
    mask_cells: int
    flash_attn: bool
    n_stream: int
    copies: int
    fa_on_cpu: bool = False  # flash attention forced on with head sizes the GPU backend has no kernel for
    v_cont: float = 0.0  # f32 values per token of the contiguous V^T copy FA-off attention makes of an untransposed V


#: The smallest batch whose ops of CPU-resident weights the GPU backend takes over (ggml-cuda.cu
#: ggml_backend_cuda_device_offload_op: op_offload_min_batch_size, 32 unless GGML_OP_OFFLOAD_MIN_BATCH says otherwise);
#: below it they run on the CPU and no weight is copied.
OP_OFFLOAD_MIN_BATCH = 32


def _gpu_compute(facts: ModelFacts, s: Settings, rule: BackendRule, g: _Graph, d: str, *, first: bool,
                 n_layers: int, out_dev: str, cpu_experts: list[int], cpu_layer: int = 0) -> int:
    """Compute buffer of GPU ``d`` holding ``n_layers`` repeating layers (and the output layer if it is
    ``out_dev``); ``first``: the first GPU with layers, where the scheduler offloads ops of CPU-resident weights."""
    moe_batched = s.since(MOE_BATCHED_SINCE)
    fused = s.since(SWIGLU_FUSED_SINCE)
    extra: list[int] = []
    if rule.op_offload and first and g.n_ubatch >= OP_OFFLOAD_MIN_BATCH:
        # ggml_backend_sched runs big-batch ops of CPU-resident weights on the first GPU that accepts them
        # (offload_op: batch >= 32); the weight is copied into this GPU's compute buffer for the op.
        if out_dev == "cpu":
            # logits matmul of the CPU-resident output layer: its weight + the f32 logits (gpu-logs l06:
            # 985.20 MiB, l13: 791.61 MiB, both = output weight + 4*ub*(V + E))
            w_out = sum(t.nbytes for t in facts.tensors if t.name == "output.weight") or (
                facts.tensor("token_embd.weight").nbytes if facts.tensor("token_embd.weight") else 0)
            extra.append(w_out + 4 * g.n_ubatch * (facts.n_vocab + facts.n_embd))
        if cpu_experts:
            # one CPU expert tensor at a time, with the MoE activations of one layer
            extra.append(max(cpu_experts) + gpu_compute_bytes(
                facts, n_ubatch=g.n_ubatch, kv_cells=g.kv_cells, mask_cells=g.mask_cells, flash_attn=g.flash_attn,
                layers=True, output=False, moe_batched=moe_batched, copies=g.copies, attention=False))
        if cpu_layer:
            # a dense CPU layer: every weight its offloaded ops read is an input of the GPU split, copied in, and
            # allocated, at the split's start (ggml-backend.cpp ggml_backend_sched_split_graph: "allocated at the
            # start of the split"), so one layer's weights are in the buffer together (H200, starcoder2-7b with
            # 1 to 32 CPU layers: 191.03 MiB = its largest layer, 138.10, + F + 2E)
            extra.append(cpu_layer + _offload_activation_bytes(facts, g.n_ubatch))
    base = gpu_compute_bytes(facts, n_ubatch=g.n_ubatch, kv_cells=g.kv_cells or g.swa_cells,
                             mask_cells=g.mask_cells, flash_attn=g.flash_attn, layers=n_layers > 0,
                             output=out_dev == d, moe_batched=moe_batched, copies=g.copies,
                             swiglu_fused=fused, v_cont=g.v_cont, kept_hidden=_kept_hidden(facts, s))
    return max([base] + extra) if (n_layers or out_dev == d) else max(extra, default=0)


#: Builds since which the graph galloc.llama_compute_bytes replays is llama.cpp's: the embeddings input beside the
#: token ids, the f16 mask with flash attention, set_rows cache writes, the fused SwiGLU.
REPLAY_SINCE = max(EMBD_INPUT_SINCE, MASK_F16_SINCE, SET_ROWS_SINCE, SWIGLU_FUSED_SINCE)
#: Architectures whose graph galloc builds -> whether they norm Q and K per head, None where the file decides (the
#: norms are optional tensors): src/models/llama.cpp, qwen2.cpp, qwen3.cpp, qwen3moe.cpp, glm4-moe.cpp (Q/K/V biases
#: are added in place and move nothing), deepseek2.cpp (DeepSeek-V2-Lite layouts: attn_kv_b whole, no Q LoRA),
#: gemma2.cpp, gemma3.cpp, phi3.cpp (dense Phi-3: fused QKV and gate/up products), smollm3.cpp (every fourth layer
#: without RoPE), starcoder2.cpp (LayerNorm, a plain GELU FFN) and openai-moe.cpp (gpt-oss: biased router and
#: experts, the chosen logits softmaxed, the final hidden state kept) and llama4.cpp (chunked-attention layers on an
#: iSWA cache, every fourth layer without RoPE, experts weighted on their input).
REPLAYED = {"llama": False, "qwen2": False, "qwen3": True, "qwen3moe": True, "glm4moe": None, "deepseek2": False,
            "gemma2": False, "gemma3": True, "phi3": False, "smollm3": False, "starcoder2": False, "gpt-oss": False,
            "llama4": False}
#: Of those, the Gemma layers (scaled embeddings and Q, norms after the attention and the FFN): src/models/gemma2.cpp,
#: gemma3.cpp.
GEMMA = ("gemma2", "gemma3")
#: Of those, the ones with sliding-window layers on an iSWA cache.
REPLAYED_ISWA = GEMMA + ("gpt-oss", "llama4")
#: The replay's size bound: about this many graph nodes per layer plus two per expert used (galloc builds each
#: expert's output view and sum), and the most it builds (DeepSeek-V3's 61 layers x 8 experts need about 4k;
#: the bound keeps a hostile header's estimate under a second).
REPLAY_NODES_PER_LAYER = 64
REPLAY_MAX_NODES = 50_000
#: Backends built from ggml-cuda, whose graph_optimize adds allocation dependencies for its MoE fusions.
FUSION_DEPS_BACKENDS = ("cuda", "rocm")


def _replayed(facts: ModelFacts, s: Settings, g: _Graph, n_seq: int, host_inputs: bool) -> int:
    """The compute buffer from llama.cpp's own allocator replayed on its graph (advisor.gguf.galloc) where that
    graph is modelled node by node (REPLAYED, without recurrent layers, one head size per layer kind and one dense
    FFN width) on one device, any KV streams and cache types, a current build; else 0, and the phases of
    compute_bytes / gpu_compute_bytes apply."""
    if facts.n_layer * (facts.n_expert_used + REPLAY_NODES_PER_LAYER) > REPLAY_MAX_NODES:
        return 0  # a header no released model has (hostile or corrupt): the closed form, in bounded time
    moe = _moe_shape(facts)
    deps = _fusion_deps(facts, s, moe) if not host_inputs else (False, False)
    if moe and moe.norm_w and not host_inputs and n_seq > 1 and g.n_stream == 1 and any(deps):
        # H200, Qwen3-30B-A3B with 4 sequences in one unified cache: the plan is the one without the top-k
        # fusion's dependencies (300.75 MiB), for a reason not traced, while GLM-4.5-Air and DeepSeek-V2-Lite,
        # whose files leave the weights unnormalised, keep them there (451.02, 260.39), and all three keep them
        # with a stream per sequence; the phases take that case
        return 0
    mla = _mla_shape(facts)
    gemma = facts.architecture in GEMMA
    plain = (facts.architecture in REPLAYED and (moe is not None or not facts.n_expert)
             and (not facts.sliding_window or facts.architecture in SWA_IGNORED
                  or (facts.architecture in REPLAYED_ISWA and s.since(ISWA_SINCE)))
             and not facts.is_recurrent and (not facts.kv_lora_rank or mla)
             and (_ffn_kind(facts) == "gated" or (facts.architecture == "phi3" and not facts.n_expert)
                  or (facts.architecture == "starcoder2" and _ffn_kind(facts) == "gelu"))
             and len(set(facts.n_head)) == 1 and len(set(facts.n_head_kv)) == 1
             and (facts.head_dim_k == facts.head_dim_v or mla)
             and len({w for w in facts.n_ff if w}) == 1)  # one dense FFN width (MoE layers may say 0)
    # several KV streams (one per sequence) split the batch and the mask per stream and build the same tensors:
    # build_attn_mha views Q as [.., n_tokens/n_stream, n_stream], the mask is cells x n_tokens/n_stream per stream
    simple = (g.copies == 1 and (not g.fa_on_cpu or not host_inputs)
              and (not g.swa_cells or facts.architecture in REPLAYED_ISWA)
              and s.since(REPLAY_SINCE))
    if not (plain and simple):
        return 0
    qk_norm = REPLAYED[facts.architecture]
    if qk_norm is None:
        qk_norm = facts.tensor("blk.0.attn_q_norm.weight") is not None
    phi3, starcoder2 = facts.architecture == "phi3", facts.architecture == "starcoder2"
    style = galloc.Style(qk_norm=qk_norm, q_scale=gemma or phi3, gemma=gemma, residual_first=phi3,
                         fused_qkv=facts.tensor("blk.0.attn_qkv.weight") is not None,
                         fused_up=_ffn_kind(facts) == "fused_up", layer_norm=starcoder2, plain_ffn=starcoder2,
                         nope_every=_nope_every(facts), kept_hidden=_kept_hidden(facts, s),
                         nope_scale=facts.architecture == "llama4" and facts.sliding_window > 0,
                         kq_l2=facts.architecture == "llama4" and facts.n_expert != 128)
    return galloc.llama_compute_bytes(facts.n_embd, facts.n_head[0], facts.n_head_kv[0], facts.head_dim_k,
                                      max(facts.n_ff), facts.n_vocab, facts.n_layer, g.n_ubatch, g.kv_cells,
                                      g.flash_attn, host_inputs, style=style, moe=moe, alloc_deps=deps,
                                      head_dim_v=facts.head_dim_v, fa_elsewhere=g.fa_on_cpu,
                                      v_cont=_latent_copy(facts, s, g.kv_cells) if mla and mla.absorbed
                                      else round(g.v_cont * 4 * g.n_ubatch),
                                      swa=(facts.swa_layers, g.swa_cells) if g.swa_cells else ((), 0),
                                      rot=_attn_rot(facts, s), mla=mla)


def _latent_copy(facts: ModelFacts, s: Settings, cells: int) -> int:
    """Bytes of one layer's latent copied transposed for KQV without flash attention: the K cache's cells x
    kv_lora_rank in its type (build_attn_mha: V, a view of the cached K, is not transposed)."""
    return round(cells * facts.kv_lora_rank * ggml.bytes_per_element(_type(s.cache_type_k)))


def _attn_rot(facts: ModelFacts, s: Settings) -> tuple[int, int]:
    """The sizes of the Hadamard rotations a quantized cache applies to K and to V, 0 where none
    (llama-kv-cache.cpp: K and V each when its cache type is quantized and its head size a multiple of 64;
    build_input_k_rot takes the largest power of two from 64 that divides the K head, build_input_v_rot 64). An
    absorbed-MLA file's K-only cache is not rotated (llama-graph.cpp build_attn for llm_graph_input_attn_k)."""
    if not s.since(ATTN_ROT_SINCE) or facts.is_mla:
        return 0, 0
    sizes = []
    for kind, head in ((s.cache_type_k, facts.head_dim_k), (s.cache_type_v, facts.head_dim_v)):
        sizes.append(64 if ggml.block_size(_type(kind))[0] > 1 and head and head % 64 == 0 else 0)
    n = sizes[0]
    while n and facts.head_dim_k % (2 * n) == 0:
        n *= 2
    return n, sizes[1]


def _mla_shape(facts: ModelFacts) -> galloc.Mla | None:
    """DeepSeek's latent attention as galloc builds it (deepseek2.cpp), None for other files: absorbed where the
    file splits attn_k_b / attn_v_b (is_mla; Q through its LoRA where it has attn_q_a), expanded where it keeps
    attn_kv_b whole and has one attn_q (the V2-Lite layout)."""
    meta, arch = facts.metadata, facts.architecture
    if arch != "deepseek2" or not facts.kv_lora_rank:
        return None
    rope = int(meta.get(f"{arch}.rope.dimension_count", 0) or 0)
    if facts.is_mla:
        q_lora = int(meta.get(f"{arch}.attention.q_lora_rank", 0) or 0)
        return galloc.Mla(facts.kv_lora_rank, rope, facts.key_length_mla, facts.value_length_mla,
                          q_lora if facts.tensor("blk.0.attn_q_a.weight") is not None else 0)
    if facts.tensor("blk.0.attn_q.weight") is None or facts.tensor("blk.0.attn_kv_b.weight") is None:
        return None
    return galloc.Mla(facts.kv_lora_rank, rope, facts.head_dim_k, facts.head_dim_v, absorbed=False)


def _nope_every(facts: ModelFacts) -> int:
    """Every how many layers one runs without RoPE, 0 for none: smollm3.cpp sets 4; llama4.cpp keeps the default 4
    (llama-hparams.h n_no_rope_layer_step) unless the file's sliding window is 0 (then every layer ropes)."""
    if facts.architecture == "smollm3" or (facts.architecture == "llama4" and facts.sliding_window > 0):
        return 4
    return 0


def _moe_shape(facts: ModelFacts) -> galloc.Moe | None:
    """The expert layers as galloc builds them, None for a dense model or one whose routing it does not build.
    Qwen3-MoE passes softmax gating and normalised weights (qwen3moe.cpp). GLM-4.5 and DeepSeek-V2/V3 take the
    gating, the weight normalisation and scale and the leading dense layers from the file (load_arch_hparams in
    glm4-moe.cpp and deepseek2.cpp: unset gating is sigmoid for GLM-4.5 and for DeepSeek-V2's GLM-4.7-Lite shape,
    softmax otherwise; unset normalisation is none), a selection bias where the file has exp_probs_b, expert groups
    where it sets them, and n_expert_shared shared experts of the expert width. gpt-oss and Llama 4 route as their
    graphs fix (openai-moe.cpp, llama4.cpp)."""
    if not facts.n_expert:
        return None
    shape = galloc.Moe(facts.n_expert, facts.n_expert_used, facts.n_ff_exp)
    arch, meta = facts.architecture, facts.metadata
    # expert groups, read for every architecture (llama-model.cpp load_hparams); built for GLM-4.5 and DeepSeek
    groups = (int(meta.get(f"{arch}.expert_group_count", 0) or 0),
              int(meta.get(f"{arch}.expert_group_used_count", 0) or 0))
    if groups[0] > 1 and (arch not in ("glm4moe", "deepseek2") or facts.n_expert % groups[0]
                          or not 0 < groups[1] < groups[0]):
        return None  # not built, or a file llama-model.cpp load_hparams refuses
    if arch == "qwen3moe" and not facts.n_expert_shared:
        return shape
    if arch == "gpt-oss":  # openai-moe.cpp: SOFTMAX_WEIGHT gating, no normalisation, biased router and experts
        return dataclasses.replace(shape, norm_w=False, weight_softmax=True, biases=True)
    if arch == "llama4":  # llama4.cpp: sigmoid gating chosen on the logits, the input weighted, a shared expert
        layers = tuple(facts.tensor(f"blk.{il}.ffn_gate_inp.weight") is not None for il in range(facts.n_layer))
        return dataclasses.replace(shape, sigmoid=True, norm_w=False, weight_before=True,
                                   n_ff_shexp=facts.n_ff_exp * facts.n_expert_shared, moe_layers=layers)
    if arch not in ("glm4moe", "deepseek2"):
        return None
    gating = int(meta.get(f"{arch}.expert_gating_func", 0) or 0)
    if not gating:  # llama-hparams.h: 0 unset, 1 softmax, 2 sigmoid
        glm_lite = arch == "deepseek2" and facts.n_layer in (47, 48) and facts.n_vocab == 154880
        gating = 2 if arch == "glm4moe" or glm_lite else 1
    if gating not in (1, 2):
        return None
    lead = int(meta.get(f"{arch}.leading_dense_block_count", 0) or 0)
    scale = float(meta.get(f"{arch}.expert_weights_scale", 0.0) or 0.0)
    return dataclasses.replace(
        shape, sigmoid=gating == 2, prob_bias=facts.tensor(f"blk.{lead}.exp_probs_b.bias") is not None,
        norm_w=bool(meta.get(f"{arch}.expert_weights_norm", False)), scale=scale not in (0.0, 1.0),
        n_ff_shexp=facts.n_ff_exp * facts.n_expert_shared, dense_lead=lead,
        groups=groups if groups[0] > 1 else (0, 0))


def _fusion_deps(facts: ModelFacts, s: Settings, moe: galloc.Moe | None) -> tuple[bool, bool]:
    """Whether ggml-cuda fuses an MoE layer's top-k routing and its weighted expert sum, and so adds their
    allocation dependencies: the top-k kernel exists for a power of two up to 512 experts, or 288 or 576
    (topk-moe.cu ggml_cuda_should_use_topk_moe), and graph_optimize adds its dependencies only where the gating
    comes before the top-k (not for a softmax of the chosen logits, args.delayed_softmax); the sum for 2 to 15
    experts used (ggml-cuda.cu MOE_WEIGHTED_REDUCTION_MAX_EXPERTS)."""
    if s.backend not in FUSION_DEPS_BACKENDS or not s.cuda_fusion or not facts.n_expert:
        return False, False
    n = facts.n_expert
    if moe and moe.weight_before:  # the top-k reads the logits, not the gating, and no product follows the sum
        return False, False
    topk = ((n & (n - 1) == 0 and n <= 512) or n in (288, 576)) and not (moe and moe.weight_softmax)
    return topk, 2 <= facts.n_expert_used <= 15


def _host_layer_bytes(facts: ModelFacts, layer_dev: list[str]) -> int:
    """The weight bytes of the largest dense layer left in host memory, 0 for MoE models (their expert products
    copy only the experts a batch uses: the cpu_experts term)."""
    if facts.n_expert:
        return 0
    per_layer: dict[int, int] = {}
    for t in facts.tensors:
        if t.layer is not None and t.layer < facts.n_layer and layer_dev[t.layer] == "cpu":
            per_layer[t.layer] = per_layer.get(t.layer, 0) + t.nbytes
    return max(per_layer.values(), default=0)


def _offload_activation_bytes(facts: ModelFacts, n_ubatch: int) -> int:
    """What sits beside a CPU layer's weight copies in the GPU's buffer at its FFN's first product: the residual and
    the normed input (E each) and the up (and gate) output, F each."""
    ffn_outputs = 1 if _ffn_kind(facts) == "gelu" else 2
    return 4 * n_ubatch * (2 * facts.n_embd + ffn_outputs * max(facts.n_ff or [0]))


def v_width_max(facts: ModelFacts) -> int:
    """The widest per-layer V row of the KV cache (llama_hparams::n_embd_v_gqa_max): KV heads x V head size."""
    return max((facts.n_head_kv[il] * facts.head_dims(il)[1] for il in range(facts.n_layer)
                if facts.n_head_kv[il]), default=0)


def _host_compute(facts: ModelFacts, s: Settings, rule: BackendRule, g: _Graph, *, n_layers_cpu: int,
                  out_dev: str) -> int:
    """The CPU side's compute buffer when there are GPUs."""
    # The CPU side's compute buffer (in the host buffer type when the backend has one): the graph inputs that
    # live on the CPU: the token embeddings (get_rows of token_embd on the CPU) and the f32 KQ masks, one per
    # pipeline copy (gpu-logs l02 15.01 MiB = 4*ub*(E + kv); l20 78.02 MiB with 4 copies); with CPU layers their
    # own working set may be larger (CPU coefficients).
    mask_bytes = 2 if g.flash_attn and s.since(MASK_F16_SINCE) else 4
    # Current builds declare an embeddings input next to the token ids and select one of the two paths
    # (src/llama-graph.cpp build_inp_embd, PR #18550): both n_embd-wide f32 tensors are live on the host side
    # (measured on an H200, tests/data/llamacpp-cuda/h200-memprobe.jsonl: 4*ub*2E + masks with full, partial and
    # no offload; gpu-logs l24 48.01 MiB = 4*ub*2E + 2*ub*kv).
    embd_inputs = 2 if s.since(EMBD_INPUT_SINCE) else 1
    inputs = g.n_ubatch * (4 * embd_inputs * facts.n_embd + mask_bytes * g.copies * g.mask_cells)
    per_layer = facts.tensor("per_layer_token_embd.weight")
    if per_layer is not None:
        # Gemma 3n's per-layer embeddings: get_rows of per_layer_token_embd (an input-side tensor, on the CPU), one
        # f32 row of n_embd_altup x n_layer per token (src/models/gemma3n.cpp get_per_layer_inputs); H200:
        # 8960 floats per token more on the host at ub 256, 512 and 2048 (tests/data/llamacpp-cuda)
        inputs += 4 * g.n_ubatch * per_layer.shape[0]
    if g.fa_on_cpu:
        # the FA op on the CPU: one layer's K and V cache views and its query copied to the host (H200,
        # DeepSeek-V2-Lite GGUF with attn_kv_b, K 192 / V 128 and 16 KV heads: 58.01, 102.01, 190.01, 366.01 MiB at
        # 4096-32768 cells = 4*ub*(2E + mask + H*Dk) + cells*Hkv*(Dk + Dv)*2 exactly, ub 256-2048, f16 and q8_0;
        # the one architecture measured: models with per-layer head sizes take the largest)
        hkv = max(facts.n_head_kv) if facts.n_head_kv else 0
        per_cell = hkv * (facts.head_dim_k * ggml.bytes_per_element(_type(s.cache_type_k))
                          + facts.head_dim_v * ggml.bytes_per_element(_type(s.cache_type_v)))
        inputs += int((g.kv_cells or g.swa_cells) * g.n_stream * per_cell)  # the views span every stream
        inputs += 4 * g.n_ubatch * (max(facts.n_head) if facts.n_head else 0) * facts.head_dim_k
    if s.flash_attn == "off" and s.since(SET_ROWS_SINCE):
        # without flash attention V is stored transposed, and ggml_set_rows scatters it element by element: an
        # int64 index per token and V value, one per cache (src/llama-kv-cache.cpp build_input_v_idxs:
        # n_tokens * n_embd_v_gqa_max when v_trans; measured on the H200: +8*ub*n_embd_v_gqa per cache kind).
        # The cache is created before "auto" is resolved, with attn_v_trans = !cparams.flash_attn = false
        # (src/llama-context.cpp), so FA that auto turns off keeps V untransposed (H200: no index input)
        inputs += 8 * g.n_ubatch * v_width_max(facts) * g.copies * ((g.kv_cells > 0) + (g.swa_cells > 0))
    cpu_layers = compute_bytes(facts, n_ubatch=g.n_ubatch, kv_cells=g.kv_cells, swa_cells=g.swa_cells,
                               flash_attn=g.flash_attn, n_layers_here=n_layers_cpu, has_output=out_dev == "cpu",
                               n_stream=g.n_stream, kept_hidden=_kept_hidden(facts, s)
                               ) if (n_layers_cpu or out_dev == "cpu") else 0
    return max(inputs, 0 if rule.op_offload else cpu_layers)


# Architectures whose loader creates the tied output (TENSOR_DUPLICATED) before token_embd itself, so without mmap
# the output is a second copy even when both stay on the CPU (src/models/gemma3n.cpp and gemma4.cpp
# load_arch_tensors; gemma3 and the others create token_embd first and the duplicate then shares it). Measured on
# this CPU without mmap: gemma-3n-e4b +420.41 MiB, its Q6_K token_embd (tests/data/llamacpp-cpu/memprobe-cpu.jsonl);
# a Gemma 4 E4B header (tests/gemma4_header.py) +525.0 MiB, its Q6_K token_embd (gemma4-cpu.jsonl). With mmap both
# map the same file bytes (llama-cpp-python: gemma-3n 4614.22 MiB either way; Gemma 4's CPU_Mapped 4199.86 MiB, the
# file's tensor data, beside CPU_REPACK's 2160.70).
OUTPUT_COPY_FIRST = frozenset({"gemma3n", "gemma4"})

# Layer-less rope tensors (rope_freqs, rope_factors_long/short) are created inside the layer loop of load_tensors with
# layer 0's buffer type, TENSOR_DUPLICATED for the others (src/llama-model.cpp create_tensor(tn(LLM_TENSOR_ROPE_FREQS,
# "weight", i), ..., i != 0 ? TENSOR_DUPLICATED : 0)): they live with the first layer.
ROPE_TENSORS = ("rope_freqs", "rope_factors")
#: Global tensors that llama.cpp places with the output layer (LLM_TENSOR_LAYER_OUTPUT in src/llama-arch.cpp's
#: LLM_TENSOR_INFOS): the output projection and norm, classifier heads, and Gemma 3n's AltUp projections (H200:
#: 48.00 MiB more on the GPU whenever the output layer is there, tests/data/llamacpp-cuda).
OUTPUT_SIDE = ("output", "cls", "altup_proj", "altup_unembd_proj", "dense_2", "dense_3")
#: Global tensors created with layer index 0 (tn(..., 0)), so they sit with the first repeating layer: the rope
#: tables, and Gemma 3n's per-layer input projection and its norm (src/models/gemma3n.cpp load_arch_tensors;
#: H200: 35.00 MiB on the GPU under full offload, on the CPU with layer 0 there).
FIRST_LAYER_SIDE = ROPE_TENSORS + ("per_layer_model_proj", "per_layer_proj_norm")


def mapped_spans(placed: list[tuple[str, Any]], devices: list[str]) -> dict[str, int]:
    """The "model buffer" of each mmapped device: per file, the byte span from the first to the end of the last of
    its tensors (llama_model_loader::get_mapping_range, then ggml_backend_cpu_buffer_from_ptr for CPU_Mapped or
    ggml_backend_dev_buffer_from_host_ptr for Metal_Mapped in llama_model::load_tensors), so tensors of other
    devices lying in between are counted too: the file order decides. Devices with a tensor of unknown offset (facts
    not read from a GGUF header) keep their tensor sum."""
    spans: dict[str, dict[int, tuple[int, int]]] = {}
    unknown: set[str] = set()
    for dev, t in placed:
        if dev not in devices:
            continue
        if t.offset < 0:
            unknown.add(dev)
            continue
        lo, hi = spans.setdefault(dev, {}).get(t.file_index, (t.offset, t.offset))
        spans[dev][t.file_index] = (min(lo, t.offset), max(hi, t.offset + t.nbytes))
    return {dev: sum(hi - lo for lo, hi in files.values()) for dev, files in spans.items() if dev not in unknown}


def _backend(s: Settings) -> BackendRule:
    if s.backend is None:
        return GENERIC_GPU if s.n_gpus > 0 else backend_rules()["cpu"]
    rules = backend_rules()
    if s.backend not in rules:
        raise BadInputError(f"unknown backend {s.backend!r} (one of {', '.join(sorted(rules))})")
    return rules[s.backend]


def mla_q_floats(facts: ModelFacts) -> int:
    """f32 values per token live while an MLA layer builds its absorbed query (llm_build_deepseek2, MLA GGUFs with
    attn_k_b / attn_v_b: key_length_mla set): the q_b projection (n_head x key_length_mla), q_nope absorbed through
    wk_b (n_head x kv_lora_rank) and the concatenated query (n_head x (kv_lora_rank + rope) = n_head x head_dim_k),
    all live at the concat, which is the attention phase's peak with flash attention (its output, n_head x
    kv_lora_rank, is smaller than the first two). gpu-logs l18 (DeepSeek-V3, ub 1024, kv 16384, FA): 788.00 MiB on
    each GPU without the output layer = 4*ub*(this + mask/2 + 4E) within 0.5 %. 0 for other models."""
    if not (facts.key_length_mla and facts.kv_lora_rank):
        return 0
    H = max(facts.n_head) if facts.n_head else 0
    return H * (facts.key_length_mla + facts.kv_lora_rank + facts.head_dim_k)


def _fa_sequence(facts: ModelFacts) -> float:
    """The largest live set of a llama-style attention block with flash attention, in the order ggml builds it
    (src/models/llama.cpp, llama-graph.cpp build_attn): the residual and the normed input stay live while Q is
    multiplied and roped (2E + 2Hq), then V and K are multiplied (2E + Hq + Hk + Hv), the normed input is freed and
    K roped (E + Hq + Hv + 2Hk), K and V are written to the cache and the FA output taken (E + Hq + Hout). The roped
    K reuses the normed input's freed block only when it fits there (ggml-alloc's best fit): a K wider than E goes
    on top, with that block a hole below it."""
    E = facts.n_embd
    H = max(facts.n_head) if facts.n_head else 0
    hkv = max(facts.n_head_kv) if facts.n_head_kv else 0
    Hq, Hk = H * facts.head_dim_k, hkv * facts.head_dim_k
    Hv, Hout = hkv * facts.head_dim_v, H * facts.head_dim_v
    q_roped = 2 * E + 2 * Hq
    kv_made = 2 * E + Hq + Hk + Hv
    k_roped = (E if Hk <= E else 2 * E) + Hq + Hv + 2 * Hk
    fa_out = E + Hq + Hout
    return max(q_roped, kv_made, k_roped, fa_out)


def gpu_compute_bytes(facts: ModelFacts, *, n_ubatch: int, kv_cells: int, mask_cells: int, flash_attn: bool,
                      layers: bool, output: bool, moe_batched: bool = True, copies: int = 1,
                      attention: bool = True, swiglu_fused: bool = True, v_cont: float = 0.0,
                      kept_hidden: bool = False) -> int:
    """Compute buffer of one GPU device: the peak over its phases, in f32 values per ubatch token.

    Same phases as the CPU's ``compute_bytes`` with the coefficients the GPU logs show (E = n_embd, F = n_ff,
    V = n_vocab, H = n_head, kv = cells of one stream, mask = mask cells of all cache kinds):
      logits            : V + E (CUDA/Metal Llama-3-8B 258.50 MiB = 4*ub*(V + E); gpu-logs l02, l04,
                          l09, l11 exactly)
      attention, FA off : kv*H (KQ, soft_max in place) + mask (f32) + 4E (Mistral-7B 164.00 and
                          2144.00 MiB exactly; gpu-logs l19, l20)
      attention, FA on  : mask/2 (the mask is f16) + the attention block's largest live set in graph order
                          (_fa_sequence; H200 small-vocabulary models: MHA mask/2 + 5E, GQA mask/2 + 4E exactly)
      FFN               : 3F + mask + 4E (2F before SWIGLU_FUSED_SINCE); MoE 3 * F_exp * n_used + 2 * n_expert;
                          before MOE_BATCHED_SINCE one used expert at a time: 3F (gpu-logs l26); phi3/chatglm's
                          fused up is 2F + F = 3F as well (gpu-logs l10: 108.01 MiB)
    With pipeline parallelism the mask is held once per copy.
    """
    E = facts.n_embd
    H = max(facts.n_head) if facts.n_head else 0
    mask = copies * mask_cells * (0.5 if flash_attn else 1.0)
    phases = [0.0]
    if layers:
        if attention:
            mla = mla_q_floats(facts)
            fa_attn = mask + (4 * E + mla if mla else _fa_sequence(facts))
            # absorbed MLA without flash attention: the KQ scores on top of the query chain, as on the CPU
            # (H200, DeepSeek-V3.1: 1401.02 and 1216.51 MiB, within 0.6 %)
            phases.append(fa_attn if flash_attn else kv_cells * H + mask + 4 * E + mla + v_cont)
        f_exp = facts.n_ff_exp or max(facts.n_ff)  # 2024 Mixtral GGUFs have no expert_feed_forward_length
        if facts.n_expert:
            ff = (3 * f_exp * facts.n_expert_used if moe_batched else 3 * f_exp) + 2 * facts.n_expert
            if facts.n_expert_shared:
                ff = max(ff, 3 * max(facts.n_ff))
            phases.append(ff + mask + 4 * E)
        elif _ffn_kind(facts) == "gelu":
            # up and its GELU and the mask, as on the CPU (compute_bytes): starcoder2-7b on the H200, 114.00 MiB
            # = V + 2E at 4096 to 32768 cells (2F + mask + 4E would be 140 MiB at 32768)
            phases.append(2 * max(facts.n_ff) + mask)
        else:
            phases.append((3 if swiglu_fused else 2) * max(facts.n_ff) + mask + 4 * E)
    if output:
        # one E row less than the CPU's logits phase (V + 2E there), as for every dense model the H200 recorded;
        # with output_norm.bias one more (starcoder2: V + 2E on the H200, V + 3E on the CPU; the only LayerNorm
        # model with a bias that was measured, the others are assumed alike)
        norm_bias = 1 if facts.tensor("output_norm.bias") is not None else 0
        phases.append(facts.n_vocab + (1 + norm_bias + kept_hidden) * E)
    return int(4 * n_ubatch * max(phases))
