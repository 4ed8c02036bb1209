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
    """The model's 0-100 task score (percentile among catalog models with the same metric) and a reason."""
    s = model.score(task)
    pct = catalog.normalized_score(model, task)
    if s is None or pct is None:
        return 0.0, f"{model.name}: no {task} benchmark in the catalog ({model.scores_missing or 'none found'}): " \
                    "ranked last"
    return pct, (f"{model.name}: {task} score {s.value:g} on {s.metric} = percentile {pct:g} among catalog models "
                 f"with that benchmark [{s.source}]")


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
