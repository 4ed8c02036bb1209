"""``advisor bench``: measurements stored per machine (private files), plans made afterwards use them
(``predicted.basis`` measured / calibrated), ``--memory`` measured for real, bad input is one line and exit 2. The
``engine`` test runs llama-cpp-python for real on a generated GGUF and then plans with the measurement."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from advisor.app import bench as app
from advisor.app.advise import advise
from advisor.planner import Request
from advisor.probe.profile import Cpu, HardwareProfile, Memory
from advisor.rules import Subject, load_rules
from advisor.store import bench as store
from tests import ggufgen

ADVISOR = str(Path(sys.executable).parent / "advisor")
GIB = 1 << 30
PROFILE = HardwareProfile(
    cpu=Cpu(model="Bench Test CPU", physical_cores=4, logical_cores=8, usable_cores=4, features=["avx2", "fma"]),
    memory=Memory(total_bytes=16 * GIB, available_bytes=12 * GIB, usable_bytes=12 * GIB))


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return ggufgen.write(tmp_path / "tiny.gguf", ggufgen.Spec())


def plan_of(path: Path):
    return advise(PROFILE, Request(model=str(path), top=1)).plans[0]


def record(plan, tg: list[float], pp: list[float], ngl: int | None = None, model_id: str | None = None):
    return store.BenchRecord(
        model_id=model_id or plan.model.id, quant=plan.model.quant, engine=plan.backend, runner="llama-cpp-python",
        n_gpu_layers=plan.llama_cpp.n_gpu_layers if ngl is None else ngl,
        samples=[store.Sample("pp", 512, 0, pp), store.Sample("tg", 128, 0, tg), store.Sample("tg", 32, 4096, [1.0])],
        predicted_decode=plan.predicted.decode_tokens_per_s, predicted_prefill=plan.predicted.prefill_tokens_per_s)


def test_without_measurements_plans_are_the_models(tiny: Path) -> None:
    p = plan_of(tiny).predicted
    assert p.basis == "model" and p.decode_low <= p.decode_tokens_per_s <= p.decode_high


def test_a_measured_model_is_planned_with_its_measurement(tiny: Path) -> None:
    plan = plan_of(tiny)
    path = store.save_run(app.machine_key(PROFILE), record(plan, tg=[40.0, 44.0], pp=[900.0, 1100.0]))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    p = plan_of(tiny).predicted
    assert p.basis == "measured"
    assert (p.decode_tokens_per_s, p.decode_low, p.decode_high) == (42.0, 40.0, 44.0)
    assert (p.prefill_tokens_per_s, p.prefill_low, p.prefill_high) == (1000.0, 900.0, 1100.0)
    assert "advisor bench" in p.note


def test_other_measurements_calibrate_the_model(tiny: Path) -> None:
    plan = plan_of(tiny)
    pred = plan.predicted
    half = record(plan, tg=[pred.decode_tokens_per_s / 2], pp=[pred.prefill_tokens_per_s * 2], model_id="other")
    store.save_run(app.machine_key(PROFILE), half)
    p = plan_of(tiny).predicted
    assert p.basis == "calibrated"
    assert p.decode_tokens_per_s == pytest.approx(pred.decode_tokens_per_s / 2, rel=0.02)
    assert p.prefill_tokens_per_s == pytest.approx(pred.prefill_tokens_per_s * 2, rel=0.02)
    assert p.decode_low < p.decode_tokens_per_s < p.decode_high


def test_measured_memory_bandwidth_calibrates_cpu_plans(tiny: Path) -> None:
    """A streaming read measures what the CPU reaches: it stands for the default peak x the cpu decode efficiency."""
    before = plan_of(tiny).predicted
    r = load_rules().resolve(Subject(physical_cores=4))
    # the platform's default or what its 4 cores draw, whichever is less (rules/speed.toml)
    peak = min(r["cpu_bandwidth_gbs"], 4 * r["cpu_bandwidth_per_core_gbs"])
    effective = peak * r["decode_bandwidth_efficiency"]["cpu"]["f16"]  # the tiny model is F16
    store.save_memory(app.machine_key(PROFILE), store.MemoryRecord(2 * effective, 4, 1 << 28, 1.0))
    p = plan_of(tiny).predicted
    assert p.basis == "calibrated" and "--memory" in p.note
    assert before.decode_tokens_per_s < p.decode_tokens_per_s <= 2 * before.decode_tokens_per_s * 1.01
    assert p.prefill_tokens_per_s == before.prefill_tokens_per_s  # prefill is compute-bound: unchanged


def test_bench_memory_measures_for_real() -> None:
    rec = app.bench_memory(PROFILE, seconds=0.2, buffer_mib=32)
    assert rec.bandwidth_gbs > 0.1 and rec.threads == 4
    assert store.memory(app.machine_key(PROFILE)) == rec


def test_records_this_version_cannot_read_are_skipped() -> None:
    key = app.machine_key(PROFILE)
    path = store.machine_file(key)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schema": 1, "machine": key, "memory": {"bandwidth_gbs": "x"},
                                "runs": [{"model_id": "m"}, 3]}))
    assert store.runs(key) == [] and store.memory(key) is None


@pytest.mark.parametrize("args,text", [
    ([], "give a MODEL or --plan FILE"),
    (["--memory", "x.gguf"], "--memory measures the machine"),
    (["--plan", "/nonexistent/plan.json"], "cannot read /nonexistent/plan.json"),
    (["--memory", "--seconds", "1000"], "--seconds must be between"),
    (["x.gguf", "--depth", "-1"], "--depth must be 0"),
    (["x.gguf", "--reps", "0"], "--reps must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], text: str) -> None:
    done = subprocess.run([ADVISOR, "bench", *args], capture_output=True, text=True, timeout=120, check=False)
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("advisor: error:")]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and text in lines[0] and "Traceback" not in done.stderr


def run_small_bench(*what: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """``advisor bench WHAT --prompt 64 --gen 16 --reps 2 --depth 256 --json``, checked for the four tests it runs
    (two samples each) and its progress on stderr."""
    done = subprocess.run([ADVISOR, "bench", *what, "--prompt", "64", "--gen", "16", "--reps", "2",
                           "--depth", "256", "--json"], capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    tests = {r["test"]: r for r in out["results"]}
    assert set(tests) == {"pp64", "tg16", "pp256", "tg32@d256"}
    assert all(r["tokens_per_s"] > 0 for r in out["results"]) and len(tests["tg16"]["samples"]) == 2
    assert "bench: pp64" in done.stderr  # progress on stderr
    return done, out


@pytest.mark.engine
def test_bench_runs_llama_cpp_and_the_next_plan_uses_it(tiny: Path) -> None:
    done, out = run_small_bench(str(tiny))
    stored = Path(out["stored"])
    assert stat.S_IMODE(os.stat(stored).st_mode) == 0o600
    rec = subprocess.run([ADVISOR, "recommend", "--model", str(tiny), "--json"], capture_output=True, text=True,
                         timeout=300, check=False)
    assert rec.returncode == 0, rec.stderr
    predicted = json.loads(rec.stdout)["plans"][0]["predicted"]
    assert predicted["basis"] == "measured"
    tg16 = next(r for r in out["results"] if r["test"] == "tg16")
    assert predicted["decode_tokens_per_s"] == pytest.approx(tg16["tokens_per_s"], abs=0.06)
    assert predicted["decode_low"] <= predicted["decode_tokens_per_s"] <= predicted["decode_high"]
