"""Print every fit of the quality scale (catalog/scales.toml, advisor/catalog/scale.py): its coefficients, the models
it was fitted on with their values and residuals, and how each catalog model's task scores were obtained.

    python benchmarks/quality_scale.py > catalog/quality_fit.txt

The committed catalog/quality_fit.txt is this output (tests/test_catalog_scale.py checks it is current). Fits are on
the logit of the accuracies: logit(y/100) = c0 + c1 * x1 + ...; x is logit(value/100) of the source benchmark or
score, or (log10 effective billions, years since 2023-01, specialist) for size-date.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from advisor.catalog.load import load_catalog  # noqa: E402


def main() -> None:
    cat = load_catalog(Path(__file__).resolve().parent.parent / "catalog", overlay=False)
    scores = cat.scores
    for f in scores.fits:
        coef = ", ".join(f"{c:+.4f}" for c in f.coef)
        print(f"## {f.task} <- {f.source}: n {f.n}, rms residual {f.rms:.2f} points; coefficients ({coef}) "
              f"for (1, {', '.join(f.features)})")
        print(f"{'model':42s} {'x':>26s} {'y':>6s} {'fit':>6s} {'resid':>6s}")
        for mid, xs, y, res in sorted(f.points, key=lambda p: p[0]):
            x = " ".join(f"{v:.3f}" for v in xs)
            print(f"{mid:42s} {x:>26s} {y:6.1f} {y - res:6.1f} {res:+6.1f}")
        print()
    print("## scores per model and tagged task (value on the task's scale, method, source metric)")
    for m in cat.models:
        cells = []
        for t in m.tasks:
            s = cat.task_score(m, t)
            cells.append("-" if s is None else f"{t} {s.value:.1f} {s.method}" + (f" ({s.metric})" if s.metric else ""))
        print(f"{m.id:42s} {m.released}  " + "; ".join(cells))


if __name__ == "__main__":
    main()
