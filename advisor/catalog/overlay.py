"""The user-level catalog overlay: sizes measured by ``advisor catalog refresh`` and models added by
``advisor catalog add``, merged over the packaged catalog by ``advisor.catalog.model.load_catalog``. The packaged files are
never written.

The overlay is one JSON file, ``home_dir()/catalog/overlay.json`` (advisor's state dir: $ADVISOR_HOME, else
$XDG_DATA_HOME/advisor or ~/.local/share/advisor; advisor.settings). It is loaded as strictly as the packaged
catalog (advisor.strict.build over the dataclasses below, user models through the same ``Model`` schema and
validation), so a hand-edited mistake is one error naming the file, never a silently ignored entry. Only the standard
library is imported here: ``advisor catalog list --json`` reads it on every run (benchmarks/catalog_list.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor import settings
from advisor.catalog.model import CatalogError, Model, Variant, _validate_model
from advisor.strict import build, open_regular

OVERLAY_SCHEMA = 1


@dataclass(frozen=True)
class MeasuredSize:
    """A variant's file size from a Hub listing (``advisor catalog refresh``)."""

    model: str  # catalog id
    repo: str
    files: tuple[str, ...]
    quant: str
    size_bytes: int
    date: str  # YYYY-MM-DD of the listing
    commit: str = ""


@dataclass(frozen=True)
class OverlayFile:
    schema: int
    sizes: tuple[MeasuredSize, ...] = ()
    model: tuple[Model, ...] = ()


def overlay_path() -> Path:
    return settings.home_dir() / "catalog" / "overlay.json"


def load_overlay(path: Path | None = None) -> OverlayFile | None:
    """The overlay, or None when there is none. Raises CatalogError naming the file when it is malformed."""
    from advisor.strict import load_json

    p = overlay_path() if path is None else path
    if not p.exists() and not p.is_symlink():
        return None

    class OverlayReadError(CatalogError):
        hint = "fix or delete the file; 'advisor catalog refresh' writes it again"

    data = load_json(p, MAX_OVERLAY_BYTES, OverlayReadError)  # regular files only, bounded, depth-checked
    ov: OverlayFile = build(OverlayFile, data, str(p), CatalogError)
    if ov.schema != OVERLAY_SCHEMA:
        raise CatalogError(f"{p}: schema {ov.schema}, this advisor reads schema {OVERLAY_SCHEMA}")
    for i, m in enumerate(ov.model):
        _validate_model(m, f"{p}: model[{i}] ({m.id})")
    return ov


