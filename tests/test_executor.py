"""The executor with a fake process, a fake clock and scripted readiness: back-off, timeouts, interrupts, the check;
plus state files, learned settings and Hub-cache resolution. Fast: nothing real is started."""

from __future__ import annotations

import dataclasses

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from advisor.runner import execute as executor
from advisor.runner.check import CheckError
from advisor.runner.ladder import ladder, settings_dict
from advisor.runner import seams as seams_mod
from advisor.runner.seams import Seams

from advisor.hub import download as hub

from advisor.store import state
from advisor.engines import Engine, Launch, Ready, llama_cpp_python, vllm
from advisor.errors import CheckFailedError, DownloadError, EngineError, ModelFileError, ModelNotFoundError
from advisor.plan import LLAMA_CPP, VLLM, Fallback, LlamaCppSettings, ModelRef, Plan, VllmSettings
from tests.fake_openai import FakeOpenAI


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeProcess:
    """Exits with ``code`` after ``polls`` polls (None: runs until signalled)."""

    def __init__(self, pid: int, code: int | None, polls: int) -> None:
        self.pid, self.code, self.polls, self.signals = pid, code, polls, []

    def poll(self) -> int | None:
        if self.code is not None and self.polls <= 0:
            return self.code
        self.polls -= 1
        return None

    def wait(self, timeout: float | None = None) -> int:
        return self.code if self.code is not None else -15


class Script:
    """Per attempt: (log text, exit code or None for "becomes ready", polls before that)."""

    def __init__(self, attempts: list[tuple[str, int | None, int]], ready_after: int = 1) -> None:
        self.attempts = attempts
        self.ready_after = ready_after
        self.launches: list[Launch] = []
        self.procs: list[FakeProcess] = []
        self.killed: list[tuple[int, int]] = []
        self.polls = 0

    def start(self, launch: Launch, log: Path) -> FakeProcess:
        text, code, polls = self.attempts[len(self.launches)]
        self.launches.append(launch)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(text)
        proc = FakeProcess(4_000_000 + len(self.launches), code, polls)
        self.procs.append(proc)
        self.polls = 0
        return proc

    def ready(self, http: Any, url: str, headers: Any) -> Ready:
        self.polls += 1
        if self.attempts[len(self.launches) - 1][1] is not None or self.polls < self.ready_after:
            raise OSError("connection refused")
        return Ready(True)

    def killpg(self, pid: int, sig: int) -> None:
        self.killed.append((pid, sig))
        for proc in self.procs:
            if proc.pid == pid and proc.code is None and sig in (signal.SIGTERM, signal.SIGKILL):
                proc.code, proc.polls = -sig, 0


def fake_engine(script: Script, classify: Any = llama_cpp_python.classify, backend: str = LLAMA_CPP) -> Engine:
    """An engine whose command is [exe, model, settings as JSON, sampling as JSON]."""

    def args(settings: Any, model: list[str], flags: Any, sampling: Any) -> list[str]:
        return [*model, json.dumps(settings_dict(settings)), json.dumps(sampling)]

    def command(exe: Any, argv: list[str], settings: Any, host: str, port: int, key: Any, flags: Any,
                offline: bool = True) -> Launch:
        return Launch([exe or "engine", *argv])

    return Engine("fake", backend, args, lambda model, path: [path or ""], command, script.ready, classify)


def seams_for(script: Script, clock: FakeClock, stream: Any = None) -> Seams:
    def no_stream(*args: Any) -> Any:
        yield clock(), {"choices": [{"delta": {"content": "OK"}}], "usage": {"completion_tokens": 1}}

    return Seams(
        start=script.start, http=None, stream=stream or no_stream, clock=clock, sleep=clock.sleep,
        killpg=script.killpg, port_free=lambda h, p: True, group_alive=lambda pgid: False,
    )  # fmt: skip


class FakeModels:
    def get(self, url: str, headers: Any, timeout: float) -> tuple[int, str]:
        return 200, json.dumps({"data": [{"id": "tiny"}]})


def request(tmp_path: Path, engine: Engine, plan: Plan, **kw: Any) -> executor.RunRequest:
    return executor.RunRequest(plan=plan, model_path="/m.gguf", host="127.0.0.1", port=8999,
                               log_dir=tmp_path / "logs", engine=engine, **kw)  # fmt: skip


def llama_plan(**kw: Any) -> Plan:
    fallbacks = kw.pop("fallbacks", [])
    return Plan(model=ModelRef(id="tiny"), backend=LLAMA_CPP, llama_cpp=LlamaCppSettings(**kw), fallbacks=fallbacks)


