"""One quality scale per task (catalog/scales.toml): every model gets a value for every task it is tagged with, in the
units of the task's primary benchmark, and says how it was obtained.

Methods, in order of preference (catalog/README.md, "Scores on one scale"):

- ``measured``: the model has the primary benchmark (any of the metric ids the scale lists as primary);
- ``mapped``: it has a secondary benchmark, mapped onto the primary by a least-squares line fitted over the catalog
  models that have both (secondaries in the listed order; a later secondary may be fitted against values an earlier
  one mapped); a line needs at least ``MIN_POINTS`` models and a positive slope;
- ``cross-task``: it has a value on another task's scale, mapped by a line fitted over the models valued on both;
- ``size-date``: a least-squares fit of the scale over every model measured on it: log10 of the effective parameter count
  (sqrt(total x active) for MoE, a common size proxy for sparse models), the release date in years, and whether the
  model is a specialist of the task (code models for code, reasoning models for reasoning).

Pure standard library (``advisor catalog list --json`` computes it on every run), no I/O: the loader passes the parsed
``scales.toml``. ``benchmarks/quality_scale.py`` prints every fit with its data and residuals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MIN_POINTS = 3  # a straight line through two points has no residual to judge it by
MIN_CROSS_POINTS = 5
# Every fit is made on the logit of the accuracies (percent / 100, kept within [0.5 %, 99.5 %]): benchmark accuracies
# are bounded, a line in logit space bends near 0 and 100 % as item-response models do (a saturated HumanEval maps
# onto a steep part of LiveCodeBench), and a prediction never leaves 0-100.
EDGE = 0.005


def logit(pct: float) -> float:
    p = min(max(pct / 100.0, EDGE), 1 - EDGE)
    return math.log(p / (1 - p))


def expit(x: float) -> float:
    return 100.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True)
class ScaleDef:
    task: str
    reason: str
    source: str
    primary: tuple[str, ...] = ()
    secondary: tuple[str, ...] = ()
    same_as: str = ""


@dataclass(frozen=True)
class ScaleFile:
    schema: int
    scale: tuple[ScaleDef, ...]


@dataclass(frozen=True)
class Fit:
    """logit(y) = coef[0] + coef[1] * x1 (+ coef[2] * x2 ...), over ``points`` (model id, xs, y, residual): xs are
    logits of benchmark values (or the size-date features), y and the residual are in percent."""

    task: str
    source: str  # the secondary metric, "task:<other>", or "size-date"
    features: tuple[str, ...]
    coef: tuple[float, ...]
    points: tuple[tuple[str, tuple[float, ...], float, float], ...]

    @property
    def n(self) -> int:
        return len(self.points)

    @property
    def rms(self) -> float:
        return math.sqrt(sum(p[3] ** 2 for p in self.points) / max(1, self.n))

    def predict(self, xs: tuple[float, ...]) -> float:
        """The scale's value in percent for features ``xs`` (already transformed). For the size-date fit each feature
        is held within the range of the data it was fitted on: its release-date trend is not extrapolated past the
        newest benchmarked model (benchmark-to-benchmark lines, monotone in logit space, are used as they are)."""
        if self.points and self.source == "size-date":
            xs = tuple(min(max(x, min(p[1][j] for p in self.points)), max(p[1][j] for p in self.points))
                       for j, x in enumerate(xs))
        return expit(self.coef[0] + sum(c * x for c, x in zip(self.coef[1:], xs)))


@dataclass(frozen=True)
class TaskScore:
    task: str  # the task asked
    scale: str  # the task whose scale is used (same_as), and whose primary metric gives the units
    value: float  # on the scale: the primary benchmark's percent
    method: str  # measured | mapped | cross-task | size-date
    metric: str  # the benchmark the value comes from ("" for size-date)
    raw: float | None  # that benchmark's own value
    source: str  # where the raw value comes from, or the fit used

    @property
    def imputed(self) -> bool:
        return self.method != "measured"

    def describe(self) -> str:
        v = f"{self.value:.1f}"
        if self.method == "measured":
            return f"{self.metric} {self.raw:g}"
        if self.method == "mapped":
            return f"{v} mapped from {self.metric} {self.raw:g} by a fitted line"
        if self.method == "cross-task":
            return f"{v} estimated from its {self.metric} score {self.raw:.1f} by a fitted line"
        return f"{v} estimated from size, release date and specialisation (no benchmark)"


@dataclass(frozen=True)
class Scores:
    by_model: dict[str, dict[str, TaskScore]]  # model id -> scale task -> score (scale tasks only)
    fits: tuple[Fit, ...]
    scales: dict[str, ScaleDef]

    def get(self, model_id: str, task: str) -> TaskScore | None:
        scale = resolve(self.scales, task)
        if scale is None:
            return None
        s = self.by_model.get(model_id, {}).get(scale.task)
        if s is None or task == scale.task:
            return s
        return TaskScore(task, s.scale, s.value, s.method, s.metric, s.raw, s.source)


def resolve(scales: dict[str, ScaleDef], task: str) -> ScaleDef | None:
    seen = set()
    s = scales.get(task)
    while s is not None and s.same_as and s.task not in seen:
        seen.add(s.task)
        s = scales.get(s.same_as)
    return s


# --------------------------------------------------------------------------------------------------------------------
# Least squares (normal equations; a handful of features)


def lstsq(rows: list[tuple[float, ...]], ys: list[float]) -> tuple[float, ...] | None:
    """Coefficients (intercept first) minimising squared error; None when the system is singular."""
    k = len(rows[0]) + 1
    a = [[0.0] * (k + 1) for _ in range(k)]
    for xs, y in zip(rows, ys):
        v = (1.0, *xs)
        for i in range(k):
            for j in range(k):
                a[i][j] += v[i] * v[j]
            a[i][k] += v[i] * y
    for c in range(k):  # Gauss-Jordan with partial pivoting
        p = max(range(c, k), key=lambda r: abs(a[r][c]))
        if abs(a[p][c]) < 1e-9:
            return None
        a[c], a[p] = a[p], a[c]
        for r in range(k):
            if r != c:
                f = a[r][c] / a[c][c]
                a[r] = [x - f * y for x, y in zip(a[r], a[c])]
    return tuple(a[i][k] / a[i][i] for i in range(k))


def _fit(task: str, source: str, features: tuple[str, ...], data: list[tuple[str, tuple[float, ...], float]]) -> Fit | None:
    """Least squares of logit(y) on ``features``; a feature constant over the data (no specialist among the models
    of a task) gets a zero coefficient instead of making the system singular."""
    if len(data) < max(MIN_POINTS, len(features) + 2):
        return None
    live = [j for j in range(len(features)) if len({d[1][j] for d in data}) > 1]
    if not live:
        return None
    coef_live = lstsq([tuple(d[1][j] for j in live) for d in data], [logit(d[2]) for d in data])
    if coef_live is None:
        return None
    coef = [coef_live[0]] + [0.0] * len(features)
    for k, j in enumerate(live):
        coef[j + 1] = coef_live[k + 1]
    fit = Fit(task, source, features, tuple(coef), ())
    pts = tuple((mid, xs, y, y - fit.predict(xs)) for mid, xs, y in data)
    return Fit(task, source, features, tuple(coef), pts)


# --------------------------------------------------------------------------------------------------------------------
# The computation


def _raw(model: Any, metrics: tuple[str, ...]) -> tuple[str, float, str] | None:
    """The model's first score among ``metrics`` (in that order; an entry ``a|b`` stands for either), whatever task
    it is filed under."""
    for metric in (x for entry in metrics for x in entry.split("|")):
        for s in model.scores:
            if s.metric == metric:
                return metric, s.value, s.source
    return None


def _years(released: str) -> float | None:
    if not released:
        return None
    y, m = released.split("-")
    return int(y) + (int(m) - 1) / 12 - 2023


def size_features(model: Any, task: str) -> tuple[float, float, float] | None:
    """(log10 effective billions, years since 2023, specialist 0/1) or None without a release date."""
    years = _years(model.released)
    if years is None:
        return None
    total = model.params_total_b
    eff = math.sqrt(total * model.params_active_b) if model.params_active_b else total
    first = model.tasks[0] if model.tasks else ""
    specialist = 1.0 if (task == "code" and (first in ("code", "completion") or "coder" in model.id)) or (
        task == "reasoning" and first == "reasoning") else 0.0
    return math.log10(max(eff, 0.01)), years, specialist


def compute(models: tuple[Any, ...], scale_file: ScaleFile) -> Scores:
    scales = {s.task: s for s in scale_file.scale}
    own = [s for s in scale_file.scale if not s.same_as]
    by_model: dict[str, dict[str, TaskScore]] = {m.id: {} for m in models}
    fits: list[Fit] = []
    for sc in own:  # measured, then mapped
        for m in models:
            r = _raw(m, sc.primary)
            if r:
                by_model[m.id][sc.task] = TaskScore(sc.task, sc.task, r[1], "measured", r[0], r[1], r[2])
        for metric in sc.secondary:
            data = []
            for m in models:
                r, v = _raw(m, (metric,)), by_model[m.id].get(sc.task)
                if r and v:
                    data.append((m.id, (logit(r[1]),), v.value))
            fit = _fit(sc.task, metric, (metric,), data)
            if fit is None or fit.coef[1] <= 0:
                continue
            fits.append(fit)
            for m in models:
                r = _raw(m, (metric,))
                if r and sc.task not in by_model[m.id]:
                    by_model[m.id][sc.task] = TaskScore(sc.task, sc.task, fit.predict((logit(r[1]),)), "mapped", r[0], r[1],
                                                        f"{r[2]}; mapped by the fit {sc.task} <- {metric}")
    base = {mid: dict(v) for mid, v in by_model.items()}  # cross-task fits use measured/mapped values only
    for sc in own:
        for other in own:
            if other is sc:
                continue
            data = [(mid, (logit(v[other.task].value),), v[sc.task].value) for mid, v in base.items()
                    if sc.task in v and other.task in v]
            fit = _fit(sc.task, f"task:{other.task}", (other.task,), data)
            if fit is None or fit.coef[1] <= 0:
                continue
            if fit.n < MIN_CROSS_POINTS:
                continue
            fits.append(fit)
            for m in models:
                o = base[m.id].get(other.task)
                if o and sc.task not in by_model[m.id]:
                    by_model[m.id][sc.task] = TaskScore(sc.task, sc.task, fit.predict((logit(o.value),)), "cross-task",
                                                        other.task, o.value, f"fit {sc.task} <- {other.task} score")
    for sc in own:
        data = []
        for m in models:
            f, v = size_features(m, sc.task), base[m.id].get(sc.task)
            if f and v and v.method == "measured":  # no regression on values that are themselves fitted
                data.append((m.id, f, v.value))
        fit = _fit(sc.task, "size-date", ("log10_eff_params_b", "years_since_2023", "specialist"), data)
        if fit is None:
            continue
        fits.append(fit)
        for m in models:
            f = size_features(m, sc.task)
            if sc.task not in by_model[m.id] and f:
                by_model[m.id][sc.task] = TaskScore(sc.task, sc.task, fit.predict(f), "size-date", "", None,
                                                    f"fit {sc.task} <- size, release date, specialisation")
    return Scores(by_model, tuple(fits), scales)


def estimate_for(scores: Scores, model: Any, task: str) -> TaskScore | None:
    """A size-date estimate for a model outside the fitted set. Without a release date (a local file added with
    'advisor catalog add') the fitted models' median date stands in, said so in the source."""
    scale = resolve(scores.scales, task)
    if scale is None:
        return None
    for fit in scores.fits:
        if fit.task == scale.task and fit.source == "size-date":
            f = size_features(model, scale.task)
            note = ""
            if f is None:
                years = sorted(p[1][1] for p in fit.points)[len(fit.points) // 2]
                f = size_features(_Dated(model, years), scale.task)
                note = "; release date unknown: the fitted models' median date assumed"
            assert f is not None
            return TaskScore(task, scale.task, fit.predict(f), "size-date", "", None,
                             f"fit {scale.task} <- size, release date, specialisation{note}")
    return None


class _Dated:
    """``model`` seen with a release date ``years`` after 2023-01 (for size_features)."""

    def __init__(self, model: Any, years: float) -> None:
        self._m = model
        y = int(years)
        self.released = f"{2023 + y}-{min(12, max(1, round((years - y) * 12) + 1)):02d}"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._m, name)