def _plain(obj: Any) -> Any:
    """A dataclass as JSON data in the catalog's own key names, defaults and None left out (TOML has no null)."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if v is None or (f.default is not dataclasses.MISSING and v == f.default) or (
                    f.default_factory is not dataclasses.MISSING and v == f.default_factory()):  # type: ignore[misc]
                continue
            out[f.name] = _plain(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [_plain(x) for x in obj]
    return obj


def save_overlay(ov: OverlayFile, path: Path | None = None) -> Path:
    """Write atomically (a concurrent ``catalog list`` never reads half a file)."""
    from advisor.store.files import write_private  # 0600 in 0700 directories, like all of ADVISOR_HOME

    p = overlay_path() if path is None else path
    doc = {"schema": OVERLAY_SCHEMA, "sizes": _plain(ov.sizes), "model": _plain(ov.model)}
    return write_private(p, json.dumps(doc, indent=1) + "\n")


def with_sizes(ov: OverlayFile | None, sizes: list[MeasuredSize]) -> OverlayFile:
    """``ov`` with ``sizes`` replacing the entries of the same (model, repo, files)."""
    ov = ov or OverlayFile(OVERLAY_SCHEMA)
    new = {(s.model, s.repo, s.files) for s in sizes}
    kept = [s for s in ov.sizes if (s.model, s.repo, s.files) not in new]
    return dataclasses.replace(ov, sizes=tuple(kept + sizes))


def with_model(ov: OverlayFile | None, model: Model, replace: bool = False) -> OverlayFile:
    ov = ov or OverlayFile(OVERLAY_SCHEMA)
    if not replace and any(m.id == model.id for m in ov.model):
        raise CatalogError(f"a user model {model.id!r} is already in the overlay", hint="give another --id, or --replace")
    return dataclasses.replace(ov, model=tuple([m for m in ov.model if m.id != model.id] + [model]))


def size_where(date: str) -> str:
    return f"advisor catalog refresh {date} from the Hub listing"


def apply(models: list[Model], ov: OverlayFile, where: str) -> tuple[list[Model], frozenset[str]]:
    """Packaged models with the overlay's measured sizes, plus its user models; the ids of those user models.

    A measured size from the overlay becomes an explicit variant, which wins over the GGUF group's derived one
    (catalog._expand). A packaged size measured as tensor data (from a llama.cpp log) is kept: the listing measures
    the file, a different quantity. Entries for variants the catalog no longer has are ignored."""
    by_model: dict[str, list[MeasuredSize]] = {}
    for s in ov.sizes:
        by_model.setdefault(s.model, []).append(s)
    out = []
    for m in models:
        sizes = by_model.get(m.id)
        if sizes:
            m = _with_measured(m, sizes)
        out.append(m)
    known = {m.id for m in out}
    for um in ov.model:
        if um.id in known:
            raise CatalogError(f"{where}: user model id {um.id!r} is also a catalog model id",
                               hint="rename it in the overlay")
        known.add(um.id)
        out.append(um)
    return out, frozenset(um.id for um in ov.model)


def _with_measured(m: Model, sizes: list[MeasuredSize]) -> Model:
    explicit = list(m.variants)
    for s in sizes:
        for v in m.all_variants():
            if v.repo == s.repo and tuple(v.files) == s.files and v.quant == s.quant:
                break
        else:
            continue
        if v.size_source == "measured" and v.size_measures == "tensor_data":
            continue
        nv = dataclasses.replace(v, size_source="measured", size_bytes=s.size_bytes, size_where=size_where(s.date),
                                 size_measures="file", size_rounding_bytes=0)
        explicit = [e for e in explicit if (e.repo, e.quant) != (v.repo, v.quant)] + [nv]
    return dataclasses.replace(m, variants=tuple(explicit))


# --------------------------------------------------------------------------------------------------------------------
# Building a user model (advisor catalog add)


def slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")
    return s or "model"


def guess_quant(facts: Any, names: list[str], given: str | None, known: frozenset[str]) -> str:
    """The variant's quant: --quant, else a known quant name in the file name, else general.file_type
    (gguf.LlamaFileType names: MOSTLY_Q4_K_M -> Q4_K_M), else the type holding most tensor bytes."""
    if given:
        q = given.upper()
        if q not in known:
            raise CatalogError(f"{given!r} is not a GGUF quantization advisor knows")
        return q
    for n in names:
        for q in sorted(known, key=len, reverse=True):  # Q4_K_M before Q4_K ... before Q4
            if re.search(rf"(?:^|[-_.]){re.escape(q)}(?:[-_.]|$)", Path(n).name, re.IGNORECASE):
                return q
    try:
        import gguf

        name = gguf.LlamaFileType(facts.file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        if name in known:
            return name
    except (ValueError, TypeError, ImportError):
        pass
    by_type: dict[str, int] = {}
    for t in facts.tensors:
        by_type[t.type_name.upper()] = by_type.get(t.type_name.upper(), 0) + t.nbytes
    top = max(by_type, key=by_type.__getitem__, default="")
    if top in known:
        return top
    raise CatalogError("cannot tell the file's quantization from its name or header", hint="give --quant")


def model_from_facts(facts: Any, *, model_id: str, repo: str, files: list[str], size_bytes: int, quant: str,
                     tasks: list[str], source: str, date: str) -> Model:
    """A user Model from a GGUF header's facts (advisor.gguf.facts.ModelFacts)."""
    from advisor.catalog.model import Architecture, Sampling
    from advisor.gguf.facts import SWA_PERIOD_DEFAULT

    meta = facts.metadata
    arch = facts.architecture
    pattern = meta.get(f"{arch}.attention.sliding_window_pattern")
    period = pattern if isinstance(pattern, int) else SWA_PERIOD_DEFAULT.get(arch, 0)
    total = sum(_elements(t.shape) for t in facts.tensors)
    experts = sum(_elements(t.shape) for t in facts.tensors if "_exps" in t.name)
    active = None
    if facts.n_expert:
        active = round((total - experts + experts * facts.n_expert_used / facts.n_expert) / 1e9, 6)
    a = Architecture(
        name=arch, n_layer=facts.n_layer, n_embd=facts.n_embd, n_head=max(facts.n_head, default=0),
        n_ff=max(facts.n_ff, default=0), vocab_size=facts.n_vocab, tied_embeddings=facts.tied_embeddings,
        source=source, tokenizer="llama" if meta.get("tokenizer.ggml.model") == "llama" else "gpt2",
        sliding_window=facts.sliding_window, sliding_window_pattern=period if facts.sliding_window else 0,
        n_expert=facts.n_expert, n_expert_used=facts.n_expert_used, n_expert_shared=facts.n_expert_shared,
        n_ff_expert=facts.n_ff_exp, n_layer_nextn=facts.n_layer_nextn, **_attention(facts))
    lic = meta.get("general.license")
    v = Variant(format="gguf", quant=quant, repo=repo, files=tuple(files), size_source="measured",
                size_bytes=size_bytes, size_where=f"advisor catalog add {date}: {source}")
    return _user_model(model_id, facts.name or model_id, repo, lic if isinstance(lic, str) and lic else "unknown",
                       tasks, total, active, facts.n_ctx_train or 4096, a, (v,), source, Sampling)