OOM = "ggml_aligned_malloc: insufficient memory (attempted to allocate 24414.06 MB)\nValueError: Failed to create llama_context"


def test_backs_off_along_the_plan_ladder(tmp_path: Path) -> None:
    script = Script([(OOM, 1, 2), (OOM, 1, 1), ("loaded", None, 0)])
    clock = FakeClock()
    seams = seams_for(script, clock)
    seams.http = FakeModels()
    plan = llama_plan(ctx=1_000_000, fallbacks=[Fallback({"ctx": 65536}, "smaller ctx"), Fallback({"ctx": 4096}, "4k")])
    result = executor.execute(request(tmp_path, fake_engine(script), plan), seams)
    assert result.ok and result.process is script.procs[-1]
    assert [a.outcome for a in result.attempts] == ["failed", "failed", "ok"]
    assert [a.settings["ctx"] for a in result.attempts] == [1_000_000, 65536, 4096]
    assert "out of memory" in (result.attempts[0].reason or "")
    assert result.check and result.check.text == "OK"
    assert all(sig != signal.SIGKILL for _, sig in script.killed)


def test_plan_sampling_reaches_the_engine_and_the_test_prompt_stays_greedy(tmp_path: Path) -> None:
    """The model's recommended sampling is the engine's default; the check's own temperature 0 wins."""
    script = Script([("loaded", None, 0)])
    clock = FakeClock()
    sent: list[dict[str, Any]] = []

    def stream(url: str, body: dict[str, Any], *args: Any) -> Any:
        sent.append(body)
        yield clock(), {"choices": [{"delta": {"content": "OK"}}], "usage": {"completion_tokens": 1}}

    seams = seams_for(script, clock, stream)
    seams.http = FakeModels()
    plan = dataclasses.replace(llama_plan(), sampling={"temperature": 0.7, "top_k": 20})
    result = executor.execute(request(tmp_path, fake_engine(script), plan), seams)
    assert result.ok
    assert json.loads(script.launches[0].argv[-1]) == {"temperature": 0.7, "top_k": 20}
    assert sent and sent[0]["temperature"] == 0


def test_executor_argv_matches_the_plans_args(tmp_path: Path) -> None:
    """One builder: what runs for a local file is the plan's args (built by the planner's assemble step) wrapped in
    the executable, host and port."""
    from advisor import engines
    from advisor.plan import EngineRef
    from advisor.planner import assemble

    settings = LlamaCppSettings(n_gpu_layers=29, ctx=4096, threads=8)
    ref = ModelRef(id="x", path="/m.gguf")
    sampling = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05, "max_new_tokens": 512}
    engine = EngineRef("llama-server", exe="/bin/llama-server")
    plan = Plan(model=ref, backend=LLAMA_CPP, llama_cpp=settings, engine=engine, sampling=sampling,
                args=assemble.plan_args(engine, settings, ref, sampling))
    launch = engines.launch(plan, "127.0.0.1", 8080, local_path="/m.gguf")
    assert launch.argv[1:1 + len(plan.args)] == plan.args
    assert plan.args[-8:] == ["--temp", "0.7", "--top-p", "0.8", "--top-k", "20", "--repeat-penalty", "1.05"]


def test_default_ladder_when_the_plan_has_none(tmp_path: Path) -> None:
    rungs = ladder(LlamaCppSettings(ctx=32768, parallel=4, n_gpu_layers=40))
    assert [r.settings for r in rungs] == [
        {"ctx": 16384}, {"cache_type_k": "q8_0", "cache_type_v": "q8_0", "flash_attn": "on"},
        {"parallel": 1, "ctx": 8192}, {"n_gpu_layers": 30}, {"n_gpu_layers": 0},
    ]  # fmt: skip
    assert [r.settings for r in ladder(VllmSettings(max_model_len=8192, max_num_seqs=8))] == [
        {"enforce_eager": True}, {"max_model_len": 4096}, {"max_num_seqs": 4}, {"gpu_memory_utilization": 0.85}
    ]
    script = Script([(OOM, 1, 0), ("ok", None, 0)])
    clock = FakeClock()
    seams = seams_for(script, clock)
    seams.http = FakeModels()
    result = executor.execute(request(tmp_path, fake_engine(script), llama_plan(ctx=8192)), seams)
    assert [a.settings["ctx"] for a in result.attempts] == [8192, 4096]


