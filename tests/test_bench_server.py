"""``advisor bench`` through the plan's own server (llama-server, vLLM): the fast tests drive the workflow against
the fake OpenAI server (tests/fake_openai.py) with a fake process, and check what is sent (token-id prompts of the
asked lengths, ``ignore_eos``, no prompt cache), what is measured (the engine's own ``timings`` where it sends them,
else timed from the stream), what is stored, and that the engine is stopped in every case. The ``engine`` test runs
a real llama-server (the CPU build ``advisor setup --rpc`` makes, as tests/test_cluster_run.py does) on a generated
GGUF, then plans with the measurement."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from advisor import engines
from advisor.app import bench as app
from advisor.app import bench_server
from advisor.app.advise import advise
from advisor.errors import BadInputError, CheckFailedError, EngineError
from advisor.plan import LLAMA_SERVER, VLLM_SERVER, EngineRef
from advisor.planner import Request
from advisor.runner import bench as http
from advisor.runner.seams import Seams, UrllibHttp
from advisor.store import bench as store
from tests import ggufgen
from tests.fake_openai import FakeOpenAI
from tests.test_bench import ADVISOR, PROFILE, run_small_bench
from tests.test_run_engine import assert_gone, vllm_python, write_tiny_llama  # noqa: F401 (a fixture)

VOCAB = list(range(1000, 1100))


class Proc:
    """A process that runs until signalled (or exits with ``code`` at once)."""

    def __init__(self, code: int | None = None) -> None:
        self.pid, self.code = 4_242_424, code

    def poll(self) -> int | None:
        return self.code

    def wait(self, timeout: float | None = None) -> int:
        return self.code if self.code is not None else -15


class Machine:
    """The runner's seams: nothing is started; ``signals`` records what stopping sent."""

    def __init__(self, code: int | None = None) -> None:
        self.code, self.procs, self.launches, self.signals = code, [], [], []

    def start(self, launch: Any, log: Path) -> Proc:
        self.launches.append(launch)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("main: server is listening\n" if self.code is None else "error: failed to load model\n")
        self.procs.append(Proc(self.code))
        return self.procs[-1]

    def killpg(self, pid: int, sig: int) -> None:
        self.signals.append(sig)
        self.procs[-1].code = -sig

    def seams(self) -> Seams:
        return Seams(start=self.start, http=UrllibHttp(), killpg=self.killpg, port_free=lambda h, p: True,
                     group_alive=lambda pgid: False)

    @property
    def stopped(self) -> bool:
        return signal.SIGTERM in self.signals


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return ggufgen.write(tmp_path / "tiny.gguf", ggufgen.Spec())


def served_plan(model: Path, exe: str):
    plan = advise(PROFILE, Request(model=str(model), top=1)).plans[0]
    ref = EngineRef(LLAMA_SERVER, exe=exe)
    return dataclasses.replace(plan, engine=ref, args=engines.argv(ref, plan.settings, plan.model, plan.sampling))


@pytest.fixture
def exe(tmp_path: Path) -> str:
    path = tmp_path / "llama-server"
    path.write_text("#!/bin/sh\nexit 1\n")
    path.chmod(0o755)
    return str(path)


def llama_timings(body: dict[str, Any]) -> dict[str, Any]:
    """What llama-server's last stream event carries (server_slot_stats::to_json), with made-up speeds that say
    which request they answer: prefill 1000 + prompt length, decode 50 tokens/s."""
    n, gen = len(body["prompt"]), body["max_tokens"]
    return {"cache_n": 0, "prompt_n": n, "prompt_ms": n / (1000 + n) * 1e3, "prompt_per_second": 1000.0 + n,
            "predicted_n": gen, "predicted_ms": gen * 20.0, "predicted_per_second": 50.0 if gen > 1 else 0.0}


def test_llama_server_is_measured_with_its_own_timings_and_stopped(tiny: Path, exe: str) -> None:
    machine = Machine()
    with FakeOpenAI(vocab=VOCAB, model={"meta": {"n_ctx": 1024, "n_vocab": 32000}},
                    completion_timings=llama_timings) as fake:
        out = app.bench_model(PROFILE, served_plan(tiny, exe), app.BenchOptions(prompt=64, gen=16, reps=2),
                              seams=bench_server.ServedSeams(machine.seams(), http.BenchSeams(), fake.port))
    got = {s.name: s.tokens_per_s for s in out.record.samples}
    depth = 1024 - 32 - 8  # one request's context (meta.n_ctx) less the depth test's generation and a margin
    assert got == {"pp64": [1064.0, 1064.0], "tg16": [50.0, 50.0], f"pp{depth}": [1000.0 + depth],
                   f"tg32@d{depth}": [50.0]}
    posts = [r[3] for r in fake.requests if r[1] == "/v1/completions"]
    assert [(len(b["prompt"]), b["max_tokens"]) for b in posts] == [
        (32, 2), (64, 1), (1, 16), (64, 1), (1, 16), (depth, 32)]  # warm-up, 2 x (pp, tg), depth
    assert all(b["ignore_eos"] and b["cache_prompt"] is False and b["stream"] and set(b["prompt"]) <= set(VOCAB)
               for b in posts)
    assert len({tuple(b["prompt"]) for b in posts if len(b["prompt"]) > 1}) == 4  # fresh prompts: no cache reuse
    argv = machine.launches[0].argv
    assert argv[0] == exe and argv[argv.index("--host") + 1] == "127.0.0.1"
    assert machine.stopped
    r = out.record
    assert (r.engine, r.runner) == ("llama.cpp", LLAMA_SERVER)
    assert store.runs(app.machine_key(PROFILE)) == [r]


