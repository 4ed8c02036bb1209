"""Predicted speed of one llama.cpp (or vLLM) configuration, per backend, from the hardware and the model.

Decode (one token) is memory-bound: every device reads, per token, the weights it holds that the token uses, and
the time is the sum over devices (llama.cpp runs the layers one device after the other; tensor-parallel ranks work
at once, so their time is the largest one's):

    bytes_d = layer weights on d x read fraction (MoE: shared tensors and n_used of n_expert experts)
              + one row of the token-embedding table (llama.cpp's get_rows, src/llama-graph.cpp build_inp_embd; the
                table lives in host memory, llama-model.cpp puts LLM_TENSOR_LAYER_INPUT on the CPU)
              + the KV cache of the tokens already in context (attention reads all of it; a sliding-window
                layer its window)
    t_decode = sum_d bytes_d / (bandwidth_d x efficiency[backend_d][quant family])
               + n_layer x per-layer overhead x kernels per layer / a llama layer's

The overhead is what a layer's kernels cost beyond their traffic; it was fitted on llama-style layers (19 kernels)
and scales with the architecture's count in llama.cpp's graph (``Constants.kernel_ratio``: 38 for a Qwen3-MoE layer,
68 for Gemma 3n; benchmarks/graph_kernels.py counts them).

Prefill is compute-bound: 2 FLOPs per active parameter per token plus attention (2 x n_head x (key + value head
size) x depth per layer, the window on sliding-window layers; flash attention at a share of the F16 path's rate),
on the matrix throughput of the path llama.cpp takes (or the CPU's cores) times an efficiency per backend and quant
family. The path depends on the GPU's architecture (``matrix_path``): F16 weights go to cuBLAS/hipBLAS in FP16
(ggml-cuda.cu batched_mul_mat_traits<GGML_TYPE_F16>: CUBLAS_COMPUTE_16F); quantized weights go to MMQ
(mmq.cu ggml_cuda_should_use_mmq), which on Turing and later multiplies int8 on the tensor cores (mma.cuh:
mma.sync ... s8.s8.s32) at the INT8 rate, twice the dense FP16 one, and on RDNA2 with dp4a (4 int8 products per lane
and clock, twice packed FP16); Volta has no int8 tensor cores and converts the weights to F16 for cuBLAS, paying the
conversion's memory traffic (``Part.dequant``). Hopper reaches its datasheet rate only with wgmma, which ggml-cuda
does not issue (mma.cuh has mma.sync only): llama.cpp's MMQ gets the Ampere-style per-SM rate, half the datasheet's;
F16 weights go to cuBLAS, which does use wgmma there (rules/speed.toml prefill-matrix-rate). GeForce figures in
rules/gpus.toml are FP32-accumulate ones, half the rate of llama.cpp's FP16-accumulate GEMM (rule
fp16-accumulate-full-rate). The output projection runs for the batch's last token only. vLLM plans
(``llama_cpp=False``) keep the datasheet FP16 rate. Otherwise the file size does not enter prefill.

Efficiencies, overheads and the range a prediction carries are in rules/speed.toml, fitted on the calibration part
of tests/data/llama-bench/results.csv (public llama-bench results; the evaluation part is held out, see
benchmarks/speed_accuracy.py). Bandwidth and TFLOPs come from the planner's Machine (rules/gpus.toml, the probe, or
a measurement by ``advisor bench --memory``). Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from advisor.gguf.estimate import backend_rules
from advisor.plan import DeviceMemory, Predicted
from advisor.planner.machine import Machine

#: Quant families the efficiencies are given for (rules/speed.toml); every GGUF type maps to one.
FAMILIES = ("f16", "q8_0", "q4_0", "k", "iq", "mxfp4")
#: llama-bench's tg128 averages over contexts 0..127, pp512 over 0..511: the depth a plan's figure is quoted at.
DEFAULT_DEPTH = 64
BASIS_MODEL = "model"
BASIS_MEASURED = "measured"
BASIS_CALIBRATED = "calibrated"


def quant_family(quant: str | None) -> str:
    """The efficiency family of a quant name (GGUF file type or vLLM quantization): F16/BF16/F32 -> f16, Q8_0 and
    FP8 -> q8_0, the legacy block quants Q4_0..Q5_1 and AWQ/GPTQ int4 -> q4_0, K-quants (and Unsloth's UD-*_XL) -> k,
    i-quants -> iq, MXFP4 -> mxfp4."""
    q = (quant or "").upper().replace("UD-", "")
    if not q or q in ("F16", "BF16", "F32", "FP16", "AUTO", "BFLOAT16", "FLOAT16"):
        return "f16"
    if q.startswith("IQ"):
        return "iq"
    if "MXFP4" in q:
        return "mxfp4"
    if q.startswith(("Q8_0", "FP8", "Q8")) and "_K" not in q:
        return "q8_0"
    if re.match(r"^Q\d_K", q) or q.startswith("TQ"):
        return "k"
    return "q4_0"


@dataclass(frozen=True)
class ModelSpeed:
    """What the speed model needs to know of a model, besides where its weights sit."""

    quant: str | None = None
    embd_bytes: int = 0  # the input token-embedding table (read one row per token)
    n_vocab: int = 0
    n_layer: int = 0
    n_embd: int = 0
    kv_bytes_per_token: float = 0.0  # KV cache bytes per token of context, all layers (f16)
    read_fraction: float = 1.0  # share of the layer weights a token reads (MoE: < 1)
    output_params: float = 0.0  # the output projection's parameters (in the active ones): prefill runs it once a batch
    expert_params: float = 0.0  # MoE: the expert parameters a token multiplies by (in the active ones)
    expert_use: float = 0.0  # MoE: n_expert_used / n_expert, the share of a batch's tokens each expert sees
    arch: str = ""  # llama.cpp architecture ("" unknown): how many kernels a layer launches (Constants.kernel_ratio)
    n_expert_used: int = 0
    #: the attention layers, grouped: (layers, sliding window or 0, KV bytes per cell of one layer (f16), FLOPs
    #: per query token per cell of one layer); () = unknown, every layer taken as a llama one (kv_bytes_per_token
    #: x depth read, 4 x n_embd x depth FLOPs)
    attention: tuple[tuple[int, int, float, float], ...] = ()

    @property
    def family(self) -> str:
        return quant_family(self.quant)

    def kv_read_bytes(self, depth: float) -> float:
        """KV bytes a decoded token reads at ``depth`` tokens of context: a sliding-window layer attends to its
        window only (llama.cpp's iSWA cache keeps window + ubatch cells, llama-kv-cache-iswa.cpp)."""
        if not self.attention:
            return self.kv_bytes_per_token * depth
        return sum(n * kvb * (min(depth, w) if w else depth) for n, w, kvb, _ in self.attention)

    def attention_flops(self, depth: float) -> float:
        """FLOPs per prompt token of attention over ``depth`` cells: QK and PV, 2 x n_head x (key + value head
        size) per cell and layer, over the window on sliding-window layers."""
        if not self.attention:
            return 4.0 * self.n_layer * self.n_embd * depth
        return sum(n * fl * (min(depth, w) if w else depth) for n, w, _, fl in self.attention)


def dominant_type(facts: Any) -> str | None:
    """The GGML type holding most of the layer weights of a GGUF (its quant when no name is given)."""
    by_type: dict[str, int] = {}
    for t in facts.tensors:
        if t.name.startswith("blk.") and not t.name.endswith(".all") and len(t.shape) >= 2:
            by_type[t.type_name] = by_type.get(t.type_name, 0) + t.nbytes
    return max(by_type, key=lambda k: by_type[k]) if by_type else None


#: Tables a token reads one row of (get_rows), not multiplies by, held in host memory: the token embeddings and
#: Gemma 3n's per-layer embeddings (llama-model.cpp: LLM_TENSOR_PER_LAYER_TOKEN_EMBD is an input-layer tensor, on
#: the CPU; llama-graph.cpp get_rows), both with a row per vocabulary entry.
LOOKUP_TABLES = ("token_embd.weight", "per_layer_token_embd.weight")


def active_params_of(facts: Any) -> float:
    """Parameters a token multiplies by, counted from a GGUF's tensor shapes: every weight but the lookup tables
    (LOOKUP_TABLES), MoE expert tensors at n_used / n_expert."""
    total = 0.0
    for t in facts.tensors:
        if t.name in LOOKUP_TABLES or t.name.endswith(".all"):
            continue
        n = float(math.prod(t.shape))
        if "_exps." in t.name and facts.n_expert:
            n *= facts.n_expert_used / facts.n_expert
        total += n
    return total


def model_speed(facts: Any, quant: str | None = None, active_fraction: float = 1.0) -> ModelSpeed:
    """A ModelSpeed from advisor.gguf.facts.ModelFacts (or None: a neutral one)."""
    if facts is None:
        return ModelSpeed(quant=quant, read_fraction=active_fraction)
    quant = quant or dominant_type(facts)
    embd = sum(t.nbytes for t in facts.tensors if t.name in LOOKUP_TABLES)
    # a model without attention layers (Mamba, RWKV) reads no KV and multiplies no scores: an empty group, not ()
    attention = attention_layers(facts) or ((0, 0, 0.0, 0.0),)
    out = next((float(math.prod(t.shape)) for t in facts.tensors if t.name == "output.weight"), 0.0)
    use = facts.n_expert_used / facts.n_expert if facts.n_expert else 0.0
    # compact facts ("blk.N.ffn_*_exps.*.all") carry bytes, not shapes: their expert parameters come from the
    # architecture (expert_params_of)
    experts = sum(float(math.prod(t.shape)) for t in facts.tensors
                  if "_exps." in t.name and not t.name.endswith(".all")) * use
    return ModelSpeed(quant=quant, embd_bytes=embd, n_vocab=facts.n_vocab, n_layer=facts.n_layer,
                      n_embd=facts.n_embd, read_fraction=active_fraction,
                      output_params=out, expert_params=experts, expert_use=use, arch=facts.architecture,
                      n_expert_used=facts.n_expert_used, attention=attention)


def attention_layers(facts: Any) -> tuple[tuple[int, int, float, float], ...]:
    """ModelSpeed.attention from a GGUF's facts: per layer its head sizes (key_length_swa on sliding-window
    layers), KV heads and window; recurrent layers (no KV, n_head_kv 0) are left out, and layers that reuse an
    earlier layer's cache (Gemma 3n/4) still read it. MLA files attend in the latent space (llama.cpp's absorbed
    path, src/models/deepseek2.cpp): one cached K latent of kv_lora_rank + rope per cell, V its first kv_lora_rank
    values, every head multiplying both."""
    groups: dict[tuple[int, float, float], int] = {}
    for il in range(facts.n_layer):
        kv_heads = facts.n_head_kv[il] if il < len(facts.n_head_kv) else 0
        if kv_heads <= 0 or (facts.recurrent_layers and facts.recurrent_layers[il]):
            continue
        dk, dv = facts.head_dims(il)
        heads = facts.n_head[il] if il < len(facts.n_head) else 0
        if facts.is_mla:
            kvb, fl = 2.0 * dk, 2.0 * heads * (dk + facts.kv_lora_rank)
        else:
            kvb, fl = 2.0 * kv_heads * (dk + dv), 2.0 * heads * (dk + dv)
        swa = il < len(facts.swa_layers) and facts.swa_layers[il]
        key = (facts.sliding_window if swa else 0, kvb, fl)
        groups[key] = groups.get(key, 0) + 1
    return tuple((n, w, kvb, fl) for (w, kvb, fl), n in groups.items())


def expert_params_of(arch: Any) -> float:
    """The expert parameters a token multiplies by, from a catalog Architecture: gate, up and down (n_embd x
    n_ff_expert each) of n_expert_used experts in every MoE layer (all but the dense lead layers; llama4: every
    moe_layer_step-th layer)."""
    if not arch.n_expert or not arch.n_expert_used:
        return 0.0
    moe_layers = (arch.n_layer - arch.n_layer_dense_lead) // max(1, arch.moe_layer_step)
    return 3.0 * arch.n_embd * (arch.n_ff_expert or max(arch.n_ff, 1)) * arch.n_expert_used * moe_layers


@dataclass(frozen=True)
class Part:
    """One device's share of a configuration."""

    backend: str  # cuda | rocm | metal | vulkan | sycl | cpu
    bandwidth_gbs: float
    tflops: float  # dense FP16 tensor/matrix throughput (GPUs); the CPU's is computed from its cores
    weights_bytes: float  # model weights held on the device (the CPU's include the token-embedding table)
    layer_share: float  # share of the layers (and of the prefill FLOPs) computed on this device
    threads: int = 0  # CPU only
    isa: str = ""  # CPU only: avx512 | avx2 | neon_i8mm | neon_dotprod | neon
    read_fraction: float | None = None  # overrides the model's read fraction on this device
    quant_tflops: float = 0.0  # GPUs: throughput of the quantized matrix path (MMQ int8); 0: ``tflops``
    dequant: bool = False  # GPUs: quantized weights are converted to F16 for the F16 GEMM (no MMQ)
    fp16_math: bool = False  # GPUs: quantized weights dequantized in registers, multiplied in FP16 (vLLM's kernels)


@dataclass(frozen=True)
class Constants:
    decode_efficiency: dict[str, dict[str, float]]
    layer_overhead_us: dict[str, float]
    prefill_efficiency: dict[str, dict[str, float]]
    cpu_gflops_per_core: dict[str, float]
    ranges: dict[str, dict[str, list[float]]]
    matrix_rate: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    op_offload_h2d_gbs: float = 0.0  # host-to-GPU copy rate of op offload (0: ops of CPU weights stay on the CPU)
    #: per backend, the tokens per expert at which an expert's product runs at half rate (no entry: off)
    moe_half_rate_tokens: dict[str, float] = dataclasses.field(default_factory=dict)
    #: rules/speed.toml decode-graph-kernels: kernels per layer of llama.cpp's graph by architecture, the n_used
    #: each was counted at, llama's (what layer_overhead_us is per), and what an MoE layer adds besides its
    #: n_used - 1 aggregation adds (an architecture not in the table)
    graph_kernels: dict[str, float] = dataclasses.field(default_factory=dict)
    graph_kernels_n_used: dict[str, int] = dataclasses.field(default_factory=dict)
    graph_kernels_reference: float = 0.0
    graph_kernels_moe_extra: float = 0.0
    #: per backend family, the token tile its MoE kernel multiplies each expert's tokens in (no entry: the
    #: half-rate form of moe_half_rate_tokens)
    moe_token_tile: dict[str, int] = dataclasses.field(default_factory=dict)
    #: per backend family, the share of its F16 matrix path's rate that prefill's flash attention reaches
    #: (no entry: 1)
    attention_rate: dict[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_rules(cls, r: Any) -> Constants:
        return cls(r["decode_bandwidth_efficiency"], r["decode_layer_overhead_us"], r["prefill_compute_efficiency"],
                   r["cpu_prefill_gflops_per_core"], r["prediction_range"], r["prefill_matrix_rate"],
                   float(r["op_offload_h2d_gbs"]), r["moe_half_rate_tokens"], r["graph_kernels_per_layer"],
                   r["graph_kernels_n_used"], float(r["graph_kernels_reference"]),
                   float(r["graph_kernels_moe_extra"]), {k: int(v) for k, v in r["moe_token_tile"].items()},
                   {k: float(v) for k, v in r["prefill_attention_rate"].items()})

    def attn_rate(self, backend: str) -> float:
        """The flash-attention share of a backend's F16 path rate: its own entry, else its family's
        (cuda_hbm_hopper -> cuda), else 1."""
        return float(self.attention_rate.get(backend) or self.attention_rate.get(backend.split("_")[0]) or 1.0)

    def _pick(self, table: dict[str, Any], backend: str) -> Any:
        """A backend's entry; a backend without one (vulkan_nvidia -> vulkan, anything else -> vulkan) falls back."""
        return table.get(backend) or table.get(backend.split("_")[0]) or table["vulkan" if backend != "cpu" else "cpu"]

    def decode_eff(self, backend: str, family: str) -> float:
        t = self._pick(self.decode_efficiency, backend)
        return float(t.get(family, t["q4_0"]))

    def prefill_eff(self, backend: str, family: str) -> float:
        t = self._pick(self.prefill_efficiency, backend)
        return float(t.get(family, t["q4_0"]))

    def overhead_s(self, backend: str, n_layer: int) -> float:
        return float(self._pick(self.layer_overhead_us, backend)) * 1e-6 * n_layer

    def kernel_ratio(self, ms: ModelSpeed) -> float:
        """A layer's kernels relative to a llama layer's (what the per-layer overhead was fitted on): the
        architecture's count, with one aggregation add per expert more or less when a file uses another
        n_expert_used than the one counted; an architecture not in the table, or a dense-counted one with experts
        (a Mixtral under "llama"), gets the MoE layer's extra kernels and its n_used - 1 adds, and a dense file of
        an MoE-counted architecture loses them. 1 for a model of unknown architecture."""
        ref = self.graph_kernels_reference
        if not ms.arch or ref <= 0:
            return 1.0
        k = self.graph_kernels.get(ms.arch, ref)
        counted_used = self.graph_kernels_n_used.get(ms.arch, 0)
        if ms.n_expert_used:
            k += (ms.n_expert_used - counted_used if counted_used
                  else self.graph_kernels_moe_extra + ms.n_expert_used - 1)
        elif counted_used:  # a dense file of an architecture counted on an MoE one (granite-4.0-h micro)
            k -= self.graph_kernels_moe_extra + counted_used - 1
        return k / ref

    def range_of(self, backend: str, test: str) -> tuple[float, float]:
        lo, hi = self._pick(self.ranges, backend)[test]
        return float(lo), float(hi)


def decode_seconds(parts: list[Part], ms: ModelSpeed, c: Constants, depth: int = DEFAULT_DEPTH,
                   tensor_parallel: bool = False) -> float:
    """Seconds per generated token at ``depth`` tokens of context."""
    fam = ms.family
    row = ms.embd_bytes / ms.n_vocab if ms.n_vocab else 0.0
    times = []
    for p in parts:
        w = p.weights_bytes
        embd_here = min(ms.embd_bytes, w) if p.backend == "cpu" else 0.0
        frac = ms.read_fraction if p.read_fraction is None else p.read_fraction
        read = (w - embd_here) * frac + (row if embd_here else 0.0)
        read += ms.kv_read_bytes(depth) * p.layer_share
        if read <= 0:
            continue
        bw = p.bandwidth_gbs * 1e9 * c.decode_eff(p.backend, fam)
        times.append(read / bw if bw > 0 else float("inf"))
    if not times:
        return 0.0
    main = next((p.backend for p in parts if p.layer_share > 0 and p.backend != "cpu"), "cpu")
    compute = max(times) if tensor_parallel else sum(times)
    return compute + c.overhead_s(main, ms.n_layer) * c.kernel_ratio(ms)


def _cpu_flops(p: Part, c: Constants) -> float:
    per_core = c.cpu_gflops_per_core.get(p.isa) or c.cpu_gflops_per_core["default"]
    return max(1, p.threads) * per_core * 1e9


#: llama.cpp's default physical batch (common/common.h n_ubatch = 512): a prompt is multiplied 512 tokens at a time,
#: so what a batch pays once (converting the weights to F16) is shared by 512 tokens.
UBATCH = 512


def _gpu_rate(p: Part, fam: str, c: Constants) -> float:
    """FLOPs per second of a GPU's batched matrix multiplication for the family (F16: the FP16 GEMM; quantized: MMQ
    at ``quant_tflops``, or the FP16 GEMM after conversion when ``dequant``)."""
    if fam == "f16" or p.dequant or p.fp16_math:
        return p.tflops * 1e12 * c.prefill_eff(p.backend, "f16")
    return (p.quant_tflops or p.tflops) * 1e12 * c.prefill_eff(p.backend, fam)


def _dequant_seconds(p: Part, active_params: float, fam: str) -> float:
    """Per prompt token, the conversion of a device's quantized weights to F16 before the GEMM: read them once and
    write 2 bytes per parameter per batch (ggml-cuda.cu ggml_cuda_op_mul_mat_cublas: to_fp16_cuda), at the
    device's bandwidth."""
    if not p.dequant or fam == "f16" or p.bandwidth_gbs <= 0:
        return 0.0
    return (p.weights_bytes + 2.0 * active_params * p.layer_share) / (p.bandwidth_gbs * 1e9) / UBATCH


def prefill_seconds(parts: list[Part], active_params: float, ms: ModelSpeed, c: Constants,
                    depth: int = 256, tensor_parallel: bool = False) -> float:
    """Seconds per prompt token (a 512-token batch averages 256 tokens of context: ``depth``). The output
    projection runs for the tokens that return logits only, the last of the batch (src/models/llama.cpp: the last
    layer keeps the rows of inp_out_ids; llama-batch.cpp: without a logits array only the last token is an output).
    The weights' products run on the quant family's path; attention (``ModelSpeed.attention_flops``: QK and PV
    over the context, the window on sliding-window layers) multiplies F16 K and V in the flash-attention kernels,
    at the F16 path's rate times the backend's attention share (rules/speed.toml prefill-attention-rate)."""
    fam = ms.family
    out = min(ms.output_params, active_params)
    gpu = [p for p in parts if p.backend != "cpu" and p.layer_share > 0]
    weights = 2.0 * (active_params - out + out / UBATCH)
    weights += 2.0 * ms.expert_params * (expert_slowdown(ms, c, gpu[0].backend if gpu else "cpu") - 1.0)
    attn = ms.attention_flops(depth)
    if tensor_parallel and gpu:
        rate = sum(_gpu_rate(p, fam, c) for p in gpu)
        rate16 = sum(_gpu_rate(p, "f16", c) * c.attn_rate(p.backend) for p in gpu)
        conv = max(_dequant_seconds(p, active_params, fam) for p in gpu)
        return weights / rate + attn / rate16 + conv if rate > 0 and rate16 > 0 else float("inf")
    total = 0.0
    offload_to = next((p for p in gpu if _op_offload(p.backend)), None)
    for p in parts:
        if p.layer_share <= 0:
            continue
        if p.backend == "cpu" and offload_to is not None and c.op_offload_h2d_gbs > 0:
            # op offload: a prompt batch's matrix products of CPU-resident weights run on the GPU, each weight
            # copied over once per ubatch (ggml-backend.cpp ggml_backend_sched_backend_id_from_cur with
            # ggml_backend_dev_offload_op; ggml-cuda: batch >= 32), so the copy, not the CPU, sets the pace
            copy = max(0.0, p.weights_bytes - ms.embd_bytes) / (c.op_offload_h2d_gbs * 1e9) / UBATCH
            rate = _gpu_rate(offload_to, fam, c)
            rate16 = _gpu_rate(offload_to, "f16", c) * c.attn_rate(offload_to.backend)
        elif p.backend == "cpu":
            copy, rate = 0.0, _cpu_flops(p, c) * c.prefill_eff("cpu", fam)
            rate16 = rate
        else:
            copy, rate = _dequant_seconds(p, active_params, fam), _gpu_rate(p, fam, c)
            rate16 = _gpu_rate(p, "f16", c) * c.attn_rate(p.backend)
        if rate <= 0 or rate16 <= 0:
            return float("inf")
        total += copy + weights * p.layer_share / rate + attn * p.layer_share / rate16
    return total


def expert_slowdown(ms: ModelSpeed, c: Constants, backend: str) -> float:
    """How much slower an expert's matrix product runs per FLOP than a dense layer's, in a prompt batch: each expert
    multiplies only the batch's tokens routed to it (ubatch x n_used / n_expert: 32 for Qwen3-30B-A3B, 64 for
    gpt-oss-20b), and a weight tile's fixed cost (loading and unpacking it) is shared by those tokens, so the
    throughput per token goes as t / (t + k) (k per backend: rules/speed.toml moe_half_rate_tokens), relative to
    a dense product's 512 tokens."""
    if not ms.expert_params or not ms.expert_use:
        return 1.0
    tile = c.moe_token_tile.get(backend.split("_")[0], 0)
    if tile:
        return tile_waste(UBATCH, min(1.0, ms.expert_use), tile)
    k = _moe_k(c.moe_half_rate_tokens, backend)
    if k <= 0:
        return 1.0
    t = UBATCH * ms.expert_use
    return (1.0 + k / t) / (1.0 + k / UBATCH)


@functools.lru_cache(maxsize=256)  # the planner asks for the same few models' (n, p) at every -ngl it tries
def tile_waste(n: int, p: float, tile: int) -> float:
    """Work per useful token of a kernel that multiplies each expert's tokens in whole tiles of ``tile`` tokens
    (Metal's kernel_mul_mm_id: 32, as its dense kernel_mul_mm), relative to a dense product of the ``n`` tokens:
    E[ceil(X / tile)] x tile / E[X] with X ~ Binomial(n, p), the tokens routed to one expert when each token picks
    an expert with probability p = n_used / n_expert (a uniform router), over the dense product's own
    ceil(n / tile) x tile / n. The pmf is taken in log space: (1 - p)^n underflows for large n x p."""
    if not 0.0 < p < 1.0:
        return 1.0
    lp, lq, ln = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    tiles = sum(math.exp(ln - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * lp + (n - k) * lq)
                * math.ceil(k / tile) for k in range(1, n + 1))
    return tiles * tile / (n * p) / (math.ceil(n / tile) * tile / n)


def _op_offload(key: str) -> bool:
    """Whether llama.cpp's backend of a speed-table key (cuda_hbm -> cuda) runs big-batch products of CPU-resident
    weights on the GPU (rules/backends.toml op_offload; Metal shares the CPU's memory and does not)."""
    rule = backend_rules().get(key.split("_")[0])
    return bool(rule and rule.op_offload)


#: Backends that run another's MoE kernels: ROCm builds ggml-cuda's MMQ for HIP (ggml/src/ggml-hip).
MOE_KERNELS_OF = {"rocm": "cuda"}


def _moe_k(table: Mapping[str, float], backend: str) -> float:
    """The backend's tokens-per-expert half-rate point: its own entry, its family's (cuda_hbm -> cuda), the one whose
    kernels it runs, else the median of the fitted backends (a backend without MoE rows: SYCL, plain Vulkan; Metal
    is modelled by its token tile instead, moe_token_tile)."""
    family = backend.split("_")[0]
    for key in (backend, family, MOE_KERNELS_OF.get(family, "")):
        if table.get(key):
            return float(table[key])
    values = sorted(float(v) for v in table.values() if v)
    return values[len(values) // 2] if values else 0.0


def matrix_path(backend: str, arch: str, c: Constants) -> tuple[float, float, bool]:
    """(multiple of the dense FP16 figure the F16 GEMM runs at, multiple the quantized path runs at, whether
    quantized weights are converted to F16 first) for a GPU of ``arch`` (NVIDIA compute capability "8.6", AMD gfx
    target "gfx1030"), after ggml-cuda's choice of kernel (mmq.cu ggml_cuda_should_use_mmq; common.cuh
    turing_mma_available, GGML_CUDA_CC_RDNA2 "minimum for dp4a"). Rates are rules/speed.toml prefill_matrix_rate."""
    cls = gpu_class(backend, arch)
    rate = c.matrix_rate.get(cls, {})
    return float(rate.get("f16", 1.0)), float(rate.get("quant", 1.0)), cls == "volta"


def gpu_class(backend: str, arch: str) -> str:
    """The class of a GPU's matrix units as llama.cpp uses them: hopper (cc 9.x: mma.sync only), turing_plus
    (cc >= 7.5: int8 mma), volta (cc 7.0-7.2: FP16 tensor cores, no int8), rdna2 (gfx103x: dp4a, no matrix
    cores), or "" (the backend's own rate: FP16 figure as is)."""
    a = (arch or "").lower()
    if backend == "cuda" and re.fullmatch(r"\d+(\.\d+)?", a):
        cc = float(a)
        if 9.0 <= cc < 10.0:
            return "hopper"
        if cc >= 7.5:
            return "turing_plus"
        if cc >= 7.0:
            return "volta"
    if backend == "rocm" and a.startswith("gfx103"):
        return "rdna2"
    return ""


def speed_backend(backend: str, vendor: str, gpu_name: str = "", hbm_match: list[str] | tuple[str, ...] = (),
                  arch: str = "", integrated: bool = False) -> str:
    """The key of rules/speed.toml's tables: the llama.cpp backend, with Vulkan on NVIDIA apart (ggml-vulkan runs
    its matrix multiplications on the tensor cores there through NV_cooperative_matrix2 / KHR_cooperative_matrix,
    ggml/src/ggml-vulkan/ggml-vulkan.cpp; on GPUs without them it uses the shader cores) and HBM GPUs apart
    (``<backend>_hbm``: one token's matrix-vector products keep too few bytes in flight to cover HBM's latency, so
    they reach a smaller share of its bandwidth; rules/speed.toml hbm_gpu_match names them). A key without an
    entry falls back to the backend's own; ``cuda_hbm_hopper``: HBM GPUs of compute capability 9.x; ``cuda_igpu``:
    NVIDIA GPUs sharing a power-limited SoC's memory (Jetson, DGX Spark GB10), whose tensor units do not sustain
    the datasheet's clocks through a prompt batch. Vulkan on AMD RDNA3 and later (gfx11, gfx12: WMMA) runs its matrix
    multiplications as KHR_cooperative_matrix shaders (``vulkan_coopmat``; ggml-vulkan.cpp picks its pipelines by
    device->coopmat_support), against the WMMA rate; RDNA1/2 have no matrix cores and run the scalar shaders
    against the packed-FP16 rate: different code, so a prefill efficiency each (decode shares vulkan's)."""
    if backend.startswith("cpu"):
        return "cpu"
    if backend == "cuda" and integrated:
        return "cuda_igpu"
    if backend == "vulkan" and vendor == "nvidia":
        return "vulkan_nvidia"
    if backend == "vulkan" and vendor == "amd" and (arch or "").lower().startswith(("gfx11", "gfx12")):
        return "vulkan_coopmat"
    if name_matches(gpu_name, hbm_match):
        # Hopper's decode was measured with a current build (rules/speed.toml decode-bandwidth-efficiency); the
        # other HBM GPUs keep the constants of the builds they were measured with
        return f"{backend}_hbm_hopper" if gpu_class(backend, arch) == "hopper" else f"{backend}_hbm"
    return backend


def name_matches(name: str, patterns: list[str] | tuple[str, ...]) -> bool:
    """Whether a GPU name matches one of a rule's patterns (hbm_gpu_match, igpu_match, ...), ignoring case."""
    return bool(name) and any(re.search(p, name, re.IGNORECASE) for p in patterns)


def fp16_accumulate_tflops(tflops: float, gpu_name: str, fp32_accumulate_match: list[str] | tuple[str, ...]) -> float:
    """A rules/gpus.toml figure at the rate of llama.cpp's FP16-accumulate GEMM: the GPUs rules/speed.toml
    fp16-accumulate-full-rate names have the half-rate FP32-accumulate figure in the table, so it doubles."""
    return tflops * (2.0 if name_matches(gpu_name, fp32_accumulate_match) else 1.0)


def gpu_speed_key(m: Machine, g: Any) -> str:
    """The speed-table key of one of the machine's GPUs (speed_backend with its name, architecture and whether it
    is integrated)."""
    name = g.gpu.name if g.gpu else ""
    return speed_backend(m.backend, m.vendor, name, m.rules["hbm_gpu_match"], device_arch(g), integrated_gpu(m, name))


def integrated_gpu(m: Machine, gpu_name: str) -> bool:
    """Whether a GPU shares a power-limited SoC's memory: the probe saw unified memory, or its name is one of
    rules/speed.toml igpu_match (a probe that cannot tell)."""
    return m.unified or name_matches(gpu_name, m.rules["igpu_match"])


def cpu_isa(features: list[str] | tuple[str, ...]) -> str:
    f = set(features)
    if "avx512f" in f:
        return "avx512"
    if "avx2" in f:
        return "avx2"
    if "i8mm" in f:
        return "neon_i8mm"
    if "dotprod" in f or "asimddp" in f:
        return "neon_dotprod"
    if "neon" in f or "asimd" in f:
        return "neon"
    return "default"


def device_arch(d: Any) -> str:
    """A planner Device's architecture for ``matrix_path``: the NVIDIA compute capability, else the AMD gfx target."""
    if d.compute_capability:
        return f"{float(d.compute_capability):.1f}"
    return (d.gpu.gfx_target or "") if d.gpu else ""


def parts_of(memory: list[DeviceMemory], m: Machine, threads: int | None = None,
             read_fraction: Mapping[str, float] | None = None, c: Constants | None = None,
             llama_cpp: bool = True) -> list[Part]:
    """The plan's devices as speed-model Parts; a device's layer share is its share of the weights. The GPUs'
    matrix rates follow llama.cpp's kernels (``matrix_path``); for vLLM (``llama_cpp=False``) the dense FP16 figure
    as gpus.toml gives it (PyTorch's GEMMs accumulate in FP32; its quantized kernels, Marlin/AWQ/GPTQ, dequantize in
    registers and multiply in FP16)."""
    c = c or Constants.from_rules(m.rules)
    gpus = {d.name: d for d in m.gpus}
    total = sum(d.weights_bytes for d in memory) or 1
    rf = read_fraction or {}
    out = []
    cpu = m.profile.cpu
    for d in memory:
        if d.device in gpus:
            g = gpus[d.device]
            arch, name = device_arch(g), g.gpu.name if g.gpu else ""
            key = gpu_speed_key(m, g)
            tf = g.tflops or 0.0
            if not llama_cpp:
                out.append(Part(key, g.bandwidth_gbs or 0.0, tf, d.weights_bytes, d.weights_bytes / total,
                                read_fraction=rf.get(d.device), fp16_math=True))
                continue
            f16x, qx, dequant = matrix_path(m.backend, arch, c)
            tf = fp16_accumulate_tflops(tf, name, m.rules["fp32_accumulate_figure_match"])
            out.append(Part(key, g.bandwidth_gbs or 0.0, tf * f16x, d.weights_bytes, d.weights_bytes / total,
                            read_fraction=rf.get(d.device), quant_tflops=tf * qx, dequant=dequant))
        elif d.device == "cpu":
            t = threads or cpu.performance_cores or cpu.physical_cores or cpu.logical_cores or 1
            out.append(Part("cpu", m.cpu.bandwidth_gbs, 0.0, d.weights_bytes, d.weights_bytes / total,
                            threads=t, isa=cpu_isa(cpu.features), read_fraction=rf.get("cpu")))
    return out


def _fix_cpu_share(parts: list[Part], ms: ModelSpeed) -> list[Part]:
    """The CPU's token-embedding table is not a layer: it computes nothing (its layer share leaves it out)."""
    rest = sum(p.weights_bytes for p in parts) - ms.embd_bytes
    if rest <= 0:
        return parts
    out = []
    for p in parts:
        w = p.weights_bytes - (min(ms.embd_bytes, p.weights_bytes) if p.backend == "cpu" else 0.0)
        out.append(dataclasses.replace(p, layer_share=max(0.0, w) / rest))
    return out


def predict(memory: list[DeviceMemory], m: Machine, active_fraction: float, active_params: float,
            tensor_parallel: bool = False, model: ModelSpeed | None = None, depth: int = DEFAULT_DEPTH,
            threads: int | None = None, read_fraction: Mapping[str, float] | None = None,
            llama_cpp: bool = True) -> Predicted:
    """Decode and prefill tokens/s of the plan whose weights sit as ``memory`` says, with a low-high range.

    ``read_fraction``: per device, the share of its layer weights a token reads where it differs from the model's
    (with --n-cpu-moe the CPU holds only expert tensors, of which a token reads n_used / n_expert)."""
    ms = model or ModelSpeed(read_fraction=active_fraction)
    if model is not None and model.read_fraction == 1.0 and active_fraction != 1.0:
        ms = dataclasses.replace(model, read_fraction=active_fraction)
    c = Constants.from_rules(m.rules)
    parts = _fix_cpu_share(parts_of(memory, m, threads, read_fraction, c, llama_cpp), ms)
    main = next((p.backend for p in parts if p.backend != "cpu" and p.layer_share > 0), "cpu")
    sd = decode_seconds(parts, ms, c, depth, tensor_parallel)
    sp = prefill_seconds(parts, active_params, ms, c, tensor_parallel=tensor_parallel) if active_params else 0.0
    decode = 1.0 / sd if sd > 0 else None
    prefill = 1.0 / sp if sp > 0 and sp != float("inf") else None
    dlo, dhi = c.range_of(main, "decode")
    plo, phi = c.range_of(main, "prefill")
    return Predicted(
        decode_tokens_per_s=_r(decode, 1), prefill_tokens_per_s=_r(prefill, 0), basis=BASIS_MODEL,
        decode_low=_r(decode * dlo, 1) if decode else None, decode_high=_r(decode * dhi, 1) if decode else None,
        prefill_low=_r(prefill * plo, 0) if prefill else None, prefill_high=_r(prefill * phi, 0) if prefill else None,
        note=(f"speed model [{main}, {ms.family}]: decode = bytes read per token / (bandwidth x efficiency) + "
              f"per-layer overhead; prefill = FLOPs / (throughput x efficiency) [rules/speed.toml]"),
    )


def _r(x: float | None, nd: int) -> float | None:
    return None if x is None else round(x, nd)


def quick_decode(size_bytes: int, active_fraction: float, m: Machine) -> float:
    """An upper bound of the decode speed of a ``size_bytes`` model: as much of it as the GPUs' budget allows on
    the GPUs (at their best quant family's efficiency), the rest on the CPU (used to skip variants that cannot
    reach the minimum speed without sizing them)."""
    c = Constants.from_rules(m.rules)
    on_gpu = min(size_bytes, m.gpu_budget_bytes) if m.gpus else 0
    bw_gpu = max((d.bandwidth_gbs for d in m.gpus), default=0.0) * (len(m.gpus) or 1)
    best = lambda b: max(c._pick(c.decode_efficiency, b).values())
    seconds = (size_bytes - on_gpu) * active_fraction / (m.cpu.bandwidth_gbs * 1e9 * best("cpu"))
    if on_gpu and bw_gpu:
        # the GPUs' own keys (an HBM or Hopper entry can exceed the backend's) and the backend's
        keys = {gpu_speed_key(m, g) for g in m.gpus} | {speed_backend(m.backend, m.vendor)}
        seconds += on_gpu * active_fraction / (bw_gpu * 1e9 * max(best(k) for k in keys))
    return 1.0 / seconds if seconds > 0 else float("inf")