def test_vllm_kv_error_uses_the_engines_estimate(tmp_path: Path) -> None:
    from tests.test_engines import KV_V1

    script = Script([(KV_V1, 1, 0), ("ok", None, 0)])
    clock = FakeClock()
    seams = seams_for(script, clock)
    seams.http = FakeModels()
    plan = Plan(model=ModelRef(id="m"), backend=VLLM, vllm=VllmSettings(max_model_len=32768))
    result = executor.execute(request(tmp_path, fake_engine(script, vllm.classify, VLLM), plan), seams)
    assert [a.settings["max_model_len"] for a in result.attempts] == [32768, 12288]
    assert result.attempts[0].outcome == "failed" and "12290" in (result.attempts[0].reason or "")


def test_gives_up_after_max_attempts_with_all_attempts(tmp_path: Path) -> None:
    script = Script([(OOM, 1, 0)] * 3)
    clock = FakeClock()
    result = executor.execute(request(tmp_path, fake_engine(script), llama_plan(ctx=65536), max_attempts=3),
                              seams_for(script, clock))  # fmt: skip
    assert isinstance(result.error, EngineError) and not result.ok
    assert len(result.attempts) == 3
    assert "3 attempts" in result.error.message


def test_corrupt_model_is_not_retried(tmp_path: Path) -> None:
    log = "llama_model_load: error loading model: tensor 'x' data is not within the file bounds\n"
    script = Script([(log, 1, 0)])
    result = executor.execute(request(tmp_path, fake_engine(script), llama_plan()), seams_for(script, FakeClock()))
    assert isinstance(result.error, ModelFileError) and not result.ok
    assert len(script.launches) == 1


def test_unknown_exit_during_load_backs_off_with_the_last_line(tmp_path: Path) -> None:
    script = Script([("loading\nSegmentation fault", -11, 0), ("ok", None, 0)])
    clock = FakeClock()
    seams = seams_for(script, clock)
    seams.http = FakeModels()
    result = executor.execute(request(tmp_path, fake_engine(script), llama_plan(ctx=8192)), seams)
    assert result.attempts[0].reason == "was killed by SIGSEGV during start-up: Segmentation fault"


def test_readiness_timeout_stops_the_engine(tmp_path: Path) -> None:
    script = Script([("still loading", None, 0)], ready_after=10**9)
    clock = FakeClock()
    result = executor.execute(request(tmp_path, fake_engine(script), llama_plan(), timeout_s=30),
                                      seams_for(script, clock))  # fmt: skip
    assert "not ready after 30 s" in result.error.message and "still loading" in result.error.message
    assert script.killed[0] == (script.procs[0].pid, signal.SIGTERM)
    assert isinstance(result.error, EngineError) and not result.ok
    assert 30 <= clock.now < 32  # polled up to the limit, not beyond


def test_interrupt_while_waiting_stops_the_engine(tmp_path: Path) -> None:
    script = Script([("loading", None, 0)], ready_after=10**9)
    clock = FakeClock()
    seams = seams_for(script, clock)

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    seams.sleep = interrupted
    with pytest.raises(KeyboardInterrupt):
        executor.execute(request(tmp_path, fake_engine(script), llama_plan()), seams)
    assert (script.procs[0].pid, signal.SIGTERM) in script.killed


def test_check_failure_on_a_live_engine_is_exit_6(tmp_path: Path) -> None:
    script = Script([("ok", None, 0)])
    clock = FakeClock()

    def broken(*args: Any) -> Any:
        raise CheckError("/v1/chat/completions answered 500: boom")
        yield  # pragma: no cover

    seams = seams_for(script, clock, stream=broken)
    seams.http = FakeModels()
    result = executor.execute(request(tmp_path, fake_engine(script), llama_plan()), seams)
    assert isinstance(result.error, CheckFailedError) and not result.ok
    assert result.error.exit_code == 6 and "500" in result.error.message
    assert script.killed and script.killed[0][1] == signal.SIGTERM


def test_an_empty_answer_is_a_failed_check(tmp_path: Path) -> None:
    script = Script([("ok", None, 0)])
    clock = FakeClock()

    def silent(*args: Any) -> Any:
        yield clock(), {"choices": [{"delta": {}}], "usage": {"completion_tokens": 0}}

    seams = seams_for(script, clock, stream=silent)
    seams.http = FakeModels()
    result = executor.execute(request(tmp_path, fake_engine(script), llama_plan()), seams)
    assert isinstance(result.error, CheckFailedError) and not result.ok
    assert "no tokens" in result.error.message


