"""From a catalog entry to the estimator's ``ModelFacts``, without a GGUF header.

The tensors come from advisor.gguf.layout (the architecture's tensor inventory and llama-quantize's per-tensor type
choice), so the estimator can place layers on devices exactly as it does for a real file. Hyper-parameters follow
the catalog's ``Architecture``, which names them as GGUF does; the sliding-window pattern uses llama.cpp's rule
(layer ``il`` is local iff ``il % p < p - 1``; ``p = 1``: every layer local), as advisor.gguf.facts does.
"""

from __future__ import annotations

import dataclasses
from functools import cache

from advisor.gguf import ggml
from advisor.catalog.model import Architecture, Model, Variant
from advisor.gguf.facts import ModelFacts, TensorFacts


def _swa_layers(n_layer: int, window: int, pattern: int) -> tuple[bool, ...]:
    if window <= 0 or pattern <= 0:
        return (False,) * n_layer
    return tuple(il % pattern < pattern - 1 or pattern == 1 for il in range(n_layer))


def _kv_heads(model: Model) -> tuple[int, ...]:
    """KV heads per layer as llama.cpp sees them: 0 on the recurrent layers of hybrids (their load_hparams: "a layer
    is recurrent IFF n_head_kv is 0"), and 0 on Gemma 3n's layers from n_layer_kv_from_start on, which reuse an
    earlier layer's KV cache instead of having their own (llama_hparams::has_kv, src/llama-model.cpp)."""
    from advisor.gguf import layout as quant_layout
    a = model.arch
    out = []
    for il in range(a.n_layer):
        shared = a.n_layer_kv_from_start and il >= a.n_layer_kv_from_start
        out.append(0 if shared or quant_layout.is_recurrent_layer(a, il) else a.n_head_kv)
    return tuple(out)


def _recurrent(model: Model) -> dict:
    """ModelFacts' recurrent-state fields (GGUF {arch}.ssm.*, as convert_hf_to_gguf writes them)."""
    from advisor.gguf import layout as quant_layout
    a = model.arch
    layers = tuple(quant_layout.is_recurrent_layer(a, il) for il in range(a.n_layer))
    if not any(layers):
        return {}
    inner = a.ssm_d_inner or a.ssm_d_state * a.ssm_dt_rank  # qwen3next: ssm.inner_size = value heads x head dim
    return dict(ssm_d_conv=a.ssm_d_conv, ssm_d_inner=inner, ssm_d_state=a.ssm_d_state, ssm_dt_rank=a.ssm_dt_rank,
                ssm_n_group=a.ssm_n_group, recurrent_layers=layers)


def _skeleton(model: Model, variant: Variant, tensors: tuple[TensorFacts, ...] = (), file_bytes: int = 0) -> ModelFacts:
    from advisor.gguf import layout as quant_layout
    a = model.arch
    n = a.n_layer
    n_ff = tuple(a.n_ff if (not a.n_expert or il < a.n_layer_dense_lead) else 0 for il in range(n))
    heads = dict(n_head_kv=_kv_heads(model), head_dim_k=a.head_dim_k, head_dim_v=a.head_dim_v, key_length_mla=0,
                 value_length_mla=0)
    if quant_layout.mla_split(a):
        # as the converter writes a split-MLA file: the cache holds the latent (kv_lora_rank + rope per cell, one KV
        # head) and the per-head sizes move to the *_mla keys (convert_hf_to_gguf DeepseekV2Model)
        heads = dict(n_head_kv=tuple(min(h, 1) for h in heads["n_head_kv"]),
                     head_dim_k=a.kv_lora_rank + a.qk_rope_head_dim, head_dim_v=a.kv_lora_rank,
                     key_length_mla=a.qk_nope_head_dim + a.qk_rope_head_dim, value_length_mla=a.v_head_dim)
    return ModelFacts(
        path=f"catalog:{model.id}/{variant.quant}", files=variant.files, gguf_version=3, architecture=a.name,
        name=model.name, file_type=None, n_layer=n, n_embd=a.n_embd, n_head=(a.n_head,) * n, **heads,
        n_ff=n_ff if any(n_ff) else (a.n_ff,) * n, n_vocab=a.vocab_size, n_ctx_train=model.context_native,
        sliding_window=a.sliding_window, swa_layers=_swa_layers(n, a.sliding_window, a.sliding_window_pattern),
        n_expert=a.n_expert, n_expert_used=a.n_expert_used, n_ff_exp=a.n_ff_expert,
        n_expert_shared=a.n_expert_shared, kv_lora_rank=a.kv_lora_rank,
        tied_embeddings=a.tied_embeddings, tensors=tensors, data_offset=0, file_bytes=file_bytes,
        n_layer_nextn=a.n_layer_nextn, metadata=_metadata(a), **_recurrent(model),
    )


