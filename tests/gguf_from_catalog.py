"""Header-only GGUFs of catalog models: the file a catalog variant (model + GGUF quant) really is, minus the weights.

For a catalog model and one of its GGUF quants this writes a GGUF with the model's architecture key-values, a byte
vocabulary padded to the catalog's ``vocab_size``, and every tensor the real file has, with its name, shape and ggml
type from ``advisor.gguf.layout.gguf_layout`` (llama-quantize's recipe, the same layout the planner sizes the
variant with). The data region is sparse: the file is truncated to its full size and nothing is written there, so a
1 GB model costs a few MB of disk, every weight reads as zero, and llama.cpp still loads and runs it (a zero model
answers garbage, but it answers).

Where each part comes from:

- Key-values: ``tests.ggufgen._add_kv`` (the architecture's hyper-parameters, a gpt2-style byte vocabulary with one
  merge, ChatML chat template) on a ``ggufgen.Spec`` made from the catalog's ``Architecture``; then the file type
  and name are set to the variant's, and what a Spec cannot say (different K/V head sizes, MoE shared experts,
  dense lead layers, MLA ranks) is added as in ``tests.gguf_from_log._write_kv``.
- Tensors: ``advisor.gguf.layout.gguf_layout(model.arch, quant, imatrix=variant.imatrix)``.
- The sparse data region: as ``ggufgen.write(sparse=True)`` and ``gguf_from_log.build``.

Limits: the vocabulary is always the gpt2-style byte vocabulary, also for catalog models whose real tokenizer is
SentencePiece (``tokenizer = "llama"``): tensor shapes depend on the vocabulary size only, not on its kind. The
sliding-window layer pattern is not written (llama.cpp hard-codes it per architecture).

Never writes into the repository: callers pass a path in a temporary directory.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import gguf
import numpy as np

from advisor.gguf import layout as ql
from advisor.catalog.load import load_catalog
from advisor.catalog.model import Model, Variant
from tests import ggufgen


def find(model_id: str, quant: str, file: str | None = None) -> tuple[Model, Variant]:
    """The catalog model ``model_id`` and its GGUF variant ``quant`` (and ``file``, where several repos have it)."""
    model = load_catalog().get(model_id)
    for v in model.all_variants():
        if v.format == "gguf" and v.quant == quant and (file is None or file in v.files):
            return model, v
    raise KeyError(f"{model_id} has no GGUF variant {quant}" + (f" with file {file}" if file else ""))


def layout(model: Model, variant: Variant) -> ql.Layout:
    """The variant's per-tensor layout, exactly as the planner sizes it (advisor/planner/bridge.py)."""
    return ql.gguf_layout(model.arch, variant.quant, imatrix=variant.imatrix)


def spec_of(model: Model) -> ggufgen.Spec:
    """A ggufgen.Spec with the catalog architecture's hyper-parameters (the key-values ggufgen._add_kv writes)."""
    a = model.arch
    return ggufgen.Spec(
        arch=a.name, n_layer=a.n_layer, n_embd=a.n_embd, n_head=a.n_head, n_head_kv=a.n_head_kv,
        head_dim=a.head_dim_k, n_ff=a.n_ff, n_vocab=a.vocab_size, n_ctx_train=model.context_native,
        n_expert=a.n_expert, n_expert_used=a.n_expert_used, n_ff_exp=a.n_ff_expert,
        sliding_window=a.sliding_window, tied=a.tied_embeddings,
    )  # fmt: skip


def file_type(quant: str) -> int:
    """llama.cpp's ftype number for a catalog quant (bartowski's _L/_XL files carry their base ftype)."""
    base = ql.EMBED_OUTPUT_Q8_SUFFIX.get(quant, quant)
    name = {"F32": "ALL_F32", "F16": "MOSTLY_F16", "BF16": "MOSTLY_BF16"}.get(base, f"MOSTLY_{base}")
    return int(gguf.LlamaFileType[name])