def test_an_engine_that_dies_right_after_answering_is_not_ok(tmp_path: Path) -> None:
    """It answered, then its process was gone: a start failure to back off from, never a success."""
    script = Script([("ok", None, 0), ("loaded", None, 0)])
    clock = FakeClock()
    calls = {"n": 0}

    def answer_then_die(*args: Any) -> Any:
        calls["n"] += 1
        yield clock(), {"choices": [{"delta": {"content": "OK"}}], "usage": {"completion_tokens": 1}}
        if calls["n"] == 1:
            script.procs[0].code = -11  # SIGSEGV after the answer, as the AMX kernel crash does

    seams = seams_for(script, clock, stream=answer_then_die)
    seams.http = FakeModels()
    plan = llama_plan(ctx=8192, fallbacks=[Fallback({"ctx": 4096}, "smaller ctx")])
    result = executor.execute(request(tmp_path, fake_engine(script), plan), seams)
    assert [a.outcome for a in result.attempts] == ["check_failed", "ok"]
    assert result.ok and result.process is script.procs[1]


def test_a_stream_cut_before_done_is_a_check_error() -> None:
    with FakeOpenAI(tokens=3, done=False) as fake:
        with pytest.raises(CheckError, match="before \\[DONE\\]"):
            executor.check(fake.url, {}, Seams())


def test_check_measures_from_a_real_stream() -> None:
    timings = {"predicted_n": 5, "predicted_per_second": 123.4}
    with FakeOpenAI(timings=timings, api_key="k") as fake:
        result = executor.check(fake.url, {"Authorization": "Bearer k"}, Seams())
        body = fake.requests[-1][3]
    assert result.completion_tokens == 5 and result.tokens_per_s == 123.4 and result.tokens_per_s_source == "engine"
    assert result.text == "t0 t1 t2 t3 t4 " and result.ttft_s is not None and result.latency_s >= result.ttft_s
    assert body["model"] == "tiny" and body["temperature"] == 0 and body["stream"] is True
    with FakeOpenAI(tokens=4) as fake:
        result = executor.check(fake.url, {}, Seams())
    assert result.tokens_per_s_source == "client" and result.completion_tokens == 4


def test_stop_group_escalates_to_sigkill() -> None:
    sent: list[int] = []
    clock = FakeClock()
    seams_mod.stop_group(123, lambda t: False, lambda pid, sig: sent.append(sig), clock, clock.sleep, grace=1.0,
                        alive=lambda pgid: True)  # fmt: skip
    assert sent == [signal.SIGTERM, signal.SIGKILL]


def test_port_helpers() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        assert not seams_mod.port_free("127.0.0.1", taken)
    assert seams_mod.port_free("127.0.0.1", seams_mod.free_port("127.0.0.1"))


# -- state ------------------------------------------------------------------------------------------------------------


def test_learned_settings_round_trip() -> None:
    key = state.machine_key("AMD EPYC", [("NVIDIA H100", 80 * 2**30)])
    assert key == "AMD EPYC | NVIDIA H100 (81920 MiB)"
    assert state.learned_settings(key, "m") is None
    attempts = [{"settings": {"ctx": 8192}, "outcome": "failed", "reason": "oom"},
                {"settings": {"ctx": 4096}, "outcome": "ok", "reason": None}]  # fmt: skip
    state.record_run(key, "m", LLAMA_CPP, attempts, {"ctx": 4096}, {"tokens_per_s": 10.0})
    learned = state.learned_settings(key, "m")
    assert learned and learned["settings"] == {"ctx": 4096} and learned["backend"] == LLAMA_CPP
    assert learned["failed"][0]["reason"] == "oom" and learned["tokens_per_s"] == 10.0
    assert state.learned_settings(key, "m", VLLM) is None


def test_default_plan_prefers_learned_settings(tmp_path: Path) -> None:
    from advisor.app.serve import default_plan
    from advisor.plan import EngineRef

    ref = ModelRef(id="m", path="/m.gguf")
    server, vllm_engine = EngineRef("llama-server", exe="llama-server"), EngineRef("vllm", exe="/py")
    learned = {"backend": LLAMA_CPP, "settings": settings_dict(LlamaCppSettings(ctx=1234))}
    assert default_plan(ref, server, False, None, learned).settings.ctx == 1234
    plan = default_plan(ref, server, True)
    assert plan.settings.n_gpu_layers == 999 and plan.args[:2] == ["-m", "/m.gguf"] and plan.engine == server
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    plan = default_plan(ModelRef(id="t", path=str(model_dir)), vllm_engine, False, model_dir)
    assert plan.settings.max_model_len == 512 and plan.settings.dtype == "bfloat16"


