"""Memory estimate for llama.cpp from GGUF facts: weights, KV cache, compute and output buffers per device.

Pure functions, no I/O. Each rule cites llama.cpp (file/function) or shared/notes/memory.md (§) or a measurement
against llama-cpp-python 0.3.36's llama.cpp on this project's CPU machine (tests/test_llamacpp_accuracy.py,
benchmarks/estimate_accuracy.py reproduce them).

What is modelled:
- context: n_ctx 0 = trained context; padded to 256; per-slot (non-unified) or unified cells (§2.2,
  llama_context::llama_context).
- KV cache: per layer n_stream * cells * (row(type_k, n_head_kv*head_k) + row(type_v, n_head_kv*head_v)),
  sliding-window layers with the SWA cell count (§2.3, llama_kv_cache / llama_kv_cache_iswa).
- weights per device for n_gpu_layers: token_embd on the CPU, the output layer offloaded first, then the last
  repeating layers (§2.4, llama_model::load_tensors); a tied output duplicates token_embd on the GPU.
- output buffer: n_vocab * 4 bytes per sequence (§2.6, llama_context::output_reserve).
- compute buffer: the peak of three phases of one layer's graph (attention, FFN, logits), in floats per ubatch
  token; coefficients measured on the CPU backend (see ``compute_bytes``).

Not modelled: recurrent/hybrid state (Mamba, RWKV), multi-GPU pipeline-parallel copies, CUDA context/pool memory
(outside every buffer; llama.cpp --fit keeps a 1 GiB margin for it, §2.5), server prompt cache (§2.7).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from advisor import ggml
from advisor.errors import BadInputError
from advisor.facts import ModelFacts

FlashAttn = Literal["on", "off", "auto"]

CTX_PAD = 256  # llama_context: cparams.n_ctx = GGML_PAD(n_ctx, 256) (§2.2); SWA cache also padded to 256 (§2.3)
PARALLEL_AUTO = 4  # llama-server: -np -1 (auto) -> 4 slots with kv_unified = true (§2.1, tools/server/server.cpp)
MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Settings:
    """llama.cpp run settings; the defaults are llama-server's (notes/memory.md §2.1, common/common.h)."""

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

    def resolved_parallel(self) -> tuple[int, bool]:
        """(n_seq_max, kv_unified) after llama-server's auto rule."""
        if self.n_parallel < 0:
            return PARALLEL_AUTO, True if self.kv_unified is None else self.kv_unified
        return max(1, self.n_parallel), bool(self.kv_unified)


@dataclasses.dataclass(frozen=True)
class DeviceEstimate:
    device: str  # "cpu", "gpu0", ...
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    output_bytes: int
    n_layers: int  # repeating layers whose weights live here

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.compute_bytes + self.output_bytes


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

    @property
    def weights_bytes(self) -> int:
        return sum(d.weights_bytes for d in self.devices)

    @property
    def kv_cache_bytes(self) -> int:
        return sum(d.kv_cache_bytes for d in self.devices)

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
            "compute_bytes": self.compute_bytes, "output_bytes": self.output_bytes, "total_bytes": self.total_bytes,
            "n_ctx": self.n_ctx, "n_ctx_seq": self.n_ctx_seq, "n_seq": self.n_seq, "kv_unified": self.kv_unified,
            "kv_cells": self.kv_cells, "swa_cells": self.swa_cells, "n_batch": self.n_batch,
            "n_ubatch": self.n_ubatch, "flash_attn": self.flash_attn, "settings": s,
            "devices": [{"device": d.device, "weights_bytes": d.weights_bytes, "kv_cache_bytes": d.kv_cache_bytes,
                         "compute_bytes": d.compute_bytes, "output_bytes": d.output_bytes,
                         "total_bytes": d.total_bytes, "n_layers": d.n_layers} for d in self.devices],
        }


def pad(x: int, n: int) -> int:
    return (x + n - 1) // n * n


