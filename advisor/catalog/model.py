"""The curated model catalog: TOML files under ``catalog/`` loaded into typed, frozen dataclasses.

Loading is strict: every table is checked against its dataclass, unknown keys and wrong types are refused with the
file and the key path, so a typo in the data fails the test suite instead of silently dropping a fact.
catalog/README.md explains the schema. Pure: no network, no writes; sizes that were not measured are *derived* on
demand from the architecture by advisor.gguf.layout (imported lazily: it needs gguf, hence numpy).

"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from advisor.errors import BadInputError
from advisor.strict import build, read_toml

if TYPE_CHECKING:
    from advisor.catalog.scale import ScaleFile, Scores, TaskScore

#: Environment variable naming a data root that holds ``catalog/`` (and ``rules/``), overriding the packaged data.

SCHEMA_VERSION = 1

Format = Literal["gguf", "safetensors", "awq", "gptq", "fp8", "mxfp4"]
SizeSource = Literal["measured", "derived"]
Task = Literal["code", "chat", "reasoning", "completion", "math", "tools", "vision"]

#: The raw benchmark that ``Model.score`` returns for a task, best first (LiveCodeBench is contamination-aware, Jain et
#: al. arXiv 2403.07974). Ranking does not use it: every task has one scale (catalog/scales.toml,
#: ``Catalog.task_score``).
METRIC_PRIORITY: dict[str, tuple[str, ...]] = {
    "code": ("livecodebench_v5", "livecodebench", "humaneval_plus", "humaneval"),
    "chat": ("arena_hard", "open_llm_leaderboard_v2", "mmlu_pro", "mmlu"),
    "reasoning": ("livecodebench_v5_thinking", "gpqa_diamond", "math_500"),
}


class CatalogError(BadInputError):
    """A catalog file does not follow the schema."""

    hint = "see catalog/README.md for the schema"


# --------------------------------------------------------------------------------------------------------------------
# Schema


@dataclass(frozen=True)
class Architecture:
    """The facts the memory estimator and the file-size layout need, named as llama.cpp/GGUF names them."""

    name: str  # GGUF general.architecture: llama, qwen2, qwen3, qwen3moe, phi3, gemma, gemma2, gemma3, ...
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ff: int  # dense FFN width (for MoE models with dense lead layers, those layers' width)
    vocab_size: int
    tied_embeddings: bool
    source: str
    tokenizer: Literal["gpt2", "llama"] = "gpt2"  # GGUF tokenizer.ggml.model: BPE with merges, or SentencePiece
    sliding_window: int = 0  # tokens; 0 = full attention everywhere
    sliding_window_pattern: int = 0  # layer il is local iff il % p < p - 1 (llama.cpp set_swa_pattern); 1 = all local
    n_expert: int = 0
    n_expert_used: int = 0
    n_expert_shared: int = 0
    n_ff_expert: int = 0
    n_layer_dense_lead: int = 0  # leading layers with a dense FFN in a MoE model (DeepSeek first_k_dense_replace)
    kv_lora_rank: int = 0  # MLA (DeepSeek-V2): compressed KV width
    q_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    # Multi-token-prediction (NextN) blocks stored after the trunk (GLM-4.5): in the file, skipped by llama.cpp.
    n_layer_nextn: int = 0
    n_ff_shexp: int = 0  # shared-expert FFN width when it is not n_ff_expert x n_expert_shared (qwen3next, granite)
    moe_layer_step: int = 0  # llama4: every step-th layer is MoE (interleave_moe_layer_step); 0/1 = every layer
    attn_bias: bool = True  # glm4moe: q/k/v biases (config attention_bias)
    # Hybrid recurrent layers (GGUF {arch}.ssm.*): Mamba2 (granitehybrid) or gated delta net (qwen3next).
    ssm_d_conv: int = 0
    ssm_d_inner: int = 0
    ssm_d_state: int = 0
    ssm_dt_rank: int = 0  # SSM heads (Mamba2) / value heads (gated delta net)
    ssm_n_group: int = 0  # groups (Mamba2) / key heads (gated delta net)
    full_attention_interval: int = 0  # qwen3next: every interval-th layer is full attention
    attention_layers: tuple[int, ...] = ()  # granitehybrid: the attention layers; all others are Mamba2
    # Gemma 3n: per-layer embeddings, AltUp, LAuReL; KV shared from layer n_layer_kv_from_start on.
    n_embd_per_layer: int = 0
    vocab_size_per_layer: int = 0
    n_altup: int = 0
    laurel_rank: int = 0
    n_layer_kv_from_start: int = 0
    notes: str = ""


@dataclass(frozen=True)
class Score:
    task: str
    metric: str
    value: float
    source: str
    notes: str = ""


@dataclass(frozen=True)
class Sampling:
    source: str
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None
    notes: str = ""


@dataclass(frozen=True)
class GgufGroup:
    """Several GGUF quants from one repository whose file names follow one pattern; expanded into Variants."""

    repo: str
    file: str  # file name pattern with {quant} (e.g. Q4_K_M) or {quant_lower} (q4_k_m)
    quants: tuple[str, ...]
    imatrix: bool
    notes: str = ""


@dataclass(frozen=True)
class Variant:
    format: Format
    quant: str
    repo: str
    files: tuple[str, ...]
    size_source: SizeSource
    size_bytes: int | None = None  # required when measured; computed from the architecture when derived
    size_where: str = ""  # for measured sizes: where the number comes from
    size_measures: Literal["file", "tensor_data"] = "file"  # a Hub listing gives the file; a llama.cpp log the tensors
    size_rounding_bytes: int = 0  # the measurement's resolution (a listing in GB with 2 decimals: 5_000_000)
    imatrix: bool = False
    notes: str = ""


@dataclass(frozen=True)
class Model:
    id: str
    name: str
    repo: str
    license: str
    tasks: tuple[Task, ...]
    params_total_b: float  # weights of the language model, billions (vision towers excluded, see notes)
    params_source: str
    context_native: int
    context_source: str
    arch: Architecture
    sampling: Sampling
    family: str = ""
    params_active_b: float | None = None  # MoE only
    scores: tuple[Score, ...] = ()
    scores_missing: str = ""  # why there is no score, when there is none
    gguf: tuple[GgufGroup, ...] = ()
    variants: tuple[Variant, ...] = ()
    released: str = ""  # "YYYY-MM": first public release of these weights
    released_source: str = ""
    # Newer models of the same family that replace this one (ids); the planner does not pick this model where one of
    # them fits the same request, unless it is asked for by name.
    superseded_by: tuple[str, ...] = ()
    superseded_reason: str = ""
    # Set for models found by 'advisor catalog refresh' on the Hub: "publisher listing YYYY-MM-DD".
    discovered: str = ""
    notes: str = ""

    def all_variants(self) -> tuple[Variant, ...]:
        """Explicit variants plus the expanded GGUF groups (an explicit one wins for the same repo and quant)."""
        return _expand(self)

    def score(self, task: str) -> Score | None:
        """The score that stands for ``task``, by METRIC_PRIORITY (None if the model has none for it)."""
        mine = [s for s in self.scores if s.task == task]
        for metric in METRIC_PRIORITY.get(task, ()):
            for s in mine:
                if s.metric == metric:
                    return s
        return mine[0] if mine else None


@dataclass(frozen=True)
class ModelFile:
    schema: int
    family: str
    model: tuple[Model, ...]
    notes: str = ""


@dataclass(frozen=True)
class QuantQuality:
    name: str  # llama.cpp ftype name (or bartowski suffix), or a checkpoint format
    family: Literal["float", "legacy", "k", "iq", "mxfp4", "checkpoint"]
    source: str
    score: float | None = None  # 100 * exp(-mean KLD vs FP16); None when unmeasured
    kld: float | None = None
    bpw: float | None = None  # effective bits per weight of a whole Llama-3.1-8B file
    bpw_source: str = ""
    imatrix: str = ""
    notes: str = ""


@dataclass(frozen=True)
class SpeedNote:
    backend: str
    quant_family: str
    rating: Literal["fast", "ok", "slow", "unsupported"]
    evidence: str
    source: str


@dataclass(frozen=True)
class VllmSupport:
    format: str
    min_capability: int | None
    source: str
    amd: bool | None = None
    cpu: bool | None = None
    notes: str = ""


@dataclass(frozen=True)
class QuantFile:
    schema: int
    score_formula: str
    quant: tuple[QuantQuality, ...]
    speed: tuple[SpeedNote, ...] = ()
    vllm: tuple[VllmSupport, ...] = ()
    notes: str = ""


@dataclass(frozen=True)
class Catalog:
    models: tuple[Model, ...]
    quants: QuantFile
    data_dir: Path
    #: Models added by ``advisor catalog add`` (from the user overlay, advisor.catalog.overlay).
    user_ids: frozenset[str] = frozenset()
    scales: "ScaleFile | None" = None  # catalog/scales.toml

    def get(self, model_id: str) -> Model:
        for m in self.models:
            if m.id == model_id:
                return m
        raise BadInputError(
            f"no model {model_id!r} in the catalog", hint="'advisor catalog list' shows the ids"
        )

    def quant(self, name: str) -> QuantQuality | None:
        for q in self.quants.quant:
            if q.name == name:
                return q
        return None

    def task_score(self, model: Model, task: str) -> "TaskScore | None":
        """The model's value on ``task``'s quality scale (catalog/scales.toml, advisor.catalog.scale), with the
        method that gave it (measured, mapped, cross-task, size-date); None only for a task with no scale or a user
        model without a release date."""
        s = self.scores.get(model.id, task)
        if s is None:
            from advisor.catalog.scale import estimate_for
            return estimate_for(self.scores, model, task)
        return s

    def normalized_score(self, model: Model, task: str) -> float | None:
        """The model's ``task`` score on the task's one scale (the primary benchmark's percent)."""
        s = self.task_score(model, task)
        return None if s is None else round(s.value, 1)

    @functools.cached_property
    def scores(self) -> "Scores":
        from advisor.catalog.scale import ScaleFile, Scores, compute
        if self.scales is None:
            return Scores({}, (), {})
        return compute(self.models, self.scales)


# --------------------------------------------------------------------------------------------------------------------
# Strict loading


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    return build(cls, table, where, CatalogError)


def _validate_model(m: Model, where: str) -> None:
    from_groups = [q for g in m.gguf for q in g.quants]
    for g in m.gguf:
        if "{quant}" not in g.file and "{quant_lower}" not in g.file:
            raise CatalogError(f"{where}: gguf group {g.repo}: 'file' must contain {{quant}} or {{quant_lower}}")
    for q in from_groups:
        _check_gguf_quant(q, f"{where}: gguf quant")
    for v in m.variants:
        if v.size_source == "measured" and (v.size_bytes is None or not v.size_where):
            raise CatalogError(
                f"{where}: variant {v.quant} of {v.repo}: a measured size needs size_bytes and size_where")
        if v.size_source == "derived" and v.size_bytes is not None:
            raise CatalogError(f"{where}: variant {v.quant} of {v.repo}: derived sizes are computed, not typed in")
        if v.format == "gguf":
            _check_gguf_quant(v.quant, f"{where}: variant")
    if not m.scores and not m.scores_missing:
        raise CatalogError(f"{where}: no scores and no 'scores_missing' saying why")
    if m.arch.n_expert and not m.params_active_b:
        raise CatalogError(f"{where}: a MoE model needs params_active_b")
    if m.released and not _RELEASED.match(m.released):
        raise CatalogError(f"{where}: released must be 'YYYY-MM', not {m.released!r}")
    if m.superseded_by and not m.superseded_reason:
        raise CatalogError(f"{where}: superseded_by needs a superseded_reason")


_RELEASED = re.compile(r"^(19|20)\d\d-(0[1-9]|1[0-2])$")


def _check_gguf_quant(q: str, where: str) -> None:
    # The names quant_layout knows (llama-quantize ftypes and bartowski's _L suffixes); kept here as data so the
    # loader does not import quant_layout (and gguf/numpy) just to validate.
    if q not in _GGUF_QUANTS:
        raise CatalogError(f"{where} {q!r} is not a GGUF quantization advisor knows")


_GGUF_QUANTS = frozenset({
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L",
    "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS",
    "IQ3_S", "IQ3_M", "IQ1_S", "IQ1_M", "IQ4_NL", "IQ4_XS", "MXFP4_MOE", "Q6_K_L", "Q5_K_L", "Q4_K_L", "Q3_K_XL",
    "Q2_K_L",
})


def _expand(m: Model) -> tuple[Variant, ...]:
    seen = {(v.repo, v.quant) for v in m.variants}
    out = list(m.variants)
    for g in m.gguf:
        for q in g.quants:
            if (g.repo, q) in seen:
                continue
            name = g.file.format(quant=q, quant_lower=q.lower())
            out.append(Variant(format="gguf", quant=q, repo=g.repo, files=(name,), size_source="derived",
                               imatrix=g.imatrix))
    return tuple(out)


def _read_toml(path: Path) -> dict[str, Any]:
    return read_toml(path, CatalogError)


def load_model_file(path: Path) -> ModelFile:
    data = _read_toml(path)
    mf: ModelFile = _build(ModelFile, data, path.name)
    if mf.schema != SCHEMA_VERSION:
        raise CatalogError(f"{path.name}: schema {mf.schema}, this advisor reads schema {SCHEMA_VERSION}")
    models = []
    for i, m in enumerate(mf.model):
        where = f"{path.name}: model[{i}] ({m.id})"
        _validate_model(m, where)
        models.append(m if m.family else _replace(m, family=mf.family))
    return _replace(mf, model=tuple(models))


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


# --------------------------------------------------------------------------------------------------------------------
# Sizes (lazy: quant_layout imports gguf)


@dataclass(frozen=True)
class SizedVariant:
    variant: Variant
    size_bytes: int
    size_source: SizeSource
    derived_bytes: int | None = None  # always computed where the layout knows the format (for the accuracy check)
    by_type: dict[str, int] = field(default_factory=dict)


def derive_size(model: Model, v: Variant) -> tuple[int, dict[str, int]]:
    """(bytes, bytes per ggml type) of variant ``v`` computed from the architecture; for a variant measured as
    tensor data, the tensor bytes, otherwise the file bytes."""
    from advisor.gguf import layout as quant_layout
    if v.format == "gguf":
        layout = quant_layout.gguf_layout(model.arch, v.quant, imatrix=v.imatrix)
        total = layout.tensor_bytes if v.size_measures == "tensor_data" else layout.file_bytes
        return total, layout.bytes_by_type()
    return quant_layout.checkpoint_bytes(model.arch, v.format, v.quant.lower()), {}


def sized_variants(model: Model) -> list[SizedVariant]:
    out = []
    for v in model.all_variants():
        derived, by_type = derive_size(model, v)
        if v.size_source == "measured" and v.size_bytes is not None:
            out.append(SizedVariant(v, v.size_bytes, "measured", derived, by_type))
        else:
            out.append(SizedVariant(v, derived, "derived", derived, by_type))
    return out
