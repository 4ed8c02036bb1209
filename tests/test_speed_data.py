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


@pytest.mark.parametrize("split", ["calibration", "evaluation", "measured", "modern", "fresh"])
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


def test_the_fresh_set_is_sourced_described_and_never_fitted() -> None:
    """fresh.csv: public results from sources no other file uses, every row on a described device and model; the
    fit reads the calibration rows only, so it cannot have seen them."""
    hw = {h["device"] for h in rows("hardware.csv")}
    models = {m["model"] for m in rows("models.csv")}
    fresh = rows("fresh.csv")
    used = {r["source_url"] for name in ("results.csv", "modern.csv") for r in rows(name)}
    assert len(fresh) >= 40
    for r in fresh:
        assert r["split"] == "fresh" and r["source_url"].startswith("https://") and r["source_url"] not in used, r
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


#: How the probe names the benchmark's NVIDIA devices (nvidia-smi's name; the rest are GeForce cards, and AMD
#: devices are "AMD " + their name).
PROBE_NAMES = {
    "A100 PCIe 80GB": "NVIDIA A100 80GB PCIe", "A100 SXM 80GB": "NVIDIA A100-SXM4-80GB", "A40": "NVIDIA A40",
    "H100 PCIe": "NVIDIA H100 PCIe", "H200": "NVIDIA H200", "L40S": "NVIDIA L40S", "RTX A6000": "NVIDIA RTX A6000",
    "RTX 4000 Ada": "NVIDIA RTX 4000 Ada Generation", "RTX 5000 Ada": "NVIDIA RTX 5000 Ada Generation",
    "RTX 6000 Ada": "NVIDIA RTX 6000 Ada Generation", "DGX Spark GB10": "NVIDIA GB10",
    "RTX PRO 6000 Blackwell": "NVIDIA RTX PRO 6000 Blackwell Workstation Edition",
    "Jetson AGX Orin 64GB": "NVIDIA Jetson AGX Orin",  # the device-tree model; nvidia-smi says "Orin (nvgpu)"
}


def planner_spec(h: dict[str, str], rules):
    """(the probe's name for a benchmark GPU, the rules/gpus.toml row the planner takes for it)."""
    default = f"NVIDIA GeForce {h['device']}" if h["vendor"] == "nvidia" else f"AMD {h['device']}"
    name = PROBE_NAMES.get(h["device"], default)
    return name, rules.gpu_spec(name, h["vendor"])


def test_the_planner_and_the_benchmark_give_a_gpu_the_same_matrix_rate() -> None:
    """The speed constants are fitted on hardware.csv's FP16 figures and applied to rules/gpus.toml's: for every
    benchmark GPU the planner knows, its figure (doubled where rules/speed.toml fp16-accumulate-full-rate says the
    table holds the half-rate FP32-accumulate one) is the benchmark's within 3 %."""
    from advisor.planner.speed import fp16_accumulate_tflops
    from advisor.rules import Subject, load_rules

    rules = load_rules()
    acc32 = rules.resolve(Subject())["fp32_accumulate_figure_match"]
    checked = 0
    for h in rows("hardware.csv"):
        if h["vendor"] not in ("nvidia", "amd") or not h["fp16_tflops"]:
            continue
        name, spec = planner_spec(h, rules)
        assert spec is not None, name
        figure = fp16_accumulate_tflops(spec.fp16_tflops, name, acc32)
        assert figure == pytest.approx(float(h["fp16_tflops"]), rel=0.03), (h["device"], spec.match)
        checked += 1
    assert checked >= 25


def test_the_planner_and_the_benchmark_give_a_gpu_the_same_bandwidth() -> None:
    """Decode constants are fitted on hardware.csv's bandwidths and applied to rules/gpus.toml's: every benchmark GPU
    the planner knows by its probe name has the same figure, within 1 %."""
    from advisor.rules import load_rules

    rules = load_rules()
    checked = 0
    for h in rows("hardware.csv"):
        if h["kind"] not in ("gpu", "igpu") or h["vendor"] not in ("nvidia", "amd"):
            continue
        _name, spec = planner_spec(h, rules)
        assert spec is not None and not spec.derived, h["device"]
        assert spec.bandwidth_gbs == pytest.approx(float(h["bandwidth_gbs"]), rel=0.01), (h["device"], spec.match)
        checked += 1
    assert checked >= 25


def test_the_planner_and_the_benchmark_give_an_apple_gpu_the_same_figures() -> None:
    """Apple GPUs come in several core counts per chip: the planner scales its row's TFLOPs by the probe's GPU
    cores (rules/gpus.toml gpu_cores); the benchmark's devices name theirs. Both tables agree within 3 %."""
    import re

    from advisor.rules import load_rules

    rules = load_rules()
    checked = 0
    for h in rows("hardware.csv"):
        m = re.fullmatch(r"Apple (M\d(?: \w+)?) \((\d+)-core GPU\)", h["device"])
        if not m:
            continue
        cores = int(m.group(2))
        spec = rules.gpu_spec(f"Apple {m.group(1)}", "apple", cores)
        assert spec is not None and spec.gpu_cores, h["device"]
        assert spec.tflops_for(cores) == pytest.approx(float(h["fp16_tflops"]), rel=0.03), h["device"]
        assert spec.bandwidth_gbs == pytest.approx(float(h["bandwidth_gbs"]), rel=0.01), h["device"]
        checked += 1
    assert checked >= 9
