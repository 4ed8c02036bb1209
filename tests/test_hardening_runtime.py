"""Hardening of what advisor does at run time: signals during start-up, ``advisor stop`` on state files it did not
write, user data under ADVISOR_HOME (never silently replaced, private modes), and a deterministic exit code for an
engine that dies on the test prompt.

The signal tests run the installed ``advisor`` with a fake ``llama-server`` (a script that never becomes ready and
writes its pid) first on PATH, send the signal while advisor waits for readiness, and check that no engine process
is left; every process a test starts is killed by the test if it is still there.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from advisor.errors import EngineError
from advisor.runner import execute as executor
from advisor.store import state
from tests import ggufgen
from tests.procs import gone
from tests.test_executor import FakeClock, FakeModels, Script, fake_engine, llama_plan, request, seams_for
from tests.test_run_engine import ADVISOR

FAKE_ENGINE = """#!{python}
import os, sys, time
if "--port" not in sys.argv:  # --help, --version: what advisor asks before it starts the engine
    print("usage: llama-server [options]")
    sys.exit(0)
with open(os.environ["FAKE_ENGINE_PIDFILE"], "w") as fh:
    fh.write(str(os.getpid()))
time.sleep(300)
"""


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.mark.parametrize("signame", ["SIGHUP", "SIGQUIT", "SIGTERM", "SIGINT"])
def test_a_signal_during_start_up_stops_the_engine(tmp_path: Path, signame: str) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "llama-server"
    fake.write_text(FAKE_ENGINE.format(python=sys.executable))
    fake.chmod(0o755)
    model = tmp_path / "tiny.gguf"
    ggufgen.write(model, ggufgen.Spec())
    pidfile = tmp_path / "engine.pid"
    env = {**os.environ, "PATH": f"{bindir}:{Path(sys.executable).parent}:/usr/bin:/bin",
           "FAKE_ENGINE_PIDFILE": str(pidfile)}
    advisor = subprocess.Popen([ADVISOR, "run", str(model), "--timeout", "120"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    engine_pid = None
    try:
        deadline = time.monotonic() + 90
        while not pidfile.exists() or not pidfile.read_text():
            assert advisor.poll() is None, advisor.communicate()
            assert time.monotonic() < deadline, "the fake engine never started"
            time.sleep(0.05)
        engine_pid = int(pidfile.read_text())
        time.sleep(0.3)  # advisor is now polling for readiness
        advisor.send_signal(getattr(signal, signame))
        out, err = advisor.communicate(timeout=30)
        assert gone(engine_pid, 10.0), f"the engine (pid {engine_pid}) outlived advisor after {signame}: {err}"
        assert advisor.returncode == 130, err  # "interrupted", as for Ctrl-C
        assert "Traceback" not in err
        assert not list(state.servers_dir().glob("*.json")) if state.servers_dir().is_dir() else True
    finally:
        if advisor.poll() is None:
            advisor.kill()
            advisor.communicate()
        if engine_pid is not None:
            _kill(engine_pid)


def test_stopping_on_signals_restores_the_previous_handlers() -> None:
    from advisor.runner.signals import ENDING, Stopped, stopping_on_signals

    before = {s: signal.getsignal(s) for s in ENDING}
    with pytest.raises(KeyboardInterrupt) as info, stopping_on_signals():
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(1)
    assert isinstance(info.value, Stopped) and info.value.signum == signal.SIGHUP
    assert {s: signal.getsignal(s) for s in ENDING} == before


# -- advisor stop: only a process whose identity is verified --------------------------------------------------------


def _record(id_: str, pid: Any, create_time: Any, argv: Any) -> dict[str, Any]:
    return {"id": id_, "pid": pid, "port": 1, "host": "127.0.0.1", "backend": "llama.cpp", "engine": "llama-server",
            "model": "m", "base_url": "http://127.0.0.1:1", "log": "", "create_time": create_time, "argv": argv}


def _write_state(record: dict[str, Any]) -> Path:
    path = state.servers_dir() / f"{record['id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def _advisor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ADVISOR, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def bystander():
    """A process advisor did not start, in its own process group (what a reused pid would point at)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    deadline = time.monotonic() + 20
    while psutil.Process(proc.pid).cmdline()[-1:] != ["import time; time.sleep(60)"]:  # exec has completed
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield proc
    proc.kill()
    proc.wait()


def test_stop_skips_a_record_without_create_time(bystander) -> None:
    _write_state(_record("9001", bystander.pid, None, []))
    done = _advisor("stop", "--all")
    assert bystander.poll() is None, "advisor stop signalled a process it could not verify"
    assert "skipped 9001" in done.stderr and "Traceback" not in done.stderr


def test_pid_1_is_never_verified() -> None:
    """Checked through ``identify`` only: a regression here must not send a real signal to init's group."""
    record = state.ServerRecord(**_record("9002", 1, psutil.Process(1).create_time(), psutil.Process(1).cmdline()))
    assert state.identify(record)[0] == state.UNVERIFIED
    for pid in (0, -1, "1"):
        assert state.identify(state.ServerRecord(**_record("9002", pid, 1.0, ["x"])))[0] == state.UNVERIFIED


