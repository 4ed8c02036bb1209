"""The best plan for chat and for code on every recorded machine of tests/test_recommend_matrix.py (replayed through
the real probe), with the model's release month and its score on the task's scale.

    python benchmarks/recorded_picks.py

Prints a Markdown table: machine | chat pick | code pick (model, quant, engine, released, score).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from advisor.catalog.load import load_catalog  # noqa: E402
from advisor.planner import Request, recommend  # noqa: E402
from advisor.probe import probe  # noqa: E402
from advisor.rules import load_rules  # noqa: E402
from tests.test_recommend_matrix import MACHINES  # noqa: E402


def main() -> None:
    cat, rules = load_catalog(overlay=False), load_rules()
    tmp = Path(tempfile.mkdtemp())
    print("| machine | chat pick | code pick |\n|---|---|---|")
    for name, make in sorted(MACHINES.items()):
        prof = probe(make(tmp / name / "root").system())
        cells = []
        for task in ("chat", "code"):
            rec = recommend(prof, cat, rules, Request(task=task))
            if not rec.plans:
                cells.append("nothing fits")
                continue
            p = rec.plans[0]
            cells.append(f"{p.model.id} {p.model.quant} ({p.backend}, {cat.get(p.model.id).released}, "
                         f"score {p.score:.1f})")
        print(f"| {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