def _metadata(a: Architecture) -> dict[str, int]:
    """The GGUF key-values the estimator reads beyond ModelFacts' fields, as convert_hf_to_gguf writes them from the
    config the catalog records (leading dense layers, DeepSeek's RoPE width and Q LoRA rank)."""
    out: dict[str, int] = {}
    if a.n_layer_dense_lead:
        out[f"{a.name}.leading_dense_block_count"] = a.n_layer_dense_lead
    if a.kv_lora_rank:
        out[f"{a.name}.rope.dimension_count"] = a.qk_rope_head_dim
        out[f"{a.name}.attention.q_lora_rank"] = a.q_lora_rank
    return out


def facts_from_catalog(model: Model, variant: Variant) -> ModelFacts:
    """ModelFacts of a catalog GGUF variant, built from its derived per-tensor layout."""
    from advisor.gguf import layout as quant_layout
    if variant.format != "gguf":
        raise ValueError(f"{model.id} {variant.quant}: only GGUF variants have a llama.cpp layout")
    layout = quant_layout.gguf_layout(model.arch, variant.quant, imatrix=variant.imatrix)
    tensors = tuple(TensorFacts(p.tensor.name, p.tensor.shape, ggml.type_id(p.type), p.nbytes)
                    for p in layout.tensors)
    return _skeleton(model, variant, tensors, layout.file_bytes)


@cache  # the same tensor names come back for every quant of a model
def _layer_of(name: str) -> int | None:
    if not name.startswith("blk."):
        return None
    return int(name.split(".", 2)[1])


def _with_layers(facts: ModelFacts, globals_: tuple[TensorFacts, ...], per_layer: list[int],
                 experts: dict[str, int] | None = None, shapes: dict[str, tuple[int, ...]] | None = None) -> ModelFacts:
    """One tensor per layer, and a MoE layer's expert tensors one by one (``experts``: name -> bytes, a few per
    layer; named ``<name>.all``, as every compact tensor, which holds bytes, not a shape): --n-cpu-moe places those
    apart from the rest of the layer (the estimator matches ``_exps`` as llama.cpp's -ot pattern), and the
    scheduler's op offload copies one of them at a time (estimate's cpu_experts term).
    ``shapes``: the tensors estimate.is_marker names that the model has, kept as zero-byte markers so that the
    compute phases and the allocator replay see the same layer kinds (fused QKV, GELU or fused-up FFN, Q/K norms,
    routers, selection biases, DeepSeek's attention layout) as with the full facts."""
    layers = tuple(TensorFacts(f"blk.{il}.all", (b,), 24, b) for il, b in enumerate(per_layer))  # 24 = I8: 1 B/elt
    exps = tuple(TensorFacts(name + ".all", (b,), 24, b) for name, b in (experts or {}).items() if b)
    marks = tuple(TensorFacts(n, shape, 24, 0) for n, shape in (shapes or {}).items()
                  if (_layer_of(n) or 0) < facts.n_layer)  # not a NextN block's: llama.cpp does not run it
    return dataclasses.replace(facts, tensors=globals_ + layers + exps + marks)


def _shapes(tensors) -> dict[str, tuple[int, ...]]:  # noqa: ANN001 - TensorFacts or layout Tensors
    from advisor.gguf.estimate import is_marker
    return {t.name: tuple(t.shape) for t in tensors if is_marker(t.name)}


@cache
def _is_expert(name: str) -> bool:
    return "_exps" in name


