"""``advisor run --auto`` (recommend, then run the best plan) through the installed command.

The fast tests plan from a profile that ``advisor probe --json`` wrote and compare with ``advisor recommend``; the
engine test asks ``advisor recommend`` which catalog file it picks on this machine, writes that file header-only
(tests/gguf_from_catalog.py: the real tensor names, shapes and types, a sparse zero data region) into a Hugging Face
cache layout, and runs ``advisor run --auto --check`` on it with llama-cpp-python's server, offline.

Every process a test starts is stopped: the advisor subprocesses are waited for (``subprocess.run``), and the engine
advisor started is checked to be gone, and killed by the test if it is not.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests import gguf_from_catalog
from tests.procs import gone
from tests.test_executor import hub_cache_file
from tests.test_run_engine import ADVISOR, engine_env, run_advisor

#: A request small enough that the chosen model loads in seconds on a CPU.
REQUEST = ["--task", "code", "--max-size", "0.7"]


def recommend(*extra: str) -> dict:
    done = run_advisor(["recommend", "--json", *REQUEST, "--top", "1", *extra], timeout=60)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["plans"], "recommend found no plan for the request"
    return data["plans"][0]


def argv_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def place_in_cache(plan: dict) -> Path:
    """The plan's GGUF file, header-only, where huggingface_hub's cache keeps it (snapshots/<rev>/, refs/main)."""
    model = plan["model"]
    (name,) = model["files"]
    path = hub_cache_file(model["repo"], name, b"")
    gguf_from_catalog.write(path, model["id"], model["quant"], file=name)
    return path


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    done = run_advisor(["probe", "--json"], timeout=60)
    assert done.returncode == 0, done.stderr
    path = tmp_path / "hardware.json"
    path.write_text(done.stdout)
    return path


@pytest.mark.engine  # needs llama-cpp-python installed (its run path starts or names that engine)
def test_dry_run_prints_the_recommended_plan(profile: Path) -> None:
    plan = recommend("--hardware", str(profile))
    model, settings = plan["model"], plan["settings"]
    assert plan["backend"] == "llama.cpp" and model["format"] == "gguf"

    def dry_run() -> list[str]:
        done = run_advisor(["run", "--auto", "--dry-run", "--hardware", str(profile), *REQUEST, "--json"], timeout=60)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert out["engine"] == "llama-cpp-python"  # engine_env's PATH has no llama-server
        return out["argv"]

    # Not in the cache: the command names the recommended repository and file, to be downloaded first.
    argv = dry_run()
    assert argv_value(argv, "--model") == f"<{model['repo']}/{model['files'][0]}, downloaded first>"
    # In the cache: the command runs the cached file.
    cached = place_in_cache(plan)
    argv = dry_run()
    assert argv_value(argv, "--model") == str(cached)
    # The plan's settings, as llama-cpp-python's flags.
    assert int(argv_value(argv, "--n_ctx")) == settings["ctx"]
    assert int(argv_value(argv, "--n_batch")) == settings["batch"]
    assert int(argv_value(argv, "--n_ubatch")) == settings["ubatch"]
    assert int(argv_value(argv, "--n_gpu_layers")) == settings["n_gpu_layers"]
    if settings["threads"]:
        assert int(argv_value(argv, "--n_threads")) == settings["threads"]


@pytest.mark.engine  # needs llama-cpp-python installed (its run path starts or names that engine)
def test_offline_with_an_empty_cache() -> None:
    done = run_advisor(["run", "--auto", *REQUEST, "--check"], timeout=60)
    assert done.returncode == 4, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("advisor: error:"), done.stderr
    assert "not in the Hugging Face cache" in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_header_only_file_reads_back_as_the_layout(tmp_path: Path) -> None:
    """The writer is what the engine test relies on: the recommended kind of file reads back with the layout's
    tensors (names, shapes, types, bytes) and the catalog's hyper-parameters."""
    from advisor.gguf.facts import read_gguf_facts

    model, variant = gguf_from_catalog.find("qwen3-1.7b", "IQ2_M")
    layout = gguf_from_catalog.layout(model, variant)
    path = gguf_from_catalog.write(tmp_path / variant.files[0], model.id, variant.quant)
    facts = read_gguf_facts(path)
    assert [(t.name, t.shape, t.type_name, t.nbytes) for t in facts.tensors] == [
        (p.tensor.name, p.tensor.shape, p.type, p.nbytes) for p in layout.tensors]
    assert facts.weights_bytes == layout.tensor_bytes
    a = model.arch
    assert (facts.architecture, facts.n_layer, facts.n_embd, facts.n_vocab) == (a.name, a.n_layer, a.n_embd,
                                                                                 a.vocab_size)
    assert set(facts.n_head) == {a.n_head} and set(facts.n_head_kv) == {a.n_head_kv} and set(facts.n_ff) == {a.n_ff}
    assert facts.tied_embeddings == a.tied_embeddings and facts.file_type == gguf_from_catalog.file_type("IQ2_M")
    assert abs(facts.file_bytes - layout.file_bytes) < 0.01 * layout.file_bytes  # metadata is an estimate there
    assert os.stat(path).st_blocks * 512 < 16 * 2**20  # sparse: a few MB on disk for a 0.69 GB file