def test_server_records_and_staleness() -> None:
    import os

    import psutil

    live = state.ServerRecord(id="1", pid=os.getpid(), port=1, host="h", backend=LLAMA_CPP, engine="e", model="m",
                              base_url="u", log="l", create_time=state.create_time(os.getpid()),
                              argv=psutil.Process().cmdline())  # fmt: skip
    stale = state.ServerRecord(id="2", pid=os.getpid(), port=2, host="h", backend=LLAMA_CPP, engine="e", model="m",
                               base_url="u", log="l", create_time=1.0)  # fmt: skip  (pid reused)
    state.write_server(live)
    state.write_server(stale)
    (state.servers_dir() / "3.json").write_text("{not json")
    records = {r.id: r for r in state.read_servers()}
    assert set(records) == {"1", "2"} and not (state.servers_dir() / "3.json").exists()
    assert state.is_alive(records["1"]) and not state.is_alive(records["2"])
    state.remove_server(live)
    assert [r.id for r in state.read_servers()] == ["2"]


# -- hub ----------------------------------------------------------------------------------------------------------------


def hub_cache_file(repo: str, filename: str, data: bytes) -> Path:
    """A file placed in huggingface_hub's cache layout: blobs/, snapshots/<rev>/, refs/main."""
    from advisor import settings
    root = settings.model_cache_dir() / f"models--{repo.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = root / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(revision)
    (snapshot / filename).write_bytes(data)
    return snapshot / filename


def test_hub_resolves_from_the_cache_offline() -> None:
    path = hub_cache_file("org/tiny", "x.gguf", b"GGUF" + b"\0" * 20)
    assert hub.resolve(ModelRef(id="t", repo="org/tiny", files=["x.gguf"])) == path
    with pytest.raises(DownloadError) as info:
        hub.resolve(ModelRef(id="t", repo="org/tiny", files=["missing.gguf"]))
    assert "HF_HUB_OFFLINE" in info.value.message and info.value.exit_code == 4


def test_local_model_checks(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        hub.resolve(ModelRef(id="x", path=str(tmp_path / "nope.gguf")))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"<html>not a model</html>")
    with pytest.raises(ModelNotFoundError, match="not a GGUF"):
        hub.resolve(ModelRef(id="x", path=str(bad)))


def test_a_bad_plan_names_the_place_as_the_file_spells_it() -> None:
    from advisor.plan import PlanFileError

    data = {"schema": 1, "backend": "llama.cpp", "model": {"id": "x"}, "settings": {"ctx": "big"}}
    with pytest.raises(PlanFileError, match=r"^plan\.json\.settings\.ctx: expected an integer"):
        Plan.from_dict(data, where="plan.json")


def test_fewer_layers_rung_moves_whole_quarters_from_full_offload() -> None:
    """-ngl counts the output layer's slot (llama_model::load_tensors): from full offload of 32 blocks (-ngl 33)
    the rung that keeps 8 more layers on the CPU is -ngl 25, which leaves blocks 0-7 there; GLM-4.5-Air's 47 blocks
    (one NextN) go from -ngl 48 to 36."""
    import tempfile

    from advisor.gguf.estimate import Settings, layer_devices
    from advisor.gguf.facts import read_gguf_facts
    from tests import ggufgen

    rung = next(r for r in ladder(LlamaCppSettings(ctx=4096, n_gpu_layers=33), n_layer=32)
                if "n_gpu_layers" in r.settings)
    assert rung.settings == {"n_gpu_layers": 25} and "keep 8 more" in rung.reason
    with tempfile.TemporaryDirectory() as d:
        facts = read_gguf_facts(ggufgen.write(Path(d) / "m.gguf", ggufgen.Spec(n_layer=32, n_embd=64, n_ff=128),
                                              sparse=True))
    layers, _ = layer_devices(facts, Settings(n_gpus=1, n_gpu_layers=25))
    assert layers.count("cpu") == 8
    glm = next(r for r in ladder(LlamaCppSettings(ctx=4096, n_gpu_layers=48), n_layer=47)
               if "n_gpu_layers" in r.settings)
    assert glm.settings == {"n_gpu_layers": 36}