def test_an_engine_without_timings_is_timed_by_whole_requests(tiny: Path, exe: str) -> None:
    """vLLM sends usage but no timings: tg = tokens / the time of a one-token-prompt request, and at depth the extra
    tokens of a longer generation over the extra time. The fake sends a token every 10 ms, so neither can exceed
    100 tokens/s."""
    machine = Machine()
    with FakeOpenAI(vocab=VOCAB, token_delay=0.01, model={"max_model_len": 256}) as fake:
        out = app.bench_model(PROFILE, served_plan(tiny, exe), app.BenchOptions(prompt=16, gen=8, reps=1),
                              seams=bench_server.ServedSeams(machine.seams(), http.BenchSeams(), fake.port))
    got = {s.name: s.mean for s in out.record.samples}
    depth = 256 - 32 - 8
    assert set(got) == {"pp16", "tg8", f"pp{depth}", f"tg32@d{depth}"}
    assert 0 < got["tg8"] <= 100 and 0 < got[f"tg32@d{depth}"] <= 100 and got["pp16"] > 0
    posts = [(len(r[3]["prompt"]), r[3]["max_tokens"]) for r in fake.requests if r[1] == "/v1/completions"]
    assert posts[-2:] == [(depth, 32), (depth, 1)]  # the same depth generating 32 tokens, then one
    assert machine.stopped


def test_tokens_that_come_together_are_timed_by_the_whole_request() -> None:
    """vLLM may send many tokens in one event (its API server gets the CPU late): event times would make them
    decoded in no time. 4 tokens every 10 ms decode at 400 tokens/s at most."""
    with FakeOpenAI(vocab=VOCAB, token_delay=0.01, per_event=4) as fake:
        server = http.Server(VLLM_SERVER, fake.url, pool=VOCAB)
        t = http.timed(server, 1, 16, random.Random(0), http.BenchSeams())
    body = fake.requests[-1][3]
    assert "cache_prompt" not in body and body["ignore_eos"] is True and body["stream"] is True
    assert (t.prompt_tokens, t.gen_tokens, t.engine_decode) == (1, 16, None)
    assert 0 < t.decode <= 400


def test_vllm_is_asked_to_tokenize_its_own_way() -> None:
    with FakeOpenAI(vocab=[7, 5, 7, 9]) as fake:
        server = http.Server(VLLM_SERVER, fake.url, model="tiny")
        assert http.token_pool(server, http.BenchSeams()) == [5, 7, 9]
    body = fake.requests[-1][3]
    assert body["prompt"] == http.WORDS and body["add_special_tokens"] is False and body["model"] == "tiny"


def test_vllm_context_comes_from_its_model_list() -> None:
    server = http.Server(VLLM_SERVER, "http://127.0.0.1:1")
    http.describe(server, {"data": [{"id": "m", "max_model_len": 2048}]})
    assert (server.model, server.n_ctx) == ("m", 2048)
    assert bench_server.depth_for(app.BenchOptions(), server.n_ctx) == 2048 - 32 - 8


def test_a_stream_that_breaks_is_a_failed_check_and_the_engine_is_stopped(tiny: Path, exe: str) -> None:
    machine = Machine()
    with FakeOpenAI(vocab=VOCAB, done=False) as fake, pytest.raises(CheckFailedError, match="benchmarking"):
        app.bench_model(PROFILE, served_plan(tiny, exe), app.BenchOptions(prompt=8, gen=4, reps=1),
                        seams=bench_server.ServedSeams(machine.seams(), http.BenchSeams(), fake.port))
    assert machine.stopped
    assert store.runs(app.machine_key(PROFILE)) == []


def test_an_interrupt_stops_the_engine(tiny: Path, exe: str) -> None:
    def interrupted(*args: Any, **kwargs: Any):
        raise KeyboardInterrupt
        yield  # a generator, as the stream seam is

    machine = Machine()
    with FakeOpenAI(vocab=VOCAB) as fake, pytest.raises(KeyboardInterrupt):
        app.bench_model(PROFILE, served_plan(tiny, exe), app.BenchOptions(prompt=8, gen=4, reps=1),
                        seams=bench_server.ServedSeams(machine.seams(), http.BenchSeams(stream=interrupted), fake.port))
    assert machine.stopped