def _one_model_per_architecture() -> list[tuple[str, str]]:
    from advisor.catalog.load import load_catalog

    seen: dict[str, tuple[str, str]] = {}
    for m in load_catalog().models:
        ggufs = [v for v in m.all_variants() if v.format == "gguf"]
        if ggufs and m.arch.name not in seen:
            seen[m.arch.name] = (m.id, ggufs[0].quant)
    return sorted(seen.values())


@pytest.mark.parametrize(("model_id", "quant"), _one_model_per_architecture())
def test_every_architecture_reads_back(tmp_path: Path, model_id: str, quant: str) -> None:
    from advisor.gguf.facts import read_gguf_facts

    model, variant = gguf_from_catalog.find(model_id, quant)
    layout = gguf_from_catalog.layout(model, variant)
    facts = read_gguf_facts(gguf_from_catalog.write(tmp_path / "m.gguf", model_id, quant))
    assert {t.name: (t.shape, t.type_name, t.nbytes) for t in facts.tensors} == {
        p.tensor.name: (p.tensor.shape, p.type, p.nbytes) for p in layout.tensors}
    assert (facts.architecture, facts.n_vocab, facts.head_dim_k, facts.head_dim_v) == (
        model.arch.name, model.arch.vocab_size, model.arch.head_dim_k, model.arch.head_dim_v)


def _run_advisor_stopping(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``advisor ARGS``; past ``timeout`` it gets SIGTERM (advisor stops its engine on it, as on Ctrl-C), then
    SIGKILL, and the test fails."""
    proc = subprocess.Popen([ADVISOR, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"advisor {' '.join(args)} ran past {timeout} s; stderr: {err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _kill_engines_on(model_path: Path) -> list[int]:
    """Kill what is still running on this test's own model file (its tmp path is unique): a failed run's
    leftovers. Returns their pids."""
    killed = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if str(model_path) in (p.info["cmdline"] or []):
            try:
                p.kill()
                killed.append(p.info["pid"])
            except psutil.NoSuchProcess:
                pass
    return killed


@pytest.mark.engine
def test_run_auto_check_runs_the_recommended_file() -> None:
    plan = recommend()  # this machine, probed now: the same probe `run --auto` makes
    model = plan["model"]
    cached = place_in_cache(plan)
    # advisor passes --logits_all false (advisor/engines/llama_cpp_python.py): with the server's default True the
    # output matmul runs over the whole prompt, and on a CPU whose cpuinfo lists AMX but whose (VM) kernel does not
    # let a process use the tiles, ggml's AMX kernel dies on ldtilecfg (SIGSEGV, seen under gdb here) for the Q5_K
    # output of this file.
    env = engine_env()
    t0 = time.monotonic()
    try:
        done = _run_advisor_stopping(["run", "--auto", *REQUEST, "--check", "--json"], env, timeout=180)
        elapsed = time.monotonic() - t0
    finally:
        leftovers = _kill_engines_on(cached)
    assert done.returncode == 0, done.stderr
    assert not leftovers, f"engine processes still running after advisor exited: {leftovers}"
    result = json.loads(done.stdout)
    assert result["ok"] and result["backend"] == "llama.cpp" and result["engine"] == "llama-cpp-python"
    assert result["model"] == model["id"]
    assert argv_value(result["argv"], "--model") == str(cached)  # the recommended quant's file
    assert cached.name == model["files"][0] and model["quant"] in cached.name
    assert [a["outcome"] for a in result["attempts"]] == ["ok"]
    assert result["attempts"][0]["settings"] == plan["settings"] == result["settings"]
    check = result["check"]
    assert check["completion_tokens"] and check["completion_tokens"] > 0, check
    assert check["text"], check
    assert gone(result["pid"]), f"engine pid {result['pid']} is still running"
    # how long it takes is benchmarks/run_check.py's to say; the deadline above only catches a hang
    print(f"\nrun --auto chose {model['id']} {model['quant']} ({shlex.quote(cached.name)}) in {elapsed:.1f} s; "
          f"settings {plan['settings']}; check {check}; timings {result['timings']}")
