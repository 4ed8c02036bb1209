"""Tensor-by-tensor layout of a model file: which tensors an architecture has, which ggml type each one gets under a
quantization recipe, and the bytes that makes. Used to *derive* file sizes that were not measured.

Sources (read, not copied):

- Tensor names and shapes: llama.cpp ``gguf-py/gguf/constants.py`` (``MODEL_TENSORS`` per architecture) and
  ``convert_hf_to_gguf.py``; shapes are written ggml-style, ``ne0`` (the row length) first.
- The recipe: llama.cpp ``src/llama-quant.cpp`` (``llama_tensor_get_type_impl``, ``tensor_allows_quantization``,
  ``tensor_type_fallback``, ``llama_ftype_get_default_type``, ``init_quantize_state_counters``) at upstream commit
  007dbbf3fd17eefe9b47fee45f48f7ba5e62b714, re-read in the llama.cpp vendored by llama-cpp-python 0.3.36 for the
  newer architectures (src/models/<arch>.cpp). tests/test_catalog.py checks the recipes against real load logs
  (tests/data/gpu-logs) and llama.cpp's tools/quantize/README.md table.
- Type sizes: ``gguf.constants.GGML_QUANT_SIZES`` (block size, bytes per block) from the installed ``gguf`` package;
  no type table is kept here.
- Iteration order matters (the attn_v / ffn_down counters): llama.cpp's model loader keeps tensors in a map ordered
  by layer number, then by name (``weight_name_comparer`` in src/llama-model-loader.h); ``_sort_key`` mirrors it.

``gguf`` imports numpy (~0.1 s), so this module is imported only by commands that need sizes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

from advisor.gguf.ggml import TYPES

# GGUF files align every tensor's data to 32 bytes (GGUF_DEFAULT_ALIGNMENT, ggml/include/gguf.h).
GGUF_ALIGNMENT = 32

# Bytes of GGUF metadata per vocabulary entry, an estimate: tokenizer.ggml.tokens (8-byte length + ~7 bytes of text),
# token_type (int32) and, for BPE vocabularies, one merge string per token (8 + ~12 bytes); SentencePiece vocabularies
# carry a float32 score instead of merges. Calibrated on Qwen2.5-Coder-7B-Instruct-IQ4_XS.gguf (4,218,473,248 bytes):
# the file is 5.9 MB larger than its tensor data for a 152k BPE vocab, i.e. ~39 B/token. Small next to the 2 % target
# except for sub-1B models.
METADATA_BYTES_PER_TOKEN = {"gpt2": 39, "llama": 24}
# Chat template, architecture keys, tensor-info table header: a few kB (estimate).
METADATA_FIXED_BYTES = 16_384


class ArchFacts(Protocol):
    """What the layout needs from a catalog ``Architecture`` (advisor.catalog.model)."""

    name: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ff: int
    vocab_size: int
    tied_embeddings: bool
    n_expert: int
    n_expert_used: int
    n_expert_shared: int
    n_ff_expert: int
    n_layer_dense_lead: int
    kv_lora_rank: int
    q_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    tokenizer: str
    # Newer architectures read the fields below with getattr(a, name, 0) (see _opt), so older fact holders without
    # them keep working: n_layer_nextn, n_ff_shexp, ssm_d_conv, ssm_d_inner, ssm_d_state, ssm_dt_rank, ssm_n_group,
    # full_attention_interval, attention_layers, n_embd_per_layer, n_altup, laurel_rank, attn_bias.


def _opt(a: ArchFacts, name: str, default: Any = 0) -> Any:
    """An optional architecture fact (the newer hybrid / MTP / per-layer-embedding fields)."""
    return getattr(a, name, default)


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]  # ggml order: ne0 (row length) first

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class PlacedTensor:
    tensor: Tensor
    type: str  # ggml type name, e.g. "Q4_K"
    nbytes: int


@dataclass(frozen=True)
class Layout:
    tensors: tuple[PlacedTensor, ...]
    tensor_bytes: int  # sum of ggml_nbytes: what llama.cpp logs as "file size" and the model buffers
    file_bytes: int  # tensor data with alignment padding plus estimated metadata

    def bytes_by_type(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.tensors:
            out[p.type] = out.get(p.type, 0) + p.nbytes
        return out

    @property
    def n_params(self) -> int:
        return sum(p.tensor.n_elements for p in self.tensors)


# --------------------------------------------------------------------------------------------------------------------
# Tensor inventory per architecture


def _dense_attention(a: ArchFacts, p: str, *, bias: bool, qk_norm: bool) -> list[Tensor]:
    q, kv_k, kv_v = a.n_head * a.head_dim_k, a.n_head_kv * a.head_dim_k, a.n_head_kv * a.head_dim_v
    out = [
        Tensor(f"{p}attn_q.weight", (a.n_embd, q)),
        Tensor(f"{p}attn_k.weight", (a.n_embd, kv_k)),
        Tensor(f"{p}attn_v.weight", (a.n_embd, kv_v)),
        Tensor(f"{p}attn_output.weight", (a.n_head * a.head_dim_v, a.n_embd)),
    ]
    if bias:
        out += [Tensor(f"{p}attn_q.bias", (q,)), Tensor(f"{p}attn_k.bias", (kv_k,)), Tensor(f"{p}attn_v.bias", (kv_v,))]
    if qk_norm:
        out += [Tensor(f"{p}attn_q_norm.weight", (a.head_dim_k,)), Tensor(f"{p}attn_k_norm.weight", (a.head_dim_k,))]
    return out


def _gated_ffn(a: ArchFacts, p: str, n_ff: int) -> list[Tensor]:
    return [
        Tensor(f"{p}ffn_gate.weight", (a.n_embd, n_ff)),
        Tensor(f"{p}ffn_up.weight", (a.n_embd, n_ff)),
        Tensor(f"{p}ffn_down.weight", (n_ff, a.n_embd)),
    ]


def _experts(a: ArchFacts, p: str, *, bias: bool = False) -> list[Tensor]:
    e, f, x = a.n_embd, a.n_ff_expert, a.n_expert
    out = [
        Tensor(f"{p}ffn_gate_inp.weight", (e, x)),
        Tensor(f"{p}ffn_gate_exps.weight", (e, f, x)),
        Tensor(f"{p}ffn_up_exps.weight", (e, f, x)),
        Tensor(f"{p}ffn_down_exps.weight", (f, e, x)),
    ]
    if bias:  # gpt-oss
        out += [
            Tensor(f"{p}ffn_gate_inp.bias", (x,)),
            Tensor(f"{p}ffn_gate_exps.bias", (f, x)),
            Tensor(f"{p}ffn_up_exps.bias", (f, x)),
            Tensor(f"{p}ffn_down_exps.bias", (e, x)),
        ]
    if a.n_expert_shared or _opt(a, "n_ff_shexp"):
        s = _opt(a, "n_ff_shexp") or f * a.n_expert_shared
        out += [
            Tensor(f"{p}ffn_gate_shexp.weight", (e, s)),
            Tensor(f"{p}ffn_up_shexp.weight", (e, s)),
            Tensor(f"{p}ffn_down_shexp.weight", (s, e)),
        ]
    return out


def _layer(a: ArchFacts, i: int) -> list[Tensor]:
    p, e, arch = f"blk.{i}.", a.n_embd, a.name
    norm = [Tensor(f"{p}attn_norm.weight", (e,))]
    if arch in ("llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "granite", "mistral3", "smollm3"):
        t = norm + _dense_attention(a, p, bias=arch == "qwen2", qk_norm=arch in ("qwen3", "gemma3"))
        t += [Tensor(f"{p}ffn_norm.weight", (e,))] + _gated_ffn(a, p, a.n_ff)
        if arch in ("gemma2", "gemma3"):
            t += [Tensor(f"{p}post_attention_norm.weight", (e,)), Tensor(f"{p}post_ffw_norm.weight", (e,))]
        return t
    if arch == "qwen3moe":
        attn = _dense_attention(a, p, bias=False, qk_norm=True)
        return norm + attn + [Tensor(f"{p}ffn_norm.weight", (e,))] + _experts(a, p)
    if arch == "phi3":
        qkv = a.n_head * a.head_dim_k + 2 * a.n_head_kv * a.head_dim_k
        return norm + [
            Tensor(f"{p}attn_qkv.weight", (e, qkv)),
            Tensor(f"{p}attn_output.weight", (a.n_head * a.head_dim_v, e)),
            Tensor(f"{p}ffn_norm.weight", (e,)),
            Tensor(f"{p}ffn_up.weight", (e, 2 * a.n_ff)),  # gate and up fused (convert_hf_to_gguf Phi3MiniModel)
            Tensor(f"{p}ffn_down.weight", (a.n_ff, e)),
        ]
    if arch == "starcoder2":  # LayerNorm with bias, biases everywhere, plain (non-gated) MLP
        return norm + [Tensor(f"{p}attn_norm.bias", (e,))] + _dense_attention(a, p, bias=True, qk_norm=False) + [
            Tensor(f"{p}attn_output.bias", (e,)),
            Tensor(f"{p}ffn_norm.weight", (e,)),
            Tensor(f"{p}ffn_norm.bias", (e,)),
            Tensor(f"{p}ffn_up.weight", (e, a.n_ff)),
            Tensor(f"{p}ffn_up.bias", (a.n_ff,)),
            Tensor(f"{p}ffn_down.weight", (a.n_ff, e)),
            Tensor(f"{p}ffn_down.bias", (e,)),
        ]
    if mla_split(a):  # DeepSeek-V3/R1 (src/models/deepseek2.cpp, is_mla: split k_b / v_b)
        return _deepseek_v3_layer(a, p, i)
    if arch == "deepseek2":
        return _deepseek_v2_lite_layer(a, p, i)
    if arch == "gpt-oss":
        return norm + _dense_attention(a, p, bias=True, qk_norm=False) + [
            Tensor(f"{p}attn_output.bias", (e,)),
            Tensor(f"{p}attn_sinks.weight", (a.n_head,)),
            Tensor(f"{p}post_attention_norm.weight", (e,)),
        ] + _experts(a, p, bias=True)
    if arch == "glm4moe":
        return _glm4moe_layer(a, p, i)
    if arch in ("qwen3next", "qwen35", "qwen35moe"):
        return _qwen3next_layer(a, p, i)
    if arch == "granitehybrid":
        return _granite_hybrid_layer(a, p, i)
    if arch == "gemma3n":
        return _gemma3n_layer(a, p)
    if arch == "llama4":
        return _llama4_layer(a, p, i)
    raise ValueError(f"no tensor inventory for architecture {arch!r}")


def _deepseek_v2_lite_layer(a: ArchFacts, p: str, i: int) -> list[Tensor]:
    """deepseek2 without q-LoRA (V2-Lite): MLA with attn_kv_b unsplit as in 2024 conversions."""
    e, qk = a.n_embd, a.qk_nope_head_dim + a.qk_rope_head_dim
    t = [
        Tensor(f"{p}attn_norm.weight", (e,)),
        Tensor(f"{p}attn_q.weight", (e, a.n_head * qk)),
        Tensor(f"{p}attn_kv_a_mqa.weight", (e, a.kv_lora_rank + a.qk_rope_head_dim)),
        Tensor(f"{p}attn_kv_a_norm.weight", (a.kv_lora_rank,)),
        Tensor(f"{p}attn_kv_b.weight", (a.kv_lora_rank, a.n_head * (a.qk_nope_head_dim + a.v_head_dim))),
        Tensor(f"{p}attn_output.weight", (a.n_head * a.v_head_dim, e)),
        Tensor(f"{p}ffn_norm.weight", (e,)),
    ]
    return t + (_gated_ffn(a, p, a.n_ff) if i < a.n_layer_dense_lead else _experts(a, p))


def _glm4moe_layer(a: ArchFacts, p: str, i: int) -> list[Tensor]:
    """src/models/glm4-moe.cpp: q/k/v biases, dense lead layers, shared expert, expert bias."""
    e = a.n_embd
    t = [Tensor(f"{p}attn_norm.weight", (e,))] + _dense_attention(
        a, p, bias=bool(_opt(a, "attn_bias", 1)), qk_norm=False) + [Tensor(f"{p}post_attention_norm.weight", (e,))]
    if i < a.n_layer_dense_lead:
        return t + _gated_ffn(a, p, a.n_ff)
    t += _experts(a, p) + [Tensor(f"{p}exp_probs_b.bias", (a.n_expert,))]
    if i >= a.n_layer:  # the NextN / MTP block (convert_hf_to_gguf keeps it; llama.cpp skips it unless asked)
        t += [Tensor(f"{p}nextn.eh_proj.weight", (2 * e, e)), Tensor(f"{p}nextn.enorm.weight", (e,)),
              Tensor(f"{p}nextn.hnorm.weight", (e,)), Tensor(f"{p}nextn.shared_head_norm.weight", (e,))]
    return t


def _llama4_layer(a: ArchFacts, p: str, i: int) -> list[Tensor]:
    """src/models/llama4.cpp: every n_moe_layer_step-th layer MoE with one shared expert."""
    t = [Tensor(f"{p}attn_norm.weight", (a.n_embd,))] + _dense_attention(a, p, bias=False, qk_norm=False)
    t += [Tensor(f"{p}ffn_norm.weight", (a.n_embd,))]
    step = _opt(a, "moe_layer_step", 1) or 1
    if (i + 1) % step == 0:
        return t + _experts(a, p)
    return t + _gated_ffn(a, p, a.n_ff)


def _deepseek_v3_layer(a: ArchFacts, p: str, i: int) -> list[Tensor]:
    e, qk = a.n_embd, a.qk_nope_head_dim + a.qk_rope_head_dim
    t = [
        Tensor(f"{p}attn_norm.weight", (e,)),
        Tensor(f"{p}attn_q_a_norm.weight", (a.q_lora_rank,)),
        Tensor(f"{p}attn_kv_a_norm.weight", (a.kv_lora_rank,)),
        Tensor(f"{p}attn_q_a.weight", (e, a.q_lora_rank)),
        Tensor(f"{p}attn_q_b.weight", (a.q_lora_rank, a.n_head * qk)),
        Tensor(f"{p}attn_kv_a_mqa.weight", (e, a.kv_lora_rank + a.qk_rope_head_dim)),
        Tensor(f"{p}attn_k_b.weight", (a.qk_nope_head_dim, a.kv_lora_rank, a.n_head)),
        Tensor(f"{p}attn_v_b.weight", (a.kv_lora_rank, a.v_head_dim, a.n_head)),
        Tensor(f"{p}attn_output.weight", (a.n_head * a.v_head_dim, e)),
        Tensor(f"{p}ffn_norm.weight", (e,)),
    ]
    if i < a.n_layer_dense_lead:
        return t + _gated_ffn(a, p, a.n_ff)
    return t + _experts(a, p) + [Tensor(f"{p}exp_probs_b.bias", (a.n_expert,))]


def mla_split(a: ArchFacts) -> bool:
    """The catalog's GGUF of this model has attn_kv_b split into attn_k_b / attn_v_b (conversions after llama.cpp
    PR #12801, April 2025: the DeepSeek-V3/R1 files people run), so llama.cpp caches the compressed latent (MLA);
    the DeepSeek-V2-Lite files are 2024 conversions with attn_kv_b."""
    return a.name == "deepseek2" and bool(_opt(a, "q_lora_rank"))


def is_recurrent_layer(a: ArchFacts, il: int) -> bool:
    """Whether layer ``il`` of a hybrid is a recurrent (SSM / gated-delta-net) layer: qwen3next's every
    ``(il + 1) % full_attention_interval != 0`` layer; granite-hybrid's layers not in ``attention_layers``
    (llama.cpp marks them by head_count_kv 0)."""
    if a.name in ("qwen3next", "qwen35", "qwen35moe"):
        return (il + 1) % (_opt(a, "full_attention_interval", 4) or 4) != 0
    if a.name == "granitehybrid":
        return il not in tuple(_opt(a, "attention_layers", ()))
    return False


def _qwen3next_layer(a: ArchFacts, p: str, i: int) -> list[Tensor]:
    """src/models/qwen3next.cpp load_arch_tensors: gated attention (q doubled for the output gate) every
    full_attention_interval-th layer, gated delta net (fused qkv + gate, conv1d, dt, a, beta/alpha) elsewhere; every
    layer MoE with a gated shared expert. Qwen3.5 (src/models/qwen35.cpp, qwen35moe.cpp) splits ssm_beta / ssm_alpha
    and has a dense gated FFN (qwen35) or the same MoE (qwen35moe)."""
    e = a.n_embd
    t = [Tensor(f"{p}attn_norm.weight", (e,)), Tensor(f"{p}post_attention_norm.weight", (e,))]
    if not is_recurrent_layer(a, i):
        q = a.n_head * a.head_dim_k
        t += [Tensor(f"{p}attn_q.weight", (e, 2 * q)), Tensor(f"{p}attn_k.weight", (e, a.n_head_kv * a.head_dim_k)),
              Tensor(f"{p}attn_v.weight", (e, a.n_head_kv * a.head_dim_v)), Tensor(f"{p}attn_output.weight", (q, e)),
              Tensor(f"{p}attn_q_norm.weight", (a.head_dim_k,)), Tensor(f"{p}attn_k_norm.weight", (a.head_dim_k,))]
    else:
        key_dim = _opt(a, "ssm_d_state") * _opt(a, "ssm_n_group")
        value_dim = _opt(a, "ssm_d_state") * _opt(a, "ssm_dt_rank")
        t += [Tensor(f"{p}attn_qkv.weight", (e, 2 * key_dim + value_dim)),
              Tensor(f"{p}attn_gate.weight", (e, value_dim)),
              Tensor(f"{p}ssm_conv1d.weight", (_opt(a, "ssm_d_conv"), 2 * key_dim + value_dim)),
              Tensor(f"{p}ssm_dt.bias", (_opt(a, "ssm_dt_rank"),)), Tensor(f"{p}ssm_a", (_opt(a, "ssm_dt_rank"),)),
              Tensor(f"{p}ssm_norm.weight", (_opt(a, "ssm_d_state"),)), Tensor(f"{p}ssm_out.weight", (value_dim, e))]
        h = _opt(a, "ssm_dt_rank")
        if a.name == "qwen3next":
            t.append(Tensor(f"{p}ssm_ba.weight", (e, 2 * h)))
        else:
            t += [Tensor(f"{p}ssm_beta.weight", (e, h)), Tensor(f"{p}ssm_alpha.weight", (e, h))]
    if a.name == "qwen35":
        return t + _gated_ffn(a, p, a.n_ff)
    return t + _experts(a, p) + [Tensor(f"{p}ffn_gate_inp_shexp.weight", (e,))]


def _granite_hybrid_layer(a: ArchFacts, p: str, i: int) -> list[Tensor]:
    """src/models/granite-hybrid.cpp: Mamba2 layers (ssm_in of 2*d_inner + 2*n_group*d_state + n_head) except the
    attention layers; MoE with a shared expert, or a dense gated FFN when n_expert is 0."""
    e = a.n_embd
    t = [Tensor(f"{p}attn_norm.weight", (e,))]
    if is_recurrent_layer(a, i):
        d_inner, g = _opt(a, "ssm_d_inner"), _opt(a, "ssm_n_group")
        st, h = _opt(a, "ssm_d_state"), _opt(a, "ssm_dt_rank")
        t += [Tensor(f"{p}ssm_in.weight", (e, 2 * d_inner + 2 * g * st + h)),
              Tensor(f"{p}ssm_conv1d.weight", (_opt(a, "ssm_d_conv"), d_inner + 2 * g * st)),
              Tensor(f"{p}ssm_conv1d.bias", (d_inner + 2 * g * st,)), Tensor(f"{p}ssm_dt.bias", (h,)),
              Tensor(f"{p}ssm_a", (1, h)), Tensor(f"{p}ssm_d", (1, h)),
              Tensor(f"{p}ssm_norm.weight", (d_inner // max(1, g), g)), Tensor(f"{p}ssm_out.weight", (d_inner, e))]
    else:
        t += _dense_attention(a, p, bias=False, qk_norm=False)
    t.append(Tensor(f"{p}ffn_norm.weight", (e,)))
    if not a.n_expert:
        return t + _gated_ffn(a, p, a.n_ff)
    return t + _experts(a, p)


def _gemma3n_layer(a: ArchFacts, p: str) -> list[Tensor]:
    """src/models/gemma3n.cpp: Gemma-3 attention and FFN plus the per-layer input gate/projection, AltUp and LAuReL
    tensors."""
    e, pl, n_alt, lr = a.n_embd, _opt(a, "n_embd_per_layer"), _opt(a, "n_altup", 4), _opt(a, "laurel_rank")
    t = [Tensor(f"{p}attn_norm.weight", (e,))] + _dense_attention(a, p, bias=False, qk_norm=True)
    t += [Tensor(f"{p}post_attention_norm.weight", (e,)), Tensor(f"{p}ffn_norm.weight", (e,))]
    t += _gated_ffn(a, p, a.n_ff) + [Tensor(f"{p}post_ffw_norm.weight", (e,))]
    return t + [
        Tensor(f"{p}inp_gate.weight", (e, pl)), Tensor(f"{p}proj.weight", (pl, e)),
        Tensor(f"{p}post_norm.weight", (e,)), Tensor(f"{p}altup_correct_coef.weight", (n_alt, n_alt)),
        Tensor(f"{p}altup_correct_scale.weight", (e,)), Tensor(f"{p}altup_predict_coef.weight", (n_alt, n_alt * n_alt)),
        Tensor(f"{p}altup_router.weight", (e, n_alt)), Tensor(f"{p}altup_router_norm.weight", (e,)),
        Tensor(f"{p}laurel_l.weight", (e, lr)), Tensor(f"{p}laurel_r.weight", (lr, e)),
        Tensor(f"{p}laurel_post_norm.weight", (e,)),
    ]


def tensor_inventory(a: ArchFacts, ordered: bool = True) -> list[Tensor]:
    """The weight tensors of a GGUF conversion of ``a``, in llama.cpp's load order (``ordered=False``: in any order,
    for a caller that only sums them)."""
    tensors = [Tensor("token_embd.weight", (a.n_embd, a.vocab_size)), Tensor("output_norm.weight", (a.n_embd,))]
    if a.name == "starcoder2":
        tensors.append(Tensor("output_norm.bias", (a.n_embd,)))
    if not a.tied_embeddings:
        tensors.append(Tensor("output.weight", (a.n_embd, a.vocab_size)))
    if a.name == "gemma3n":  # per-layer embeddings and AltUp projections (src/models/gemma3n.cpp)
        pl, n_alt = _opt(a, "n_embd_per_layer") * a.n_layer, _opt(a, "n_altup", 4)
        # the converter pads the per-layer table to the full vocabulary, as llama.cpp requires ({.., n_vocab}):
        # convert_hf_to_gguf.py (conversion/gemma.py) Gemma3nModel pads embed_tokens_per_layer to vocab_size
        tensors += [Tensor("per_layer_token_embd.weight", (pl, a.vocab_size)),
                    Tensor("per_layer_model_proj.weight", (a.n_embd, pl)),
                    Tensor("per_layer_proj_norm.weight", (_opt(a, "n_embd_per_layer"),)),
                    Tensor("altup_proj.weight", (a.n_embd, a.n_embd, n_alt - 1)),
                    Tensor("altup_unembd_proj.weight", (a.n_embd, a.n_embd, n_alt - 1))]
    for i in range(a.n_layer + _opt(a, "n_layer_nextn")):
        tensors += _layer(a, i)
    if ordered:
        tensors.sort(key=_sort_key)
    return tensors


_BLK = re.compile(r"blk\.(\d+)\.")


def _sort_key(t: Tensor) -> tuple[int, str]:
    m = _BLK.match(t.name)
    return (int(m.group(1)) if m else -1, t.name)


# --------------------------------------------------------------------------------------------------------------------
# Recipes: llama-quantize's per-tensor type choice (src/llama-quant.cpp)

# ftype name -> default ggml type (llama_ftype_get_default_type).
FTYPE_DEFAULT = {
    "F32": "F32", "F16": "F16", "BF16": "BF16", "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q5_0": "Q5_0", "Q5_1": "Q5_1",
    "Q8_0": "Q8_0", "Q2_K": "Q2_K", "Q2_K_S": "Q2_K", "Q3_K_S": "Q3_K", "Q3_K_M": "Q3_K", "Q3_K_L": "Q3_K",
    "Q4_K_S": "Q4_K", "Q4_K_M": "Q4_K", "Q5_K_S": "Q5_K", "Q5_K_M": "Q5_K", "Q6_K": "Q6_K",
    "IQ2_XXS": "IQ2_XXS", "IQ2_XS": "IQ2_XS", "IQ2_S": "IQ2_XS", "IQ2_M": "IQ2_S", "IQ3_XXS": "IQ3_XXS",
    "IQ3_XS": "IQ3_S", "IQ3_S": "IQ3_S", "IQ3_M": "IQ3_S", "IQ1_S": "IQ1_S", "IQ1_M": "IQ1_M",
    "IQ4_NL": "IQ4_NL", "IQ4_XS": "IQ4_XS", "MXFP4_MOE": "MXFP4",
}

# Uploader conventions layered on an ftype: bartowski's "_L"/"_XL" files are the base ftype with
# --output-tensor-type Q8_0 --token-embedding-type Q8_0 (bartowski model cards: "Uses Q8_0 for embed and output
# weights"). Q3_K_XL is Q3_K_L with the same overrides.
EMBED_OUTPUT_Q8_SUFFIX = {"Q6_K_L": "Q6_K", "Q5_K_L": "Q5_K_M", "Q4_K_L": "Q4_K_M", "Q3_K_XL": "Q3_K_L",
                          "Q2_K_L": "Q2_K"}

QUANT_NAMES = tuple(FTYPE_DEFAULT) + tuple(EMBED_OUTPUT_Q8_SUFFIX)

_IQ_LOW = {"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M"}
# Fallback when a row length is not a multiple of the block size (tensor_type_fallback).
_FALLBACK = {
    "IQ1_S": "IQ4_NL", "IQ1_M": "IQ4_NL", "IQ2_XXS": "IQ4_NL", "IQ2_XS": "IQ4_NL", "IQ2_S": "IQ4_NL",
    "IQ3_XXS": "IQ4_NL", "IQ3_S": "IQ4_NL", "IQ4_XS": "IQ4_NL", "Q2_K": "Q4_0", "Q3_K": "Q4_0",
    "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
}


def block(type_name: str) -> tuple[int, int]:
    """(elements per block, bytes per block) of a ggml type (advisor.gguf.ggml's table, ggml.c type_traits)."""
    _, blck, size = TYPES[type_name]
    return blck, size


def nbytes(type_name: str, shape: tuple[int, ...]) -> int:
    """ggml_nbytes of a contiguous tensor: rows x (ne0 / block) x bytes per block."""
    blck, size = block(type_name)
    rows = 1
    for d in shape[1:]:
        rows *= d
    return rows * (shape[0] // blck) * size


@cache  # a planner call asks for the same names once per quant
def _category(name: str) -> str:
    # tensor_get_category: substring tests in this order.
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, cat in (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_kv_b"), ("attn_v.weight", "attn_v"),
                     ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                     ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


@cache
def _quantizable(t: Tensor) -> bool:
    # tensor_allows_quantization: 2-D/3-D tensors named *weight, but not norms nor the MoE router.
    n = t.name
    return (len(t.shape) >= 2 and n.endswith("weight") and "_norm.weight" not in n and "ffn_gate_inp.weight" not in n
            and not any(k in n for k in _NEVER_QUANTIZED))


# tensor_allows_quantization's name exclusions that matter here (small tensors kept as converted).
_NEVER_QUANTIZED = ("altup", "laurel", "per_layer_model_proj", "ssm_conv1d")
# The tensors convert_hf_to_gguf always writes in F32 (conversion/base.py, prepare_tensors: 1-D tensors, norms, the
# MoE routers, SSM conv1d, AltUp correct/predict coefficients, anything not named *.weight); the other tensors
# llama-quantize leaves alone keep the converted file's 16-bit type (BF16 and F16 weigh the same).
_F32_KEPT = ("_norm.weight", "ffn_gate_inp", "ssm_conv1d", "altup_correct_coef", "altup_predict_coef")


def _kept_type(t: Tensor) -> str:
    if len(t.shape) <= 1 or not t.name.endswith(".weight") or any(k in t.name for k in _F32_KEPT):
        return "F32"
    return "BF16"


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _is_70b(a: ArchFacts) -> bool:
    # llama.cpp names a llama model with 80 layers and GQA "70B" (llm_load_hparams), which enables the attn_v bump.
    return a.name == "llama" and a.n_layer == 80 and a.n_head != a.n_head_kv


def assign_types(a: ArchFacts, quant: str, *, imatrix: bool = True) -> list[tuple[Tensor, str]]:
    """The ggml type of every tensor of ``a`` quantized with llama-quantize ``quant`` (an ftype name, or a
    bartowski ``_L`` name). ``imatrix``: whether an importance matrix was given (changes IQ4/IQ3_XXS/Q4_0 choices)."""
    return assign_types_to(a, tensor_inventory(a), quant, imatrix=imatrix)


def assign_types_to(a: ArchFacts, tensors: list[Tensor], quant: str, *,
                    imatrix: bool = True) -> list[tuple[Tensor, str]]:
    """``assign_types`` over a given inventory (in llama.cpp's load order): for tensor sets ``tensor_inventory`` does
    not build (tests rebuild real files' inventories from their load logs)."""
    override = None
    if quant in EMBED_OUTPUT_Q8_SUFFIX:
        quant, override = EMBED_OUTPUT_Q8_SUFFIX[quant], "Q8_0"
    if quant not in FTYPE_DEFAULT:
        raise ValueError(f"unknown GGUF quantization {quant!r}; known: {', '.join(QUANT_NAMES)}")
    ftype, default = quant, FTYPE_DEFAULT[quant]
    tied = not any(t.name == "output.weight" for t in tensors)
    n_gqa = a.n_head // max(1, a.n_head_kv)
    n_expert = a.n_expert
    cats = [_category(t.name) for t in tensors]
    n_attn_wv = sum(1 for c in cats if c in ("attn_v", "attn_qkv", "attn_kv_b"))
    n_layer = a.n_layer
    counters = {"attn_wv": 0, "ffn_down": 0, "ffn_gate": 0, "ffn_up": 0}
    quantized = default not in ("F32", "F16", "BF16")
    out: list[tuple[Tensor, str]] = []
    for t, cat in zip(tensors, cats):
        if not _quantizable(t):
            out.append((t, _kept_type(t)))
            continue
        if override and cat in ("token_embd", "output"):
            out.append((t, override))
            continue
        new = default
        if quantized:
            layer = int(_BLK.match(t.name).group(1)) if _BLK.match(t.name) else -1
            new = _choose(a, t, cat, ftype, default, tied, n_gqa, n_expert, n_attn_wv, n_layer, counters, layer,
                          imatrix)
            blck = block(new)[0]
            if t.shape[0] % blck:
                new = _FALLBACK.get(new, new)
                if t.shape[0] % block(new)[0]:
                    new = "F16"
        out.append((t, new))
    return out


def _choose(a: ArchFacts, t: Tensor, cat: str, ftype: str, new: str, tied: bool, n_gqa: int, n_expert: int,
            n_attn_wv: int, n_layer: int, c: dict[str, int], layer: int, imatrix: bool) -> str:
    """One pass of llama_tensor_get_type_impl for tensor ``t`` (mutates the counters like llama.cpp does)."""
    i_layer_of = (lambda key: layer) if n_expert > 1 else (lambda key: c[key])
    if cat == "output" or (tied and cat == "token_embd"):
        return _choose_output(t, ftype, new)
    if ftype == "MXFP4_MOE":
        return "MXFP4" if len(t.shape) > 2 and t.shape[2] > 1 else "Q8_0"
    if cat == "token_embd":
        if ftype in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
            return "Q2_K"
        if ftype in ("IQ2_S", "IQ2_M", "IQ3_XXS"):
            return "IQ3_S"
        return new
    is_v = cat in ("attn_v", "attn_qkv", "attn_kv_b")
    if ftype in _IQ_LOW:
        return _choose_iq_low(cat, ftype, new, is_v, n_gqa, n_expert, n_layer, c)
    if is_v:
        return _choose_attn_v(a, ftype, new, n_gqa, n_expert, n_attn_wv, c, imatrix)
    if cat == "attn_k":
        if n_expert == 8:
            return "Q8_0"
        if ftype == "IQ3_XS":
            return "IQ3_XXS"
        if ftype == "IQ3_XXS":
            return "IQ2_S"
        return new
    if cat == "attn_q":
        if ftype == "IQ3_XS":
            return "IQ3_XXS"
        if ftype == "IQ3_XXS":
            return "IQ2_S"
        return new
    if cat == "ffn_down":
        return _choose_ffn_down(ftype, new, i_layer_of("ffn_down"), n_layer, n_expert, c, imatrix)
    if cat == "attn_output":
        if n_expert == 8:
            if ftype in ("Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ3_S",
                         "IQ3_M", "IQ4_XS"):
                new = "Q5_K"
        else:
            new = {"Q2_K": "Q3_K", "IQ3_XXS": "IQ3_S", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K", "IQ3_M": "Q4_K"}.get(
                ftype, new)
        return new
    if cat in ("ffn_gate", "ffn_up"):
        i, n = i_layer_of(cat), n_layer
        if ftype == "IQ3_XS" and n // 8 <= i < 7 * n // 8:
            new = "IQ3_XXS"
        c[cat] += 1
        return new
    return new


def _choose_output(t: Tensor, ftype: str, new: str) -> str:
    """The output tensor's type (and token_embd's when it doubles as the output)."""
    if ftype == "MXFP4_MOE":
        return "Q8_0"
    if t.shape[0] % block(new)[0]:
        return "Q8_0"
    if ftype in ("IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"):
        return "Q5_K"
    return "Q6_K" if new != "Q8_0" else new


def _choose_iq_low(cat: str, ftype: str, new: str, is_v: bool, n_gqa: int, n_expert: int, n_layer: int,
                   c: dict[str, int]) -> str:
    """The IQ1/IQ2 ftypes' own branch: attn_v, attn_k of 8-expert models, the first ffn_down layers, attn_output
    (counts attn_v and ffn_down tensors in ``c``)."""
    if is_v:
        new = "Q4_K" if (n_gqa >= 4 or n_expert >= 4) else ("IQ3_S" if ftype in ("IQ2_S", "IQ2_M") else "Q2_K")
        c["attn_wv"] += 1
    elif n_expert == 8 and cat == "attn_k":
        new = "Q4_K"
    elif cat == "ffn_down":
        if c["ffn_down"] < n_layer // 8:
            new = "IQ3_S" if ftype in ("IQ2_S", "IQ2_M") else "Q2_K"
        c["ffn_down"] += 1
    elif cat == "attn_output":
        if n_expert == 8:
            new = "Q5_K"
        elif ftype in ("IQ1_S", "IQ1_M"):
            new = "IQ2_XXS"
        elif ftype in ("IQ2_S", "IQ2_M"):
            new = "IQ3_S"
    return new


def _choose_attn_v(a: ArchFacts, ftype: str, new: str, n_gqa: int, n_expert: int, n_attn_wv: int,
                   c: dict[str, int], imatrix: bool) -> str:
    """attn_v (and the fused attn_qkv / attn_kv_b, which count as it) of the ``c["attn_wv"]``-th layer of
    ``n_attn_wv`` (counts it in ``c``)."""
    i = c["attn_wv"]
    if ftype == "Q2_K":
        new = "Q4_K" if n_gqa >= 4 else "Q3_K"
    elif ftype == "Q2_K_S" and n_gqa >= 4:
        new = "Q4_K"
    elif ftype == "IQ3_XXS":
        new = "Q4_K" if n_gqa >= 4 else ("IQ3_S" if not imatrix else "IQ3_XXS")
    elif ftype in ("IQ3_XS", "IQ3_S") and n_gqa >= 4:
        new = "Q4_K"
    elif ftype == "IQ3_M":
        new = "Q4_K"
    elif ftype == "Q3_K_M":
        new = "Q5_K" if i < 2 else "Q4_K"
    elif ftype == "Q3_K_L":
        new = "Q5_K"
    elif ftype in ("IQ4_NL", "IQ4_XS") and n_gqa >= 4:
        new = "Q5_K"
    elif ftype in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i, n_attn_wv):
        new = "Q6_K"
    elif ftype == "Q4_K_S" and i < 4:
        new = "Q5_K"
    if _is_70b(a) and new in ("Q3_K", "Q4_K"):
        new = "Q5_K"
    if n_expert == 8:
        new = "Q8_0"
    c["attn_wv"] += 1
    return new


def _choose_ffn_down(ftype: str, new: str, i: int, n: int, n_expert: int, c: dict[str, int], imatrix: bool) -> str:
    """ffn_down of layer ``i`` of ``n`` (counts it in ``c``)."""
    if ftype == "Q2_K":
        new = "Q3_K"
    elif ftype == "Q2_K_S":
        if i < n // 8:
            new = "Q4_K"
    elif ftype == "IQ3_XXS" and not imatrix:
        new = "Q4_K" if i < n // 8 else "Q3_K"
    elif ftype == "Q3_K_M":
        new = "Q5_K" if i < n // 16 else "Q4_K"  # the Q3_K branch is Falcon-only
    elif ftype == "IQ3_M" and (i < n // 8 or (n_expert == 8 and _use_more_bits(i, n))):
        new = "Q4_K"
    elif ftype == "Q3_K_L":
        new = "Q5_K"
    elif ftype == "Q4_K_M":
        if _use_more_bits(i, n):
            new = "Q6_K"
    elif i < n // 8 and ftype in ("IQ4_NL", "IQ4_XS") and not imatrix:
        new = "Q5_K"
    elif ftype == "Q5_K_M" and _use_more_bits(i, n):
        new = "Q6_K"
    elif ftype == "Q4_K_S" and i < n // 8:
        new = "Q5_K"
    elif ftype in ("Q4_0", "Q5_0") and imatrix and i < n // 8:
        new = "Q4_1" if ftype == "Q4_0" else "Q5_1"
    c["ffn_down"] += 1
    return new


def gguf_layout(a: ArchFacts, quant: str, *, imatrix: bool = True) -> Layout:
    """Per-tensor types and bytes of ``a`` as a GGUF file quantized with ``quant``, and the file's size."""
    placed = tuple(PlacedTensor(t, ty, nbytes(ty, t.shape)) for t, ty in assign_types(a, quant, imatrix=imatrix))
    tensor_bytes = sum(p.nbytes for p in placed)
    data = sum(-(-p.nbytes // GGUF_ALIGNMENT) * GGUF_ALIGNMENT for p in placed)
    infos = sum(8 + len(p.tensor.name) + 4 + 8 * len(p.tensor.shape) + 4 + 8 for p in placed)
    meta = METADATA_FIXED_BYTES + infos + METADATA_BYTES_PER_TOKEN.get(a.tokenizer, 39) * a.vocab_size
    return Layout(placed, tensor_bytes, data + meta)


# --------------------------------------------------------------------------------------------------------------------
# Other formats (safetensors checkpoints), derived from the same inventory


def _bits_of(fmt: str, t: Tensor, cat: str, quant: str) -> float:
    """Bits per element of tensor ``t`` in a non-GGUF checkpoint of format ``fmt``."""
    linear = len(t.shape) >= 2 and cat not in ("token_embd", "output") and _quantizable(t)
    if fmt == "safetensors":
        return 32.0 if quant == "f32" else 16.0
    if fmt in ("awq", "gptq") and linear:
        # 4-bit weights packed in int32 plus, per group of 128 input channels, an fp16 scale and a packed 4-bit zero
        # (AutoAWQ / AutoGPTQ default group_size 128; GPTQ also stores a g_idx int32 per input channel).
        group = 128
        bits = 4 + (16 + 4) / group
        if fmt == "gptq":
            bits += 32 / (t.shape[1] if len(t.shape) > 1 else 1)
        return bits
    if fmt == "fp8" and linear:
        return 8.0  # FP8 E4M3 weights; per-channel scales are negligible (compressed-tensors FP8-dynamic)
    if fmt == "mxfp4" and len(t.shape) > 2 and t.shape[2] > 1:
        return 4.25  # OCP MXFP4: 32 4-bit values + one E8M0 scale byte (gpt-oss checkpoints: MoE experts only)
    return 16.0


def checkpoint_bytes(a: ArchFacts, fmt: str, quant: str = "bf16") -> int:
    """Bytes of a safetensors checkpoint (bf16/fp16, or AWQ/GPTQ 4-bit, FP8, MXFP4 experts): tensor data only; the
    safetensors JSON header is a few hundred kB at most."""
    total = 0.0
    for t in tensor_inventory(a):
        total += t.n_elements * _bits_of(fmt, t, _category(t.name), quant) / 8
    return int(total)


def describe(layout: Layout) -> dict[str, Any]:
    """A JSON-ready summary: bytes per ggml type and the totals."""
    return {
        "tensor_bytes": layout.tensor_bytes,
        "file_bytes": layout.file_bytes,
        "bytes_by_type": dict(sorted(layout.bytes_by_type().items(), key=lambda kv: -kv[1])),
    }