def _set_kv(w: gguf.GGUFWriter, key: str, value: object, vtype: gguf.GGUFValueType,
            sub_type: gguf.GGUFValueType | None = None) -> None:
    """Replace (or add) one key-value (an array of ``sub_type`` when given): _add_kv already wrote some keys, and
    GGUFWriter refuses duplicates."""
    if sub_type is not None:
        w.kv_data[0][key] = gguf.GGUFValue(value=value, type=gguf.GGUFValueType.ARRAY, sub_type=sub_type)
    else:
        w.kv_data[0][key] = gguf.GGUFValue(value=value, type=vtype)


def _write_kv(w: gguf.GGUFWriter, model: Model, variant: Variant, lay: ql.Layout) -> None:
    a = model.arch
    U32 = gguf.GGUFValueType.UINT32
    ggufgen._add_kv(w, spec_of(model))
    _set_kv(w, "general.name", model.name, gguf.GGUFValueType.STRING)
    _set_kv(w, "general.file_type", file_type(variant.quant), U32)
    if a.head_dim_v != a.head_dim_k:
        _set_kv(w, f"{a.name}.attention.value_length", a.head_dim_v, U32)
    if a.n_expert_shared:
        _set_kv(w, f"{a.name}.expert_shared_count", a.n_expert_shared, U32)
    if a.n_layer_dense_lead:
        _set_kv(w, f"{a.name}.leading_dense_block_count", a.n_layer_dense_lead, U32)
    if a.kv_lora_rank:
        _set_kv(w, f"{a.name}.attention.kv_lora_rank", a.kv_lora_rank, U32)
        _set_kv(w, f"{a.name}.attention.q_lora_rank", a.q_lora_rank, U32)
        _set_kv(w, f"{a.name}.rope.dimension_count", a.qk_rope_head_dim, U32)
    _write_arch_kv(w, model, lay)