def _attention(facts: Any) -> dict[str, int]:
    """The Architecture's attention fields, in the model config's terms. A split-MLA GGUF (key_length_mla set)
    stores the latent cache sizes as its head sizes; the config's per-head sizes are the *_mla keys, and the
    catalog derives the latent layout back from q_lora_rank (advisor.gguf.layout.mla_split)."""
    meta, arch = facts.metadata, facts.architecture
    out = dict(n_head_kv=max(facts.n_head_kv, default=0), head_dim_k=facts.head_dim_k, head_dim_v=facts.head_dim_v,
               kv_lora_rank=facts.kv_lora_rank)
    if facts.is_mla and facts.kv_lora_rank:
        rope = int(meta.get(f"{arch}.rope.dimension_count") or facts.head_dim_k - facts.kv_lora_rank)
        out.update(n_head_kv=max(facts.n_head, default=0), head_dim_k=facts.key_length_mla,
                   head_dim_v=facts.value_length_mla, qk_rope_head_dim=rope,
                   qk_nope_head_dim=facts.key_length_mla - rope, v_head_dim=facts.value_length_mla,
                   q_lora_rank=int(meta.get(f"{arch}.attention.q_lora_rank") or 0))
    return out


def _elements(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _user_model(model_id: str, name: str, repo: str, lic: str, tasks: list[str], params: int,
                active_b: float | None, ctx: int, arch: Any, variants: tuple[Variant, ...], source: str,
                sampling_cls: Any) -> Model:
    m = Model(id=model_id, name=name, repo=repo, license=lic, tasks=tuple(tasks),  # type: ignore[arg-type]
              params_total_b=round(params / 1e9, 6), params_source=source, context_native=ctx,
              context_source=source, arch=arch, sampling=sampling_cls(source="none: user-added model"),
              family="user", params_active_b=active_b, scores_missing="user-added model", variants=variants)
    # Round-trip through the strict loader so what is written is exactly what load_catalog will accept.
    checked: Model = build(Model, _plain(m), f"user model {model_id}", CatalogError)
    _validate_model(checked, f"user model {model_id}")
    return checked


#: transformers model_type -> GGUF general.architecture (llama.cpp convert_hf_to_gguf.py @ModelBase.register).
HF_TO_GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "qwen2_moe": "qwen2moe",
                   "qwen3_moe": "qwen3moe", "gemma": "gemma", "gemma2": "gemma2", "gemma3_text": "gemma3",
                   "gemma3": "gemma3", "phi3": "phi3", "deepseek_v2": "deepseek2", "deepseek_v3": "deepseek2",
                   "starcoder2": "starcoder2", "granite": "granite", "olmo2": "olmo2"}