def context(facts: ModelFacts, s: Settings) -> tuple[int, int, int, bool, int]:
    """(n_ctx, n_ctx_seq, n_seq, unified, n_stream) as llama_context's constructor resolves them (§2.2)."""
    n_seq, unified = s.resolved_parallel()
    n_ctx = pad(s.n_ctx if s.n_ctx > 0 else (facts.n_ctx_train or 4096), CTX_PAD)
    if unified or n_seq == 1:
        return n_ctx, n_ctx, n_seq, unified, 1
    # "n_ctx is not divisible by n_seq_max - rounding down" then each stream is padded to 256 again
    n_ctx_seq = pad(n_ctx // n_seq, CTX_PAD)
    return n_ctx_seq * n_seq, n_ctx_seq, n_seq, unified, n_seq


def _type(name: str) -> int:
    try:
        tid = ggml.type_id(name)
    except KeyError:
        raise BadInputError(f"unknown cache type {name!r} (one of {', '.join(ggml.KV_CACHE_TYPES)})") from None
    return tid


def kv_layer_bytes(facts: ModelFacts, il: int, cells: int, n_stream: int, tk: int, tv: int) -> int:
    """One layer's K and V tensors: ggml_new_tensor_3d(type, n_embd_{k,v}_gqa(il), cells, n_stream)."""
    hkv = facts.n_head_kv[il]
    if hkv == 0:
        return 0  # no attention in this layer (e.g. recurrent layers of hybrids)
    k = ggml.row_size(tk, hkv * facts.head_dim_k)
    v = ggml.row_size(tv, hkv * facts.head_dim_v)
    return (k + v) * cells * n_stream


def layer_devices(facts: ModelFacts, s: Settings) -> tuple[list[str], str]:
    """Device of each repeating layer and of the output layer (llama_model::load_tensors, §2.4).

    Current llama.cpp counts n_layer + 1 slots, the last being the output layer, and fills them from the end:
    -ngl N puts the output plus the last N-1 repeating layers on the GPU(s).
    """
    n = facts.n_layer
    if s.n_gpus <= 0 or s.n_gpu_layers == 0:
        return ["cpu"] * n, "cpu"
    ngl = n + 1 if s.n_gpu_layers < 0 else min(s.n_gpu_layers, n + 1)
    start = n + 1 - ngl
    gpu_slots = list(range(start, n + 1))
    split = list(s.tensor_split) if s.tensor_split else [1.0] * s.n_gpus
    split = (split + [0.0] * s.n_gpus)[: s.n_gpus]
    total = sum(split) or 1.0
    # llama.cpp splits the offloaded slots by cumulative fractions of tensor_split (get_layer_buft_list /
    # std::upper_bound over the normalised cumulative split).
    cum, acc = [], 0.0
    for w in split:
        acc += w / total
        cum.append(acc)
    devs = ["cpu"] * (n + 1)
    for k, slot in enumerate(gpu_slots):
        frac = k / len(gpu_slots)
        g = next((i for i, c in enumerate(cum) if frac < c - 1e-12), s.n_gpus - 1)
        devs[slot] = f"gpu{g}"
    return devs[:n], devs[n]


def compute_bytes(facts: ModelFacts, *, n_ubatch: int, kv_cells: int, swa_cells: int, flash_attn: bool,
                  n_layers_here: int, has_output: bool, n_stream: int) -> int:
    """Compute buffer of one backend: the peak over the graph's phases, in f32 values per ubatch token.

    ggml-alloc reuses memory between ops and lets in-place ops share their parent (§2.5), so the buffer is about
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
    """
    E = facts.n_embd
    H = max(facts.n_head) if facts.n_head else 0
    hkv = max(facts.n_head_kv) if facts.n_head_kv else 0
    Hq = H * facts.head_dim_k
    Hk = hkv * facts.head_dim_k
    # The mask and KQ are per stream: with per-slot streams a ubatch's tokens only see their own slot's cells, so
    # the sizes follow the cells of one stream (measured: -np 4 without -kvu costs the same as -np 1).
    mask_per = 0.5 if flash_attn else 1.0
    mask = mask_per * (kv_cells + swa_cells)
    phases = [0.0]
    if n_layers_here:
        kv_big = kv_cells or swa_cells
        if flash_attn:
            attn = mask + 4 * E + 2 * Hk + Hq
        else:
            attn = kv_big * H + mask + 5 * E + 2 * Hk
        phases.append(attn)
        rest = mask + (4 if flash_attn else 5) * E
        if facts.n_expert:
            ff = 3 * facts.n_ff_exp * facts.n_expert_used + 2 * facts.n_expert + rest
            if facts.n_expert_shared:
                ff = max(ff, 3 * max(facts.n_ff) + rest)
        else:
            ff = 3 * max(facts.n_ff) + rest
        phases.append(ff)
    if has_output:
        phases.append(facts.n_vocab + 2 * E)
    return int(4 * n_ubatch * max(phases))


def estimate(facts: ModelFacts, s: Settings = Settings()) -> Estimate:
    """The memory llama.cpp will allocate for ``facts`` under ``s``, per device. Raises BadInputError."""
    n_ctx, n_ctx_seq, n_seq, unified, n_stream = context(facts, s)
    tk, tv = _type(s.cache_type_k), _type(s.cache_type_v)
    # FA auto resolves to enabled when every FA op can run on its layer's device, which is the case for the
    # CPU and current CUDA/Metal/Vulkan backends (llama_context constructor, "Flash Attention was auto, set to
    # enabled"; measured: CPU auto -> enabled).
    fa = s.flash_attn != "off"
    if not fa and ggml.block_size(tv)[0] > 1:
        raise BadInputError(f"cache type V {s.cache_type_v} needs flash attention (llama.cpp: 'quantized V cache "
                            "was requested, but this requires Flash Attention'); use --flash-attn on")
    for name, tid, hd in (("K", tk, facts.head_dim_k), ("V", tv, facts.head_dim_v)):
        blck = ggml.block_size(tid)[0]
        if blck > 1 and hd % blck:
            raise BadInputError(f"cache type {name} {ggml.type_name(tid).lower()} needs a head size that is a "
                                f"multiple of {blck}; this model's is {hd}")
    # causal models cap n_batch at n_ctx and n_ubatch at n_batch (llama_context constructor, §2.1)
    n_batch = min(n_ctx, s.n_batch)
    n_ubatch = min(n_batch, s.n_ubatch)

    swa_any = facts.sliding_window > 0 and any(facts.swa_layers)
    swa_cells = 0
    if swa_any:
        # llama_kv_cache_iswa: size_swa = pad(min(size_base, n_swa * (unified ? n_seq : 1) + n_ubatch), 256),
        # or size_base with swa_full (§2.3)
        swa_cells = n_ctx_seq if s.swa_full else min(
            n_ctx_seq, pad(facts.sliding_window * (n_seq if unified else 1) + n_ubatch, CTX_PAD))
    full_any = not swa_any or not all(facts.swa_layers)
    kv_cells = n_ctx_seq if full_any else 0

    layer_dev, out_dev = layer_devices(facts, s)
    names = ["cpu"] + [f"gpu{i}" for i in range(max(0, s.n_gpus))]
    weights = dict.fromkeys(names, 0)
    kv = dict.fromkeys(names, 0)
    n_layers = dict.fromkeys(names, 0)
    for t in facts.tensors:
        if t.layer is not None and t.layer < facts.n_layer:
            weights[layer_dev[t.layer]] += t.nbytes
        elif t.name.startswith("output"):  # output.weight, output_norm.* follow the output layer
            weights[out_dev] += t.nbytes
        else:
            weights["cpu"] += t.nbytes  # token_embd and other input-side tensors stay on the CPU (§2.4)
    if facts.tied_embeddings and out_dev != "cpu":
        embd = facts.tensor("token_embd.weight")
        if embd is not None:  # TENSOR_DUPLICATED: a second copy of the embedding for the output (§2.4)
            weights[out_dev] += embd.nbytes
    for il in range(facts.n_layer):
        cells = swa_cells if facts.swa_layers[il] and swa_any else kv_cells
        dev = layer_dev[il] if s.offload_kqv else "cpu"
        kv[dev] += kv_layer_bytes(facts, il, cells, n_stream, tk, tv)
        n_layers[layer_dev[il]] += 1

    # output_reserve: n_vocab floats for each of max(n_outputs, n_seq_max) outputs (n_outputs_max_per_seq = 1),
    # in the host buffer of the output device (§2.6); measured: V * 4 * n_seq.
    output = facts.n_vocab * 4 * n_seq

    devices = []
    for d in names:
        here = n_layers[d]
        comp = compute_bytes(facts, n_ubatch=n_ubatch, kv_cells=kv_cells, swa_cells=swa_cells, flash_attn=fa,
                             n_layers_here=here, has_output=(out_dev == d), n_stream=n_stream)
        if d == "cpu" and s.n_gpus > 0 and out_dev != "cpu":
            # host-side buffer with offload: token embeddings (get_rows on the CPU) + the f32 KQ mask (§2.5)
            comp = max(comp, 4 * n_ubatch * (facts.n_embd + kv_cells * n_stream))
        if d != "cpu" and here == 0 and out_dev != d:
            comp = 0
        devices.append(DeviceEstimate(d, weights[d], kv[d], comp, output if d == "cpu" else 0, here))
    return Estimate(settings=s, n_ctx=n_ctx, n_ctx_seq=n_ctx_seq, n_seq=n_seq, kv_unified=unified,
                    n_stream=n_stream, kv_cells=kv_cells, swa_cells=swa_cells, n_batch=n_batch,
                    n_ubatch=n_ubatch, flash_attn=fa, devices=tuple(devices))
