"""Generator of tiny (or header-only, sparse) random GGUF models that llama.cpp loads.

Tensor names come from gguf's own tables (``gguf.MODEL_TENSORS[arch]`` and ``gguf.TENSOR_NAMES``); shapes come
from ``SHAPES`` below, which follows the ``create_tensor`` calls in llama.cpp's ``src/llama-model.cpp``
(``load_tensors``). An architecture works when every tensor llama.cpp requires for it has a shape rule here and
``choose_tensors`` picks the set llama.cpp expects; ``supported_archs()`` lists the ones that can be written at all.

Facts this relies on: a gpt2-style byte vocabulary needs at least one merge or llama.cpp refuses it ("cannot find
tokenizer merges", src/llama-vocab.cpp); a header-only file truncated (sparse) to the full data size loads
on the CPU.

Used by tests (into tmp dirs) and benchmarks; never writes into the repository.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

import gguf
from gguf import MODEL_ARCH_NAMES, MODEL_TENSOR, MODEL_TENSORS, TENSOR_NAMES, GGMLQuantizationType as T

ARCH_BY_NAME = {name: arch for arch, name in MODEL_ARCH_NAMES.items()}

# A tiny chat template (ChatML) so chat-completion code paths have one.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclasses.dataclass(frozen=True)
class Spec:
    """Hyper-parameters of a generated model. Dimensions must be multiples of 32 for Q8_0/Q4_0 rows."""

    arch: str = "llama"
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int | None = None  # key_length = value_length; None: n_embd // n_head (written anyway)
    n_ff: int = 128
    n_vocab: int = 300
    n_ctx_train: int = 4096
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 64
    sliding_window: int = 0  # 0: no sliding window written
    tied: bool = False  # no output.weight: the output reuses token_embd
    wtype: T = T.F16  # type of 2-D matrices; 1-D tensors (norms, biases) are always F32
    embd_type: T | None = None  # token_embd type; None: wtype
    extra_kv: tuple[tuple[str, object], ...] = ()
    # SSM (mamba, mamba2, granitehybrid): {arch}.ssm.* keys; d_inner 0 means 2 * n_embd (the only expansion factor
    # llama.cpp's mamba / granite-hybrid load_arch_tensors accept); dt_rank is the head count for Mamba2.
    ssm_d_conv: int = 4
    ssm_d_inner: int = 0
    ssm_d_state: int = 16
    ssm_dt_rank: int = 8
    ssm_n_group: int = 1
    # Hybrids: the layers with attention (head_count_kv written per layer, 0 for the SSM layers); () = all layers.
    attn_layers: tuple[int, ...] = ()

    @property
    def hd(self) -> int:
        return self.head_dim or (self.n_embd // self.n_head if self.n_head else 0)

    @property
    def d_inner(self) -> int:
        return self.ssm_d_inner or 2 * self.n_embd

    @property
    def conv_dim(self) -> int:  # Mamba2 conv channels: d_inner + 2 * n_group * d_state
        return self.d_inner + 2 * self.ssm_n_group * self.ssm_d_state

    def has_attn(self, il: int) -> bool:
        return not self.attn_layers or il in self.attn_layers


Shape = Callable[[Spec], Sequence[int]]

# Shapes in ggml order (ne0 first), as in llama-model.cpp's create_tensor calls.
SHAPES: dict[MODEL_TENSOR, Shape] = {
    MODEL_TENSOR.TOKEN_EMBD: lambda s: (s.n_embd, s.n_vocab),
    MODEL_TENSOR.OUTPUT_NORM: lambda s: (s.n_embd,),
    MODEL_TENSOR.OUTPUT: lambda s: (s.n_embd, s.n_vocab),
    MODEL_TENSOR.ATTN_NORM: lambda s: (s.n_embd,),
    MODEL_TENSOR.ATTN_Q: lambda s: (s.n_embd, s.n_head * s.hd),
    MODEL_TENSOR.ATTN_K: lambda s: (s.n_embd, s.n_head_kv * s.hd),
    MODEL_TENSOR.ATTN_V: lambda s: (s.n_embd, s.n_head_kv * s.hd),
    MODEL_TENSOR.ATTN_QKV: lambda s: (s.n_embd, s.n_head * s.hd + 2 * s.n_head_kv * s.hd),
    MODEL_TENSOR.ATTN_OUT: lambda s: (s.n_head * s.hd, s.n_embd),
    MODEL_TENSOR.ATTN_Q_NORM: lambda s: (s.hd,),
    MODEL_TENSOR.ATTN_K_NORM: lambda s: (s.hd,),
    MODEL_TENSOR.ATTN_POST_NORM: lambda s: (s.n_embd,),
    MODEL_TENSOR.FFN_NORM: lambda s: (s.n_embd,),
    MODEL_TENSOR.FFN_POST_NORM: lambda s: (s.n_embd,),
    MODEL_TENSOR.FFN_GATE: lambda s: (s.n_embd, s.n_ff),
    MODEL_TENSOR.FFN_UP: lambda s: (s.n_embd, s.n_ff),
    MODEL_TENSOR.FFN_DOWN: lambda s: (s.n_ff, s.n_embd),
    MODEL_TENSOR.FFN_GATE_INP: lambda s: (s.n_embd, s.n_expert),
    MODEL_TENSOR.FFN_GATE_EXP: lambda s: (s.n_embd, s.n_ff_exp, s.n_expert),
    MODEL_TENSOR.FFN_UP_EXP: lambda s: (s.n_embd, s.n_ff_exp, s.n_expert),
    MODEL_TENSOR.FFN_DOWN_EXP: lambda s: (s.n_ff_exp, s.n_embd, s.n_expert),
}

# Tensors llama.cpp treats as optional (TENSOR_NOT_REQUIRED) or that are alternatives to others; left out by default.
OPTIONAL = {
    MODEL_TENSOR.ROPE_FREQS,
    MODEL_TENSOR.ATTN_ROT_EMBD,
    MODEL_TENSOR.ROPE_FACTORS_LONG,
    MODEL_TENSOR.ROPE_FACTORS_SHORT,
}
EXPERT_TENSORS = {MODEL_TENSOR.FFN_GATE_INP, MODEL_TENSOR.FFN_GATE_EXP, MODEL_TENSOR.FFN_UP_EXP, MODEL_TENSOR.FFN_DOWN_EXP}
DENSE_FFN = {MODEL_TENSOR.FFN_GATE, MODEL_TENSOR.FFN_UP, MODEL_TENSOR.FFN_DOWN}

# Per-architecture deviations from the generic rules, from llama-model.cpp's load_tensors cases.
# phi3: fused attn_qkv (q/k/v are the alternative) and a fused gate+up in ffn_up ({n_embd, 2*n_ff}), no ffn_gate.
# qwen2: q/k/v biases are part of the model.
# "parts": the (suffix, shape) tensors one entry stands for, where it is not a single ".weight" ("" = no suffix, as
# llama.cpp's ssm_a / ssm_d: tn(LLM_TENSOR_SSM_A, i)). "layer": which per-layer entries a layer has (hybrids).
_Parts = list[tuple[str, Shape]]
# Mamba (src/models/mamba.cpp load_arch_tensors): ssm_in {E, 2*d_inner}, conv1d {d_conv, d_inner} + bias,
# ssm_x {d_inner, dt_rank + 2*d_state}, ssm_dt {dt_rank, d_inner} + bias, ssm_a {d_state, d_inner}, ssm_d {d_inner},
# ssm_out {d_inner, E}.
MAMBA_PARTS: dict[MODEL_TENSOR, _Parts] = {
    MODEL_TENSOR.SSM_IN: [(".weight", lambda s: (s.n_embd, 2 * s.d_inner))],
    MODEL_TENSOR.SSM_CONV1D: [(".weight", lambda s: (s.ssm_d_conv, s.d_inner)), (".bias", lambda s: (s.d_inner,))],
    MODEL_TENSOR.SSM_X: [(".weight", lambda s: (s.d_inner, s.ssm_dt_rank + 2 * s.ssm_d_state))],
    MODEL_TENSOR.SSM_DT: [(".weight", lambda s: (s.ssm_dt_rank, s.d_inner)), (".bias", lambda s: (s.d_inner,))],
    MODEL_TENSOR.SSM_A: [("", lambda s: (s.ssm_d_state, s.d_inner))],
    MODEL_TENSOR.SSM_D: [("", lambda s: (s.d_inner,))],
    MODEL_TENSOR.SSM_OUT: [(".weight", lambda s: (s.d_inner, s.n_embd))],
}
# Mamba2 (src/models/mamba2.cpp; the same in granite-hybrid.cpp's SSM layers), n_head = dt_rank:
# ssm_in {E, 2*d_inner + 2*n_group*d_state + n_head}, conv1d {d_conv, conv_dim} + bias, ssm_dt bias only {n_head},
# ssm_a / ssm_d {1, n_head}, ssm_norm {d_inner / n_group, n_group}, ssm_out {d_inner, E}.
MAMBA2_PARTS: dict[MODEL_TENSOR, _Parts] = {
    MODEL_TENSOR.SSM_IN: [(".weight", lambda s: (s.n_embd, s.d_inner + s.conv_dim + s.ssm_dt_rank))],
    MODEL_TENSOR.SSM_CONV1D: [(".weight", lambda s: (s.ssm_d_conv, s.conv_dim)), (".bias", lambda s: (s.conv_dim,))],
    MODEL_TENSOR.SSM_DT: [(".bias", lambda s: (s.ssm_dt_rank,))],
    MODEL_TENSOR.SSM_A: [("", lambda s: (1, s.ssm_dt_rank))],
    MODEL_TENSOR.SSM_D: [("", lambda s: (1, s.ssm_dt_rank))],
    MODEL_TENSOR.SSM_NORM: [(".weight", lambda s: (s.d_inner // s.ssm_n_group, s.ssm_n_group))],
    MODEL_TENSOR.SSM_OUT: [(".weight", lambda s: (s.d_inner, s.n_embd))],
}
SSM_TENSORS = set(MAMBA_PARTS) | set(MAMBA2_PARTS)
ATTN_TENSORS = {MODEL_TENSOR.ATTN_Q, MODEL_TENSOR.ATTN_K, MODEL_TENSOR.ATTN_V, MODEL_TENSOR.ATTN_OUT}
SHEXP_TENSORS = {MODEL_TENSOR.FFN_GATE_SHEXP, MODEL_TENSOR.FFN_UP_SHEXP, MODEL_TENSOR.FFN_DOWN_SHEXP}


def _hybrid_layer(spec: Spec, il: int, t: MODEL_TENSOR) -> bool:
    """granite-hybrid load_arch_tensors: SSM tensors on the recurrent layers (head_count_kv 0), q/k/v/o on the
    attention ones, norms and FFN on all."""
    if t in SSM_TENSORS:
        return not spec.has_attn(il)
    if t in ATTN_TENSORS:
        return spec.has_attn(il)
    return True


OVERRIDES: dict[str, dict[str, object]] = {
    "phi3": {"drop": {MODEL_TENSOR.ATTN_Q, MODEL_TENSOR.ATTN_K, MODEL_TENSOR.ATTN_V},
             "shapes": {MODEL_TENSOR.FFN_UP: lambda s: (s.n_embd, 2 * s.n_ff)}},
    "qwen2": {"bias": (MODEL_TENSOR.ATTN_Q, MODEL_TENSOR.ATTN_K, MODEL_TENSOR.ATTN_V)},
    "mamba": {"parts": MAMBA_PARTS},
    "mamba2": {"parts": MAMBA2_PARTS},
    "granitehybrid": {"parts": MAMBA2_PARTS, "drop": SHEXP_TENSORS, "layer": _hybrid_layer},
}


def choose_tensors(spec: Spec) -> list[tuple[str, tuple[int, ...]]]:
    """The (name, ggml shape) list for ``spec``: gguf's tensor list for the arch, minus optional ones."""
    arch = ARCH_BY_NAME[spec.arch]
    ov = OVERRIDES.get(spec.arch, {})
    drop = set(OPTIONAL) | set(ov.get("drop", set()))  # type: ignore[arg-type]
    shapes = {**SHAPES, **ov.get("shapes", {})}  # type: ignore[dict-item]
    parts: dict[MODEL_TENSOR, _Parts] = ov.get("parts", {})  # type: ignore[assignment]
    in_layer: Callable[[Spec, int, MODEL_TENSOR], bool] = ov.get("layer", lambda s, il, t: True)  # type: ignore
    for t, ps in parts.items():
        shapes.setdefault(t, ps[0][1])
    if spec.n_expert:
        drop |= DENSE_FFN
    else:
        drop |= EXPERT_TENSORS
    if spec.tied:
        drop.add(MODEL_TENSOR.OUTPUT)
    out: list[tuple[str, tuple[int, ...]]] = []
    kinds = [t for t in MODEL_TENSORS[arch] if t not in drop]
    for t in kinds:  # any other norm is a 1-D vector over the embedding (attn_post_norm, ffn_pre_norm ...)
        if t not in shapes and TENSOR_NAMES[t].endswith("norm"):
            shapes[t] = lambda s: (s.n_embd,)
    missing = [TENSOR_NAMES[t] for t in kinds if t not in shapes]
    if missing:
        raise NotImplementedError(f"{spec.arch}: no shape rule for {missing}")
    glob = [t for t in kinds if "{bid}" not in TENSOR_NAMES[t]]
    per_layer = [t for t in kinds if "{bid}" in TENSOR_NAMES[t]]
    for t in glob:
        out.append((TENSOR_NAMES[t] + ".weight", tuple(shapes[t](spec))))
    for il in range(spec.n_layer):
        for t in per_layer:
            if not in_layer(spec, il, t):
                continue
            base = TENSOR_NAMES[t].format(bid=il)
            if t in parts:
                out.extend((base + suffix, tuple(f(spec))) for suffix, f in parts[t])
                continue
            shape = tuple(shapes[t](spec))
            out.append((base + ".weight", shape))
            if t in ov.get("bias", ()):  # type: ignore[operator]
                out.append((base + ".bias", (shape[1],)))
    return out


