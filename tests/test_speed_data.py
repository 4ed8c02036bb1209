"""The public llama-bench dataset the speed model is fitted and checked on (tests/data/llama-bench): every row has
its source, every device and model its datasheet/config figures, and the calibration/evaluation split follows the
fixed rule of SOURCES.md."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "llama-bench"


def rows(name: str) -> list[dict[str, str]]:
    with open(DATA / name, newline="") as f:
        return list(csv.DictReader(f))


def test_every_row_is_sourced_and_complete() -> None:
    results = rows("results.csv")
    assert len(results) >= 150
    for r in results:
        assert r["source_url"].startswith("https://"), r
        for col in ("model", "quant", "size_gib", "backend", "device", "test", "tps", "split"):
            assert r[col], (col, r)
        assert float(r["tps"]) > 0 and float(r["size_gib"]) > 0
        assert r["test"] in ("pp512", "tg128", "tg512")
        assert r["backend"] in ("CUDA", "ROCm", "Vulkan", "Metal", "CPU")
        if r["backend"] == "CPU":
            assert r["threads"], r


def test_devices_and_models_are_described() -> None:
    hw = {h["device"]: h for h in rows("hardware.csv")}
    models = {m["model"]: m for m in rows("models.csv")}
    for r in rows("results.csv"):
        dev = hw[r["device"]]
        assert float(dev["bandwidth_gbs"]) > 0 and dev["source"], dev
        if r["backend"] == "CPU":
            assert dev["cores"] and dev["isa"], dev
        else:
            assert float(dev["fp16_tflops"]) > 0, dev
        m = models[r["model"]]
        assert float(m["active_b"]) <= float(m["params_b"]) and m["source"]


def test_the_split_follows_the_fixed_rule() -> None:
    """Within each backend, devices sorted by name; every third device from the second is held out."""
    results = rows("results.csv")
    held = set()
    for backend in sorted({r["backend"] for r in results}):
        devices = sorted({r["device"] for r in results if r["backend"] == backend})
        held |= {(backend, d) for i, d in enumerate(devices) if i % 3 == 1}
    for r in results:
        want = "evaluation" if (r["backend"], r["device"]) in held else "calibration"
        assert r["split"] == want, r


def test_the_dataset_covers_what_the_planner_meets() -> None:
    results = rows("results.csv")
    models = {m["model"]: m for m in rows("models.csv")}
    by_backend = Counter((r["backend"], r["split"]) for r in results)
    for backend in ("CUDA", "ROCm", "Vulkan", "Metal", "CPU"):
        assert by_backend[(backend, "calibration")] and by_backend[(backend, "evaluation")], backend
    quants = {r["quant"] for r in results}
    assert {"F16", "Q8_0", "Q4_0", "Q4_K_M"} <= quants
    moe = [r for r in results if float(models[r["model"]]["active_b"]) < float(models[r["model"]]["params_b"])]
    assert len(moe) >= 4


@pytest.mark.parametrize("split", ["calibration", "evaluation"])
def test_the_benchmark_reports_both_sets(split: str) -> None:
    from benchmarks import speed_accuracy as bench

    table = bench.summary(bench.load(), bench.constants())
    mine = [t for t in table if t[0] == split and t[1] == "all"]
    assert {t[2] for t in mine} == {"pp512", "tg"}
    assert all(t[3] > 0 for t in mine)


def test_the_modern_set_is_sourced_and_described() -> None:
    """modern.csv: results of current builds, never fitted on; every row sourced, on a described device and model."""
    hw = {h["device"] for h in rows("hardware.csv")}
    models = {m["model"] for m in rows("models.csv")}
    modern = rows("modern.csv")
    assert len(modern) >= 10
    for r in modern:
        assert r["split"] == "modern" and r["source_url"].startswith("https://") and r["date"] >= "2025", r
        assert r["device"] in hw and r["model"] in models and float(r["tps"]) > 0 and float(r["size_gib"]) > 0, r


def test_the_rules_are_what_the_fit_gives() -> None:
    """rules/speed.toml's fitted tables are the output of `benchmarks/speed_accuracy.py --fit` on this dataset: a
    change to the data or the model that is not refitted shows here."""
    import tomllib

    from advisor.rules import Subject, load_rules
    from benchmarks import speed_accuracy as bench

    out = bench.fit(bench.load(), bench.constants())
    rules = load_rules().resolve(Subject())
    sections = {}
    for block in out.split("\n\n"):
        head, _, body = block.partition("\n")
        name = head.strip("[]").split("]")[0].removeprefix("rule.set.")
        sections[name] = tomllib.loads(body)
    hopper = sections.pop("prefill_matrix_rate")["hopper"]
    assert hopper == pytest.approx(rules["prefill_matrix_rate"]["hopper"], abs=0.005)
    for name, table in sections.items():
        for key, value in table.items():
            want = rules[name][key]
            if isinstance(value, dict) and any(isinstance(v, list) for v in value.values()):  # prediction ranges
                assert {k: pytest.approx(v, abs=0.005) for k, v in value.items()} == want, (name, key)
            else:
                assert value == pytest.approx(want, abs=0.005), (name, key)