def compact_catalog_facts(model: Model, variant: Variant, inventory: list | None = None) -> ModelFacts:
    """``compact(facts_from_catalog(...))`` without building a TensorFacts per tensor; ``inventory`` (the
    architecture's tensor list, quant_layout.tensor_inventory) may be passed in to share it across quants."""
    from advisor.gguf import layout as quant_layout
    a = model.arch
    inv = inventory if inventory is not None else quant_layout.tensor_inventory(a)
    per_layer, experts = [0] * a.n_layer, {}
    globals_ = []
    for t, ty in quant_layout.assign_types_to(a, inv, variant.quant, imatrix=variant.imatrix):
        nb = quant_layout.nbytes(ty, t.shape)
        il = _layer_of(t.name)
        if il is None:
            globals_.append(TensorFacts(t.name, t.shape, ggml.type_id(ty), nb))
        elif il < a.n_layer and _is_expert(t.name):
            experts[t.name] = nb
        elif il < a.n_layer:
            per_layer[il] += nb
    return _with_layers(_skeleton(model, variant), tuple(globals_), per_layer, experts, _shapes(inv))


@dataclasses.dataclass(frozen=True)
class InventorySums:
    """An architecture's tensor inventory in elements: the global tensors one by one, each layer's tensors (and
    apart from them its expert tensors) summed. Built once per model; every quant's approximate facts scale it."""

    globals_: tuple[tuple[str, tuple[int, ...], int], ...]
    per_layer: tuple[int, ...]
    experts: tuple[tuple[str, int], ...]  # each expert tensor's name and elements
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()


def inventory_sums(n_layer: int, inventory: list) -> InventorySums:
    per_layer, experts = [0] * n_layer, []
    globals_ = []
    for t in inventory:
        il = _layer_of(t.name)
        if il is None:
            globals_.append((t.name, t.shape, t.n_elements))
        elif il < n_layer and _is_expert(t.name):
            experts.append((t.name, t.n_elements))
        elif il < n_layer:
            per_layer[il] += t.n_elements
    return InventorySums(tuple(globals_), tuple(per_layer), tuple(experts), tuple(_shapes(inventory).items()))


def approx_catalog_facts(model: Model, variant: Variant, bpw: float, sums: InventorySums) -> ModelFacts:
    """Facts with every tensor at the variant's average bits per weight: for ranking many candidates cheaply.
    Plans are re-sized with ``compact_catalog_facts`` before they are shown."""
    globals_ = tuple(TensorFacts(name, shape, 24, int(n * bpw / 8)) for name, shape, n in sums.globals_)
    return _with_layers(_skeleton(model, variant), globals_, [int(n * bpw / 8) for n in sums.per_layer],
                        {name: int(n * bpw / 8) for name, n in sums.experts}, dict(sums.shapes))


def compact(facts: ModelFacts) -> ModelFacts:
    """The same facts with one tensor per repeating layer (its bytes summed) plus the global tensors.

    The estimator only sums bytes per layer and looks up ``token_embd``/``output*`` by name, so the estimate is
    identical; the planner calls it many times per candidate and this keeps each call cheap.
    """
    per_layer, experts = [0] * facts.n_layer, {}
    globals_ = []
    for t in facts.tensors:
        il = _layer_of(t.name)
        if il is None:
            globals_.append(t)
        elif il < facts.n_layer and _is_expert(t.name):
            experts[t.name] = experts.get(t.name, 0) + t.nbytes
        elif il < facts.n_layer:
            per_layer[il] += t.nbytes
    return _with_layers(facts, tuple(globals_), per_layer, experts, _shapes(facts.tensors))


def expert_fraction(facts: ModelFacts) -> float:
    """Share of the weight bytes read per token: 1 for dense models, less for MoE (only n_used of n_expert
    experts are read; shared experts and attention always)."""
    if not facts.n_expert or not facts.n_expert_used:
        return 1.0
    total = exps = 0
    for t in facts.tensors:
        total += t.nbytes
        if "_exps." in t.name:
            exps += t.nbytes
    if not total:
        return 1.0
    return (total - exps + exps * facts.n_expert_used / facts.n_expert) / total
