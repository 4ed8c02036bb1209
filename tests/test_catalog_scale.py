"""One quality scale per task (catalog/scales.toml, advisor/catalog/scale.py), the orderings an expert signs, the
release dates, supersession in the planner, and the committed fit report (catalog/quality_fit.txt)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from advisor.catalog import scale
from advisor.catalog.load import load_catalog

ROOT = Path(__file__).resolve().parent.parent
ADVISOR = Path(sys.executable).parent / "advisor"

# The 2025-2026 models the catalog must have.
REQUIRED_2025 = (
    "gpt-oss-120b", "qwen3-4b-instruct-2507", "qwen3-4b-thinking-2507", "qwen3-30b-a3b-instruct-2507",
    "qwen3-30b-a3b-thinking-2507", "qwen3-235b-a22b-instruct-2507", "qwen3-coder-30b-a3b-instruct",
    "qwen3-coder-480b-a35b-instruct", "qwen3-next-80b-a3b-instruct", "gemma-3n-e2b-it", "gemma-3n-e4b-it",
    "glm-4.5-air", "glm-4.6", "devstral-small-2507", "mistral-small-3.2-24b-instruct-2506", "magistral-small-2506",
    "llama-4-scout-17b-16e-instruct", "deepseek-v3.1", "deepseek-r1-0528", "deepseek-r1-0528-qwen3-8b",
    "phi-4-reasoning", "phi-4-mini-reasoning", "granite-4.0-h-tiny", "smollm3-3b", "llama-3.1-405b-instruct",
)


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(ROOT / "catalog", overlay=False)


def v(catalog, model_id: str, task: str) -> float:
    s = catalog.task_score(catalog.get(model_id), task)
    assert s is not None, (model_id, task)
    return s.value


def test_every_tagged_task_has_a_score_with_its_method(catalog):
    for m in catalog.models:
        assert m.released, m.id
        for t in m.tasks:
            s = catalog.task_score(m, t)
            assert s is not None and 0 < s.value < 100, (m.id, t)
            assert s.method in ("measured", "mapped", "cross-task", "size-date")
            assert s.imputed == (s.method != "measured")


def test_required_2025_models_are_present(catalog):
    ids = {m.id for m in catalog.models}
    assert set(REQUIRED_2025) <= ids, set(REQUIRED_2025) - ids


def test_a_measured_primary_is_taken_as_is(catalog):
    s = catalog.task_score(catalog.get("qwen3-30b-a3b-instruct-2507"), "chat")
    assert (s.method, s.metric, s.value) == ("measured", "mmlu_pro", 78.4)
    s = catalog.task_score(catalog.get("gpt-oss-120b"), "chat")
    assert s.method == "mapped" and s.metric == "mmlu" and s.imputed


def test_successor_outranks_predecessor_at_the_same_size(catalog):
    for task in ("chat", "code"):
        assert v(catalog, "qwen3-4b-instruct-2507", task) > v(catalog, "qwen3-4b", task)
        assert v(catalog, "qwen3-30b-a3b-instruct-2507", task) > v(catalog, "qwen3-30b-a3b", task)
        assert v(catalog, "mistral-small-3.2-24b-instruct-2506", task) > v(catalog, "mistral-small-24b-instruct-2501",
                                                                             task)
    # Qwen3 > Qwen2.5 at the same size (the catalog's Qwen2.5 models are the Coders: compare on chat, and the 2507
    # generation beats even the code specialist on code)
    assert v(catalog, "qwen3-32b", "chat") > v(catalog, "qwen2.5-coder-32b-instruct", "chat")
    assert v(catalog, "qwen3-8b", "chat") > v(catalog, "qwen2.5-coder-7b-instruct", "chat")
    assert v(catalog, "qwen3-4b", "code") > v(catalog, "qwen2.5-coder-3b-instruct", "code")
    assert v(catalog, "qwen3-30b-a3b-instruct-2507", "code") > v(catalog, "qwen2.5-coder-32b-instruct", "code")
    assert v(catalog, "deepseek-r1-0528-qwen3-8b", "reasoning") > v(catalog, "deepseek-r1-distill-qwen-7b",
                                                                    "reasoning")
    assert v(catalog, "phi-4-mini-instruct", "chat") > v(catalog, "phi-3.5-mini-instruct", "chat")


def test_bigger_sibling_outranks_smaller_of_the_same_generation(catalog):
    for task in ("chat", "code", "reasoning"):
        assert v(catalog, "gpt-oss-120b", task) > v(catalog, "gpt-oss-20b", task)
    for task in ("chat", "code"):
        assert v(catalog, "qwen3-235b-a22b-instruct-2507", task) > v(catalog, "qwen3-30b-a3b-instruct-2507", task)
        assert v(catalog, "qwen3-30b-a3b-instruct-2507", task) > v(catalog, "qwen3-4b-instruct-2507", task)
        assert v(catalog, "gemma-3n-e4b-it", task) >= v(catalog, "gemma-3n-e2b-it", task)
    assert v(catalog, "qwen3-coder-480b-a35b-instruct", "code") > v(catalog, "qwen3-coder-30b-a3b-instruct", "code")


def test_code_model_outranks_general_model_of_its_generation_and_size_for_code(catalog):
    assert v(catalog, "qwen3-coder-30b-a3b-instruct", "code") > v(catalog, "qwen3-30b-a3b", "code")
    assert v(catalog, "qwen2.5-coder-7b-instruct", "code") > v(catalog, "llama-3.1-8b-instruct", "code")
    assert v(catalog, "devstral-small-2507", "code") > v(catalog, "mistral-small-3.2-24b-instruct-2506", "code")


def test_fits_are_monotone_and_close_to_their_data(catalog):
    fits = catalog.scores.fits
    assert {f.source for f in fits if f.task == "chat"} >= {"mmlu", "arena_hard", "size-date"}
    for f in fits:
        if f.source != "size-date":
            assert f.coef[1] > 0, (f.task, f.source)  # a better secondary never maps to a worse primary
        assert f.n >= scale.MIN_POINTS
        assert f.rms < 15, (f.task, f.source, f.rms)  # percentage points


def test_logit_fit_recovers_a_known_line():
    # y = expit(0.5 + 2 * logit(x)) exactly: the fit finds the coefficients and leaves no residual
    xs = [10.0, 30.0, 50.0, 70.0, 90.0]
    data = [(f"m{i}", (scale.logit(x),), scale.expit(0.5 + 2 * scale.logit(x))) for i, x in enumerate(xs)]
    fit = scale._fit("chat", "t", ("x",), data)
    assert fit.coef[0] == pytest.approx(0.5, abs=1e-6) and fit.coef[1] == pytest.approx(2.0, abs=1e-6)
    assert fit.rms < 1e-6
    assert 0 < fit.predict((scale.logit(99.9),)) < 100


def test_constant_feature_does_not_make_the_fit_singular():
    data = [(f"m{i}", (float(i), 0.0), 20.0 + 10 * i) for i in range(6)]
    fit = scale._fit("chat", "size-date", ("a", "specialist"), data)
    assert fit is not None and fit.coef[2] == 0.0


def test_fit_report_is_current():
    """catalog/quality_fit.txt is benchmarks/quality_scale.py's output: the fits' data and residuals in the repo."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality_scale.py")], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert out == (ROOT / "catalog" / "quality_fit.txt").read_text(), \
        "rerun: python benchmarks/quality_scale.py > catalog/quality_fit.txt"