def supported_archs() -> list[str]:
    """Architectures whose (non-optional) gguf tensor list has shape rules here."""
    ok = []
    for arch, name in MODEL_ARCH_NAMES.items():
        try:
            choose_tensors(Spec(arch=name))
        except (NotImplementedError, KeyError):
            continue
        ok.append(name)
    return ok


def tensor_type(name: str, shape: Sequence[int], spec: Spec) -> T:
    if len(shape) == 1 or "ffn_gate_inp" in name:
        # norms, biases and the MoE router stay F32: llama-quant.cpp tensor_allows_quantization leaves them
        return T.F32
    if any(k in name for k in ("ssm_conv1d", "ssm_a", "ssm_d", "ssm_norm")) and "ssm_dt" not in name:
        # convert_hf_to_gguf / llama-quantize keep the SSM conv kernel, A, D and the group norm in F32 (ggml_ssm_conv
        # and ggml_ssm_scan take F32)
        return T.F32
    if shape[0] % gguf.GGML_QUANT_SIZES[spec.wtype][0]:
        return T.F32  # rows too short for the block (e.g. Mamba's ssm_dt {dt_rank, d_inner})
    if name.startswith("token_embd") and spec.embd_type is not None:
        return spec.embd_type
    return spec.wtype


def nbytes(shape: Sequence[int], qtype: T) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n = int(np.prod(shape))
    assert shape[0] % block == 0, (shape, qtype)
    return n // block * size


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's reversible byte -> printable-unicode map (openai/gpt-2 encoder.py), which llama.cpp's BPE decodes.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def vocab(n_vocab: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges: 256 byte tokens, one merge, ChatML/bos/eos specials, fillers up to n_vocab."""
    byte_tokens = list(_bytes_to_unicode().values())
    merged = "Ġt"
    # ChatML and bos/eos, plus the SentencePiece names llama.cpp's vocab loader looks up by name for models called
    # "phi3" (src/llama-vocab.cpp, per-token attributes: "</s>", "<unk>", "<s>", "<|endoftext|>" via
    # token_to_id.at: without them loading fails with "unordered_map::at").
    specials = ["<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>", "<unk>", "<s>", "</s>", "<|endoftext|>"]
    tokens = byte_tokens + [merged] + specials
    types = [1] * (len(byte_tokens) + 1) + [3] * len(specials)  # 1 NORMAL, 3 CONTROL (llama_token_type)
    if n_vocab < len(tokens):
        raise ValueError(f"n_vocab must be >= {len(tokens)}")
    for i in range(n_vocab - len(tokens)):
        tokens.append(f"<|fill{i}|>")
        types.append(4)  # USER_DEFINED: plain added text, no byte decoding needed
    return tokens, types, ["Ġ t"]


def _add_kv(w: gguf.GGUFWriter, spec: Spec) -> None:
    a = spec.arch
    w.add_name(f"tiny-{a}")
    w.add_file_type(1)
    w.add_block_count(spec.n_layer)
    w.add_context_length(spec.n_ctx_train)
    w.add_embedding_length(spec.n_embd)
    w.add_feed_forward_length(spec.n_ff)
    w.add_head_count(spec.n_head)
    if spec.attn_layers:  # hybrids: per-layer head_count_kv, 0 on the recurrent layers
        w.add_head_count_kv([spec.n_head_kv if spec.has_attn(il) else 0 for il in range(spec.n_layer)])
    else:
        w.add_head_count_kv(spec.n_head_kv)
    if spec.hd:  # Mamba has no attention (convert_hf_to_gguf writes head_count 0 and no key_length)
        w.add_key_length(spec.hd)
        w.add_value_length(spec.hd)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    if spec.n_expert:
        w.add_expert_count(spec.n_expert)
        w.add_expert_used_count(spec.n_expert_used)
        w.add_expert_feed_forward_length(spec.n_ff_exp)
    if spec.sliding_window:
        w.add_sliding_window(spec.sliding_window)
    if a == "phi3":
        w.add_rope_dimension_count(spec.hd)
    if a in ("mamba", "mamba2", "granitehybrid"):
        w.add_ssm_conv_kernel(spec.ssm_d_conv)
        w.add_ssm_inner_size(spec.d_inner)
        w.add_ssm_state_size(spec.ssm_d_state)
        w.add_ssm_time_step_rank(spec.ssm_dt_rank)
        if a != "mamba":
            w.add_ssm_group_count(spec.ssm_n_group)
    for key, value in spec.extra_kv:
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, list):
            w.add_array(key, value)
        else:
            w.add_string(key, str(value))
    add_vocab(w, spec.n_vocab)
    w.add_chat_template(CHAT_TEMPLATE)


def add_vocab(w: gguf.GGUFWriter, n_vocab: int) -> None:
    """The GPT-2-style tokenizer of ``vocab`` with its BOS and EOS ids."""
    tokens, types, merges = vocab(n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(257)
    w.add_eos_token_id(258)


def finish_sparse(w: gguf.GGUFWriter, path: str | os.PathLike[str], data_bytes: int) -> None:
    """Write the header, key-values and tensor infos added to ``w``, then truncate the file to its full size: the
    data region is a hole of ``data_bytes`` (the padded tensor sizes), never written, and every weight reads as 0."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    fout = w.fout[0]  # type: ignore[index]
    w.write_padding(fout, fout.tell())
    fout.flush()
    end = fout.tell() + data_bytes
    w.close()
    os.truncate(path, end)


def write(path: str | os.PathLike[str], spec: Spec, *, sparse: bool = False, seed: int = 0,
          split_max_tensors: int = 0) -> Path:
    """Write ``spec`` as a GGUF at ``path``.

    ``sparse``: header and tensor infos only, then the file is truncated to its full size (a hole, no data
    written), so a realistic-size model costs a few MB of disk. ``split_max_tensors``: write a split model
    (``-00001-of-0000N.gguf`` shards, gguf's own naming); the return value is the first shard.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, spec.arch, split_max_tensors=split_max_tensors)
    _add_kv(w, spec)
    total = 0
    for name, shape in choose_tensors(spec):
        qtype = tensor_type(name, shape, spec)
        nb = nbytes(shape, qtype)
        total += gguf.GGUFWriter.ggml_pad(nb, w.data_alignment)
        np_shape = tuple(reversed(shape))
        if sparse:
            w.add_tensor_info(name, np_shape, np.dtype(np.float32), nb, raw_dtype=qtype)
            continue
        data = (rng.standard_normal(np_shape, dtype=np.float32) * 0.02).astype(np.float32)
        if name.endswith("_norm.weight"):
            data = np.ones(np_shape, dtype=np.float32)
        if qtype == T.F32:
            w.add_tensor(name, data)
        elif qtype == T.F16:
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    if sparse:
        if split_max_tensors:
            raise ValueError("sparse split files are not supported")
        finish_sparse(w, path, total)
        return path
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if split_max_tensors:
        n = len(w.tensors)
        return path.with_name(f"{path.stem}-00001-of-{n:05d}.gguf")
    return path


# Specs used by the accuracy tests and the benchmark: one per architecture family the issue asks for.
TINY: dict[str, Spec] = {
    "llama": Spec("llama", n_layer=3, n_embd=128, n_head=4, n_head_kv=2, n_ff=256, n_vocab=1000, wtype=T.Q8_0),
    "qwen2": Spec("qwen2", n_layer=2, n_embd=128, n_head=4, n_head_kv=2, n_ff=320, n_vocab=2000, wtype=T.F16),
    "qwen3": Spec("qwen3", n_layer=3, n_embd=128, n_head=4, n_head_kv=1, head_dim=64, n_ff=256, n_vocab=800,
                  wtype=T.Q4_0, tied=True),
    "gemma3": Spec("gemma3", n_layer=7, n_embd=128, n_head=4, n_head_kv=2, head_dim=64, n_ff=256, n_vocab=600,
                   sliding_window=256, tied=True, wtype=T.F16),
    "gemma2": Spec("gemma2", n_layer=4, n_embd=128, n_head=4, n_head_kv=2, n_ff=256, n_vocab=600,
                   sliding_window=512, tied=True, wtype=T.Q8_0),
    "phi3": Spec("phi3", n_layer=2, n_embd=96, n_head=3, n_head_kv=3, n_ff=192, n_vocab=500, wtype=T.F16),
    "qwen3moe": Spec("qwen3moe", n_layer=2, n_embd=128, n_head=4, n_head_kv=2, n_ff=256, n_vocab=700, n_expert=8,
                     n_expert_used=2, n_ff_exp=64, wtype=T.Q8_0),
    "mistral3": Spec("mistral3", n_layer=2, n_embd=128, n_head=4, n_head_kv=1, n_ff=256, n_vocab=400, wtype=T.F16),
}

# A realistic-size model (Qwen2.5-0.5B shapes, config.json of Qwen/Qwen2.5-0.5B-Instruct: 24 layers, 896 embd,
# 14 heads, 2 KV heads, 4864 FFN, 151936 vocab, tied), Q8_0: written header-only (sparse).
QWEN2_05B = Spec("qwen2", n_layer=24, n_embd=896, n_head=14, n_head_kv=2, n_ff=4864, n_vocab=151936,
                 n_ctx_train=32768, tied=True, wtype=T.Q8_0)