def test_stop_skips_a_foreign_command_line(bystander) -> None:
    own = psutil.Process(bystander.pid)
    _write_state(_record("9003", bystander.pid, own.create_time(), ["llama-server", "-m", "x.gguf", "--port", "1"]))
    done = _advisor("stop", "--all")
    assert bystander.poll() is None
    assert "skipped 9003" in done.stderr, done.stderr
    listed = _advisor("ps", "--json")
    assert json.loads(listed.stdout) == [] and listed.returncode == 0


def test_stop_signals_the_verified_engine(bystander) -> None:
    own = psutil.Process(bystander.pid)
    _write_state(_record("9004", bystander.pid, own.create_time(), own.cmdline()))
    done = _advisor("stop", "9004")
    assert done.returncode == 0, done.stderr
    assert bystander.wait(timeout=10) is not None and "stopped 9004" in done.stderr


@pytest.mark.parametrize("content", [
    '{"id": "9005", "pid": "1; rm -rf /", "port": 1, "host": "h", "backend": "b", "engine": "e", "model": "m", '
    '"base_url": "u", "log": "l"}',
    '{"id": "9005", "pid": [1], "port": 1, "host": "h", "backend": "b", "engine": "e", "model": "m", '
    '"base_url": "u", "log": "l"}',
    '{"id": "9005", "pid": 1.5, "port": 1, "host": "h", "backend": "b", "engine": "e", "model": "m", '
    '"base_url": "u", "log": "l"}',
    "[" * 100_000,
])
def test_odd_state_files_are_dropped_without_a_traceback(content: str) -> None:
    path = state.servers_dir() / "9005.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    for command in (["ps"], ["stop", "--all"]):
        done = _advisor(*command)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert not path.exists()


def test_a_directory_in_servers_is_reported_and_left() -> None:
    (state.servers_dir() / "9006.json").mkdir(parents=True)
    for command in (["ps"], ["stop", "--all"]):
        done = _advisor(*command)
        assert done.returncode == 0 and "not a regular file" in done.stderr, done.stderr