def test_a_prompt_longer_than_the_context_is_bad_input(tiny: Path, exe: str) -> None:
    machine = Machine()
    with FakeOpenAI(vocab=VOCAB, model={"meta": {"n_ctx": 128}}) as fake, pytest.raises(BadInputError, match="128"):
        app.bench_model(PROFILE, served_plan(tiny, exe), app.BenchOptions(prompt=512),
                        seams=bench_server.ServedSeams(machine.seams(), http.BenchSeams(), fake.port))
    assert machine.stopped


def test_an_engine_that_does_not_start_is_an_engine_error(tiny: Path, exe: str) -> None:
    machine = Machine(code=1)
    with pytest.raises(EngineError, match="failed to load model"):
        app.bench_model(PROFILE, served_plan(tiny, exe), app.BenchOptions(),
                        seams=bench_server.ServedSeams(machine.seams(), http.BenchSeams(), 1))
    assert len(machine.launches) == 1  # one attempt: a backed-off start would measure other settings


def test_a_served_measurement_does_not_replace_the_in_process_one(tiny: Path) -> None:
    plan = advise(PROFILE, Request(model=str(tiny), top=1)).plans[0]
    key = app.machine_key(PROFILE)
    for runner, tg in (("llama-cpp-python", 10.0), (LLAMA_SERVER, 20.0)):
        store.save_run(key, store.BenchRecord(plan.model.id, plan.model.quant, plan.backend, runner,
                                              plan.llama_cpp.n_gpu_layers, [store.Sample("tg", 128, 0, [tg])]))
    assert sorted(r.runner for r in store.runs(key)) == ["llama-cpp-python", LLAMA_SERVER]
    served = dataclasses.replace(plan, engine=EngineRef(LLAMA_SERVER, exe="/x"))
    inproc = dataclasses.replace(plan, engine=EngineRef("llama-cpp-python", exe=sys.executable))
    got = [p.predicted.decode_tokens_per_s for p in app.apply_measurements(PROFILE, [served, inproc])]
    assert got == [20.0, 10.0]  # each plan gets its own engine's measurement


# -- a real llama-server ---------------------------------------------------------------------------------------------
CACHE = Path(os.environ.get("ADVISOR_TEST_CACHE", Path.home() / ".cache" / "advisor-tests"))


@pytest.fixture(scope="module")
def llama_server() -> str:
    """The CPU llama-server ``advisor setup --rpc`` builds (minutes once, then cached), as the RPC tests use."""
    env = {**os.environ, "ADVISOR_ENGINES_DIR": str(CACHE / "engines")}
    done = subprocess.run([ADVISOR, "setup", "--rpc", "--yes"], env=env, capture_output=True, text=True,
                          timeout=3600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return str(CACHE / "engines" / "llama.cpp-rpc" / "bin" / "llama-server")


@pytest.mark.engine
def test_bench_runs_a_real_llama_server_and_the_next_plan_uses_it(tiny: Path, llama_server: str,
                                                                   tmp_path: Path) -> None:
    plan = served_plan(tiny, llama_server)
    (tmp_path / "plan.json").write_text(json.dumps(plan.to_dict()))
    done, out = run_small_bench("--plan", str(tmp_path / "plan.json"))
    assert (out["engine"], out["runner"]) == ("llama.cpp", LLAMA_SERVER)
    assert "stopped llama-server" in done.stderr
    pid = int(done.stderr.split("stopped llama-server (pid ")[1].split(")")[0])
    assert_gone(pid)
    rec = subprocess.run([ADVISOR, "recommend", "--model", str(tiny), "--json"], capture_output=True, text=True,
                         timeout=300, check=False)
    assert rec.returncode == 0, rec.stderr
    predicted = json.loads(rec.stdout)["plans"][0]["predicted"]
    assert predicted["basis"] == "measured" and LLAMA_SERVER in predicted["note"]
    tg16 = next(r for r in out["results"] if r["test"] == "tg16")
    assert predicted["decode_tokens_per_s"] == pytest.approx(tg16["tokens_per_s"], abs=0.06)


@pytest.mark.engine
@pytest.mark.vllm
def test_bench_runs_a_real_vllm(tmp_path: Path, vllm_python: str) -> None:
    """A tiny Llama (head_dim 64, 512 positions) served by vLLM on the CPU, as 'advisor run DIR' plans it; few
    tokens, so the run is bounded by vLLM's start-up (about 1-2 minutes here)."""
    model = write_tiny_llama(vllm_python, tmp_path / "tiny-llama")
    env = {**os.environ, "ADVISOR_VLLM_PYTHON": vllm_python}
    done = subprocess.run([ADVISOR, "bench", str(model), "--prompt", "64", "--gen", "16", "--reps", "1", "--depth",
                           "256", "--json"], env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    tests = {r["test"]: r["tokens_per_s"] for r in out["results"]}
    assert set(tests) == {"pp64", "tg16", "pp256", "tg32@d256"} and all(v > 0 for v in tests.values())
    assert (out["engine"], out["runner"]) == ("vllm", VLLM_SERVER)
    pid = int(done.stderr.split("stopped vllm (pid ")[1].split(")")[0])
    assert_gone(pid)