#: safetensors' own limit on the JSON header (safetensors/src/tensor.rs MAX_HEADER_SIZE = 100_000_000).
SAFETENSORS_MAX_HEADER = 100_000_000
#: The overlay holds sizes and user models: a few hundred bytes each.
MAX_OVERLAY_BYTES = 64 << 20
#: A transformers config.json is a few KB.
MAX_CONFIG_BYTES = 1 << 20


def model_from_config_dir(d: Path, *, model_id: str | None, tasks: list[str], date: str) -> Model:
    """A user Model from a transformers checkpoint directory: config.json plus the safetensors headers (8-byte
    little-endian length, then JSON of name -> dtype/shape/data_offsets: the safetensors format)."""
    from advisor.catalog.model import Architecture, Sampling

    from advisor.strict import load_json

    cfg_path = d / "config.json"
    cfg = load_json(cfg_path, MAX_CONFIG_BYTES, CatalogError)  # regular files only, bounded, depth-checked
    if not isinstance(cfg, dict):
        raise CatalogError(f"{cfg_path}: expected a JSON object")
    cfg = cfg.get("text_config", cfg) if isinstance(cfg.get("text_config"), dict) else cfg
    mt = str(cfg.get("model_type", ""))
    if mt not in HF_TO_GGUF_ARCH:
        raise CatalogError(f"{cfg_path}: model_type {mt!r} is not one advisor knows",
                           hint=f"known: {', '.join(sorted(HF_TO_GGUF_ARCH))}")

    def need(key: str) -> int:
        v = cfg.get(key)
        if not isinstance(v, int):
            raise CatalogError(f"{cfg_path}: no integer {key!r}")
        return v

    n_head = need("num_attention_heads")
    hd = cfg.get("head_dim") or need("hidden_size") // n_head
    params = 0
    nbytes = 0
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise CatalogError(f"{d}: no *.safetensors next to config.json")
    dtypes: dict[str, int] = {}
    for f in files:
        try:
            with os.fdopen(open_regular(f, CatalogError), "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                if n > SAFETENSORS_MAX_HEADER:
                    raise ValueError(f"header of {n} bytes, more than the format's {SAFETENSORS_MAX_HEADER}")
                header = json.loads(fh.read(n))
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
        except (OSError, ValueError, RecursionError) as exc:
            raise CatalogError(f"{f}: not a safetensors file ({exc})") from None
        nbytes += f.stat().st_size
        for k, t in header.items():
            if k != "__metadata__":
                cnt = _elements(tuple(t["shape"]))
                params += cnt
                dtypes[t["dtype"]] = dtypes.get(t["dtype"], 0) + cnt
    dtype = max(dtypes, key=dtypes.__getitem__).lower() if dtypes else "bf16"
    source = f"{cfg_path} and safetensors headers"
    n_expert = int(cfg.get("num_experts") or cfg.get("n_routed_experts") or cfg.get("num_local_experts") or 0)
    a = Architecture(
        name=HF_TO_GGUF_ARCH[mt], n_layer=need("num_hidden_layers"), n_embd=need("hidden_size"), n_head=n_head,
        n_head_kv=int(cfg.get("num_key_value_heads") or n_head), head_dim_k=int(hd), head_dim_v=int(hd),
        n_ff=need("intermediate_size"), vocab_size=need("vocab_size"),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)), source=source,
        sliding_window=int(cfg.get("sliding_window") or 0) if cfg.get("use_sliding_window", True) else 0,
        n_expert=n_expert, n_expert_used=int(cfg.get("num_experts_per_tok") or 0),
        n_ff_expert=int(cfg.get("moe_intermediate_size") or 0))
    v = Variant(format="safetensors", quant=dtype, repo=str(d.resolve()), files=tuple(f.name for f in files),
                size_source="measured", size_bytes=nbytes, size_where=f"advisor catalog add {date}: local files")
    active = None
    if n_expert:
        active = round(params / 1e9 * max(1, a.n_expert_used) / n_expert, 6)  # rough: experts dominate
    mid = model_id or slug(d.resolve().name)
    return _user_model(mid, d.resolve().name, str(d.resolve()), "unknown", tasks, params, active,
                       int(cfg.get("max_position_embeddings") or 4096), a, (v,), source, Sampling)