@pytest.mark.parametrize("make", ["file", "unwritable"])
def test_an_unusable_advisor_home_is_exit_2(tmp_path: Path, make: str) -> None:
    home = tmp_path / "home"
    if make == "file":
        home.write_text("not a directory")
    else:
        home.mkdir(mode=0o500)
    env = {**os.environ, "ADVISOR_HOME": str(home / "sub")}
    from advisor.store.files import HomeError, write_private

    if make == "file" or os.geteuid() != 0:  # root writes into a 0500 directory anyway
        with pytest.raises(HomeError):
            write_private(home / "sub" / "learned.json", "{}")
    done = subprocess.run([ADVISOR, "stop", "--all"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode in (0, 2) and "Traceback" not in done.stderr


# -- user data: never silently replaced, private --------------------------------------------------------------------


@pytest.mark.parametrize("content, why", [
    ("{damaged", "damaged"),
    (json.dumps({"schema": 99, "machines": {"m": {"future": True}}}), "newer"),
    (json.dumps({"schema": 1, "machines": []}), "damaged"),
])
def test_an_unusable_learned_file_is_kept_aside(content: str, why: str) -> None:
    path = state.learned_path()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    said: list[str] = []
    state.record_run("machine", "model", "llama.cpp", [], {"ctx": 4096}, say=said.append)
    kept = [p for p in path.parent.iterdir() if p.name.startswith(f"learned.json.{why}-")]
    assert len(kept) == 1 and kept[0].read_text() == content
    assert said and str(kept[0]) in said[0]
    assert json.loads(path.read_text())["machines"]["machine"]["model"]["llama.cpp"]["worked"]["settings"] == {
        "ctx": 4096}


def test_odd_learned_entries_are_read_as_nothing() -> None:
    path = state.learned_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schema": 1, "machines": {"m": {"x": {"llama.cpp": {"worked": 5, "failed": 3}}}}}))
    assert state.learned_settings("m", "x") is None
    state.record_run("m", "x", "llama.cpp", [{"outcome": "oom", "settings": {}, "reason": "r"}], None)
    assert len(json.loads(path.read_text())["machines"]["m"]["x"]["llama.cpp"]["failed"]) == 1


def test_files_under_advisor_home_are_private() -> None:
    state.record_run("machine", "model", "llama.cpp", [], {"ctx": 1})
    record = state.ServerRecord(id="7", pid=2, port=7, host="h", backend="b", engine="e", model="m", base_url="u",
                                log="l")
    state.write_server(record)
    from advisor.catalog.overlay import OVERLAY_SCHEMA, OverlayFile, save_overlay
    from advisor.setup import record as setup_record

    overlay = save_overlay(OverlayFile(schema=OVERLAY_SCHEMA))
    engines = setup_record.save("llama.cpp", {"python": "/x"})
    from advisor.engines import Launch
    from advisor.runner.seams import spawn

    with spawn(Launch(["true"]), state.logs_dir() / "x.log") as proc:
        proc.wait()
    from advisor.strict import read_toml

    read_toml(next((Path(__file__).parent.parent / "rules").glob("*.toml")))  # the parsed-TOML cache is written
    cached = list((state.learned_path().parent / "cache").rglob("*.json"))
    home = state.learned_path().parent
    assert cached
    for path in (state.learned_path(), record.path, overlay, engines, state.logs_dir() / "x.log", *cached):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for directory in (home, state.servers_dir(), overlay.parent, state.logs_dir()):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


# -- the exit code when the engine dies on the test prompt -----------------------------------------------------------


def test_an_engine_dying_on_the_test_prompt_is_always_a_start_failure(tmp_path: Path) -> None:
    """The request fails first (connection reset) and the process exits a moment later: still exit 5, never 6."""
    script = Script([("loaded", None, 0)])
    clock = FakeClock()

    def reset(*args: Any) -> Any:
        script.procs[0].code, script.procs[0].polls = -9, 3  # exits three polls after the request failed
        raise executor.CheckError("connection reset by peer")
        yield  # pragma: no cover

    seams = seams_for(script, clock, stream=reset)
    seams.http = FakeModels()
    result = executor.execute(request(tmp_path, fake_engine(script), llama_plan(), max_attempts=1), seams)
    assert isinstance(result.error, EngineError) and result.error.exit_code == 5, result.error


# -- a corrupt download is reported with the command that removes it --------------------------------------------------

from tests.fake_hub import FakeHub, fake_hub_fixture  # noqa: E402,F401 - the fake_hub fixture


@pytest.fixture
def hub_downloads(fake_hub: FakeHub, monkeypatch) -> FakeHub:
    """The fake Hub for huggingface_hub's downloads too: hf_hub_download builds its URLs from constants read once
    at import (constants.py ENDPOINT, HUGGINGFACE_CO_URL_TEMPLATE)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        fake_hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    return fake_hub


def test_a_good_download_passes_its_check(tmp_path: Path, hub_downloads: FakeHub) -> None:
    fake_hub = hub_downloads
    from advisor.hub import download as hub

    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF" + os.urandom(4096))
    fake_hub.add("org/good", {"m.gguf": src})
    path = hub.fetch_file("org/good", "m.gguf", None, lambda m: None)
    assert path.read_bytes() == src.read_bytes()


def test_a_corrupt_download_names_the_command_that_removes_it(tmp_path: Path, hub_downloads: FakeHub) -> None:
    """The Hub announces one SHA-256 (the file's ETag) and the bytes that arrive are others of the same size."""
    import shlex

    from advisor.errors import DownloadError
    from advisor.hub import download as hub
    from tests import fake_hub as fake_hub_module

    src = tmp_path / "m.gguf"
    fake_hub = hub_downloads
    src.write_bytes(b"GGUF" + b"\1" * 4096)
    fake_hub.add("org/bad", {"m.gguf": src})
    st = src.stat()
    fake_hub_module._etag(src)  # the announced hash is the original content's
    src.write_bytes(b"GGUF" + b"\2" * 4096)  # same size; the content changed in transit
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DownloadError) as info:
        hub.fetch_file("org/bad", "m.gguf", None, lambda m: None)
    assert info.value.exit_code == 4 and "corrupt" in info.value.message and "SHA-256" in info.value.message
    command = info.value.hint.split("remove it with: ", 1)[1].split(", then run again")[0]
    argv = shlex.split(command)
    assert argv[:2] == ["rm", "-f"] and all(Path(p).exists() for p in argv[2:])
    subprocess.run(argv, check=True)
    assert hub.cached_file("org/bad", "m.gguf") is None  # removed: the next run downloads it again


@pytest.mark.parametrize("settings", [{"ctx": "x"}, {"ctx": -5}, {"nonsense": 1}, {"n_gpu_layers": 1e300},
                                      {"cache_type_k": "q8_0 --rpc evil:1"}, "not a dict"])
def test_damaged_learned_settings_count_as_nothing_learned(settings: Any) -> None:
    """A hand-edited learned.json entry made recommend exit 1 (TypeError) or plan ctx -5; now it is ignored."""
    path = state.learned_path()
    path.parent.mkdir(parents=True)
    entry = {"worked": {"settings": settings, "at": 1}, "failed": []}
    path.write_text(json.dumps({"schema": 1, "machines": {"m": {"x": {"llama.cpp": entry}}}}))
    assert state.learned_settings("m", "x") is None
    entry["worked"]["settings"] = {"ctx": 2048}
    path.write_text(json.dumps({"schema": 1, "machines": {"m": {"x": {"llama.cpp": entry}}}}))
    assert state.learned_settings("m", "x")["settings"] == {"ctx": 2048}