def _write_arch_kv(w: gguf.GGUFWriter, model: Model, lay: ql.Layout) -> None:
    """The key-values llama.cpp's per-architecture load_arch_hparams requires (src/models/<arch>.cpp) beyond
    ggufgen's, as convert_hf_to_gguf writes them; values that size no buffer are the model config's."""
    a, n = model.arch, model.arch.name
    U32, F32 = gguf.GGUFValueType.UINT32, gguf.GGUFValueType.FLOAT32
    if any(t.tensor.name.endswith("attn_k_b.weight") for t in lay.tensors):
        # MLA with attn_kv_b split (convert_hf_to_gguf DeepseekV2Model): the cache holds the compressed KV
        # (kv_lora_rank + rope per cell, one KV head); the per-head sizes move to the *_mla keys
        _set_kv(w, f"{n}.attention.key_length", a.kv_lora_rank + a.qk_rope_head_dim, U32)
        _set_kv(w, f"{n}.attention.value_length", a.kv_lora_rank, U32)
        _set_kv(w, f"{n}.attention.key_length_mla", a.qk_nope_head_dim + a.qk_rope_head_dim, U32)
        _set_kv(w, f"{n}.attention.value_length_mla", a.v_head_dim, U32)
        _set_kv(w, f"{n}.attention.head_count_kv", 1, U32)
    if n == "starcoder2":  # LayerNorm, not RMSNorm (starcoder2.cpp: LLM_KV_ATTENTION_LAYERNORM_EPS)
        _set_kv(w, f"{n}.attention.layer_norm_epsilon", 1e-5, F32)
        # the converter writes no sliding window for it (conversion/starcoder.py), and llama.cpp runs full attention
        w.kv_data[0].pop(f"{n}.attention.sliding_window", None)
    if n == "gemma3n":  # conversion/gemma.py Gemma3nModel: per-layer SWA flags and the KV-sharing layers
        p = a.sliding_window_pattern
        flags = [il % p < p - 1 for il in range(a.n_layer)] if p else [True] * a.n_layer
        _set_kv(w, f"{n}.attention.sliding_window_pattern", flags, U32, sub_type=gguf.GGUFValueType.BOOL)
        if a.n_layer_kv_from_start:
            _set_kv(w, f"{n}.attention.shared_kv_layers", a.n_layer - a.n_layer_kv_from_start, U32)
    if n == "llama4":
        _set_kv(w, f"{n}.interleave_moe_layer_step", a.moe_layer_step or 1, U32)
    if a.n_layer_nextn:  # the MTP layers count in block_count (glm4-moe.cpp: nextn_predict_layers)
        _set_kv(w, f"{n}.block_count", a.n_layer + a.n_layer_nextn, U32)
        _set_kv(w, f"{n}.nextn_predict_layers", a.n_layer_nextn, U32)
    if a.ssm_d_inner:
        for key, value in (("conv_kernel", a.ssm_d_conv), ("inner_size", a.ssm_d_inner), ("state_size", a.ssm_d_state),
                           ("time_step_rank", a.ssm_dt_rank), ("group_count", a.ssm_n_group)):
            _set_kv(w, f"{n}.ssm.{key}", value, U32)
    if a.n_ff_shexp:  # shared-expert width apart from n_ff (llama.cpp falls back to n_ff without it)
        _set_kv(w, f"{n}.expert_shared_feed_forward_length", a.n_ff_shexp, U32)
    if n == "granitehybrid" and not a.n_ff:  # granite-hybrid.cpp sizes the experts by feed_forward_length
        _set_kv(w, f"{n}.feed_forward_length", a.n_ff_expert, U32)
    if a.full_attention_interval:
        _set_kv(w, f"{n}.full_attention_interval", a.full_attention_interval, U32)
    if a.attention_layers:  # granitehybrid: head_count_kv per layer, 0 on the Mamba2 layers
        kv = [a.n_head_kv if il in a.attention_layers else 0 for il in range(a.n_layer)]
        _set_kv(w, f"{n}.attention.head_count_kv", kv, U32, sub_type=U32)
    if n in ("qwen35", "qwen35moe"):  # multimodal rope sections (the config's mrope_section; sizes no buffer)
        _set_kv(w, f"{n}.rope.dimension_sections", [11, 11, 10, 0], U32, sub_type=U32)


def write(path: str | os.PathLike[str], model_id: str, quant: str, *, file: str | None = None) -> Path:
    """Write catalog model ``model_id`` quantized as ``quant`` header-only (sparse) at ``path``; returns the path."""
    model, variant = find(model_id, quant, file)
    return _write(Path(path), model, variant)


def write_any_quant(path: str | os.PathLike[str], model_id: str, quant: str) -> Path:
    """Like ``write``, for any GGUF quant llama-quantize can make of the model, listed in the catalog or not (F16 of
    a model published in K-quants only, say): llama-quantize's recipe without an importance matrix."""
    model = load_catalog().get(model_id)
    variant = next(v for v in model.all_variants() if v.format == "gguf")
    return _write(Path(path), model, dataclasses.replace(variant, quant=quant, imatrix=False))


def _write(path: Path, model: Model, variant: Variant,
           extra_kv: tuple[tuple[str, object, gguf.GGUFValueType], ...] = ()) -> Path:
    lay = layout(model, variant)
    w = gguf.GGUFWriter(path, model.arch.name)
    _write_kv(w, model, variant, lay)
    for key, value, vtype in extra_kv:  # keys a real file carries and the catalog does not say (routing options)
        _set_kv(w, key, value, vtype)
    total = 0
    for p in lay.tensors:
        qtype = gguf.GGMLQuantizationType[p.type]
        total += gguf.GGUFWriter.ggml_pad(p.nbytes, w.data_alignment)
        w.add_tensor_info(p.tensor.name, tuple(reversed(p.tensor.shape)), np.dtype(np.float32), p.nbytes,
                          raw_dtype=qtype)
    ggufgen.finish_sparse(w, path, total)  # the data region is a hole of the real size
    return path
