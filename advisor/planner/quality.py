"""How good a candidate is: the model's task score and the quant's quality, with the backend's quant penalty
(rules/quants.toml) and speed rating (catalog/quants.toml [[speed]]) as tie-breaker."""

from __future__ import annotations

from dataclasses import dataclass

from advisor.catalog.model import Catalog, Model, Variant
from advisor.planner.machine import Machine

RATING = {"fast": 2, "ok": 1, "slow": 0, "unsupported": -1}
#: Quant names of checkpoint formats in catalog/quants.toml.
CHECKPOINT_NAMES = {"safetensors": "safetensors-bf16", "awq": "awq-int4", "gptq": "gptq-int4", "fp8": "fp8",
                    "mxfp4": "mxfp4"}
#: Bits per weight assumed for a quick size check when neither a measurement nor a bpw is known.
FALLBACK_BPW = 8.5


def quant_name(v: Variant) -> str:
    return v.quant if v.format == "gguf" else CHECKPOINT_NAMES.get(v.format, v.format)


def speed_family(v: Variant) -> str:
    """legacy / k / iq4 / iq_low as catalog/quants.toml [[speed]] names them; checkpoints are their own."""
    if v.format != "gguf":
        return "checkpoint"
    q = v.quant.upper()
    if q.startswith("IQ4"):
        return "iq4"
    if q.startswith("IQ"):
        return "iq_low"
    if "_K" in q:
        return "k"
    return "legacy"


@dataclass(frozen=True)
class Quality:
    quant: str
    ranked_as: str
    score: float  # quant quality, 0-100
    penalty: float
    rating: int  # speed rating on this backend (tie-breaker)
    bpw: float | None

    @property
    def effective(self) -> float:
        return self.score - self.penalty


def quality(catalog: Catalog, v: Variant, m: Machine, backend_key: str) -> Quality:
    name = quant_name(v)
    eq = m.rules["quant_equivalent"].get(name, name)
    q = catalog.quant(eq)
    own = catalog.quant(name)
    score = q.score if q and q.score is not None else 90.0
    fam = speed_family(v)
    penalty = float(m.rules["quant_penalty"].get(fam, 0.0))
    rating = 1
    for s in catalog.quants.speed:
        if s.backend == backend_key and s.quant_family == fam:
            rating = RATING[s.rating]
    bpw = (own.bpw if own and own.bpw else None) or (q.bpw if q and q.bpw else None)
    return Quality(name, eq, score, penalty, rating, bpw)


def model_score(catalog: Catalog, model: Model, task: str) -> tuple[float, str]:
    """The model's score on ``task``'s one quality scale (catalog/scales.toml: the primary benchmark's percent,
    other benchmarks mapped onto it by fitted lines, or an estimate) and a reason naming how it was obtained."""
    ts = catalog.task_score(model, task)
    if ts is None:
        return 0.0, (f"{model.name}: no {task} score (no release date to estimate one from, and no benchmark): "
                     "ranked last")
    unit = _primary_unit(catalog, ts.scale)
    if ts.method == "measured":
        how = f"{ts.metric} {ts.raw:g} [{ts.source}]"
    elif ts.method == "mapped":
        how = f"mapped from {ts.metric} {ts.raw:g} by a line fitted over catalog models with both [{ts.source}]"
    elif ts.method == "cross-task":
        how = f"estimated from its {ts.metric} score by a line fitted over catalog models with both"
    else:
        how = "estimated from size, release date and specialisation (no benchmark; a fit over every scored model)"
    imputed = " (imputed)" if ts.imputed else ""
    return round(ts.value, 2), f"{model.name}: {task} score {ts.value:.1f} on the {unit} scale{imputed}: {how}"


def _primary_unit(catalog: Catalog, task: str) -> str:
    scale = catalog.scores.scales.get(task)
    return scale.primary[0] if scale and scale.primary else task


def superseded(plans: list, catalog: Catalog, asked_by_name: bool) -> tuple[list, list[tuple[str, str, str]]]:
    """Drop the plans of models superseded within their family (catalog ``superseded_by``) by a model that also has a
    plan for this request (it fits and is made for the task), unless the user named the model. Returns the kept plans
    and (model, successor, reason) for each one dropped."""
    if asked_by_name:
        return plans, []
    planned = {p.model.id for p in plans}
    kept, dropped = [], []
    for p in plans:
        m = next((x for x in catalog.models if x.id == p.model.id), None)
        succ = next((s for s in (m.superseded_by if m else ()) if s in planned), None)
        if succ is None:
            kept.append(p)
        else:
            dropped.append((p.model.id, succ, m.superseded_reason))
    return kept, dropped


def quick_size(model: Model, v: Variant, q: Quality) -> int:
    """A cheap size for pre-filtering: the measured size, else parameters x bits per weight."""
    if v.size_bytes:
        return v.size_bytes
    return int(model.params_total_b * 1e9 * (q.bpw or FALLBACK_BPW) / 8)


def speed_backend(m: Machine, full_offload: bool = True) -> str:
    """The key of catalog/quants.toml [[speed]]: the GPU backend, or the CPU's when layers run there."""
    if m.gpus and full_offload:
        return m.backend
    return "cpu_arm" if m.profile.arch in ("aarch64", "arm64") else "cpu_x86"