def test_cli_list_json_has_released_and_normalized_imputed_per_task():
    r = subprocess.run([str(ADVISOR), "catalog", "list", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["models"]
    for row in rows:
        assert row["released"] and len(row["released"]) == 7, row["id"]
        for t in row["tasks"]:
            s = row["scores"][t]
            assert s["normalized"] is not None and isinstance(s["imputed"], bool), (row["id"], t)
    coder = next(x for x in rows if x["id"] == "qwen3-coder-30b-a3b-instruct")
    assert coder["scores"]["code"]["imputed"] and coder["scores"]["code"]["method"] == "mapped"
    old = next(x for x in rows if x["id"] == "qwen3-30b-a3b")
    assert old["superseded_by"] == ["qwen3-30b-a3b-instruct-2507", "qwen3-30b-a3b-thinking-2507"]


def test_size_features_use_the_effective_size_of_moe_models(catalog):
    m = catalog.get("qwen3-30b-a3b-instruct-2507")
    lg, years, spec = scale.size_features(m, "code")
    assert lg == pytest.approx(math.log10(math.sqrt(30.532122624 * 3.3)))
    assert years == pytest.approx(2.5) and spec == 0.0
    assert scale.size_features(catalog.get("qwen3-coder-30b-a3b-instruct"), "code")[2] == 1.0


# --------------------------------------------------------------------------------------------------------------------
# Recency in the planner: a superseded model is not picked where its successor fits, unless named


def _box(vram_gib: int, ram_gib: int = 32):
    from advisor.probe.profile import Cpu, Gpu, HardwareProfile, Memory
    gib = 2**30
    gpus = [Gpu(index=0, vendor="nvidia", name="NVIDIA GeForce RTX 4090", backend="cuda",
                memory_total_bytes=vram_gib * gib, memory_free_bytes=vram_gib * gib)] if vram_gib else []
    return HardwareProfile(cpu=Cpu(physical_cores=8, logical_cores=16, usable_cores=16),
                           memory=Memory(total_bytes=ram_gib * gib, usable_bytes=ram_gib * gib), gpus=gpus)


def test_superseded_model_is_dropped_where_its_successor_fits():
    from advisor.planner import Request, recommend
    from advisor.rules import load_rules

    cat, rules = load_catalog(ROOT / "catalog", overlay=False), load_rules()
    rec = recommend(_box(24), cat, rules, Request(task="chat", top=200))
    planned = {p.model.id for p in rec.ranked}
    assert "qwen3-30b-a3b-instruct-2507" in planned and "qwen3-30b-a3b" not in planned
    why = [r.message for r in rec.rejections if r.model == "qwen3-30b-a3b"]
    assert any("superseded by qwen3-30b-a3b-instruct-2507" in w for w in why), why
    assert "mistral-small-24b-instruct-2501" not in planned
    # asked for by name, it is planned
    named = recommend(_box(24), cat, rules, Request(task="chat", model="qwen3-30b-a3b"))
    assert named.plans and named.plans[0].model.id == "qwen3-30b-a3b"


def test_recent_models_win_chat_and_code_where_they_fit():
    from advisor.planner import Request, recommend
    from advisor.rules import load_rules

    cat, rules = load_catalog(ROOT / "catalog", overlay=False), load_rules()
    for vram in (8, 16, 24, 48, 80):
        for task in ("chat", "code"):
            best = recommend(_box(vram, 64), cat, rules, Request(task=task)).plans[0]
            assert cat.get(best.model.id).released >= "2025-01", (vram, task, best.model.id)


def test_size_date_trend_is_not_extrapolated_past_the_newest_benchmarked_model(catalog):
    fit = next(f for f in catalog.scores.fits if f.task == "chat" and f.source == "size-date")
    newest = max(p[1][1] for p in fit.points)
    assert fit.predict((1.0, newest + 2.0, 0.0)) == pytest.approx(fit.predict((1.0, newest, 0.0)))
    # a 2026 model without benchmarks is therefore not ranked above the benchmarked 2025 model of its size
    assert v(catalog, "qwen3.5-35b-a3b", "chat") < v(catalog, "qwen3-30b-a3b-instruct-2507", "chat")
    assert catalog.task_score(catalog.get("qwen3.5-35b-a3b"), "chat").method == "size-date"
