"""On every recorded machine (tests/test_recommend_matrix.py, replayed through the real probe), the best plan for
chat and for code is a model released in 2025 or later wherever one fits, and never a model superseded by another
plan of the same recommendation."""

from __future__ import annotations

import pytest

from advisor.catalog.load import load_catalog
from advisor.planner import Request, recommend
from advisor.probe import probe
from advisor.rules import load_rules
from tests.test_recommend_matrix import MACHINES


@pytest.fixture(scope="module")
def setup():
    return load_catalog(overlay=False), load_rules()


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_recent_picks_on_recorded_machines(setup, tmp_path, name):
    cat, rules = setup
    profile = probe(MACHINES[name](tmp_path / "root").system())
    for task in ("chat", "code"):
        rec = recommend(profile, cat, rules, Request(task=task, top=50))
        if not rec.plans:
            continue  # nothing fits at all (a recording without memory figures)
        best = cat.get(rec.plans[0].model.id)
        assert best.released >= "2025-01", (name, task, best.id, best.released)
        ranked = {p.model.id for p in rec.ranked}
        for p in rec.ranked:
            assert not set(cat.get(p.model.id).superseded_by) & ranked, (name, task, p.model.id)
