"""Run a plan: start the engine, wait until it is ready, send a test prompt, and back off along the plan's fallback
ladder when a start fails. The procedure and where each step comes from: docs/run.md.

No typer or rich here: progress goes through a ``Reporter``, and the machine through ``Seams`` (advisor.runner.seams:
process starter, HTTP, clock, sleep, signals) so that tests can drive every path with a fake process and a fake
clock. The result is a value: ``RunResult.error`` says why a run failed; nothing is returned through exceptions.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor import engines
from advisor.engines import Engine, Failure, Ready, auth_headers
from advisor.errors import (
    AdvisorError,
    CheckFailedError,
    EngineError,
    EngineMissingError,
    ModelFileError,
    PortInUseError,
)
from advisor.plan import LLAMA_CPP, Plan
from advisor.runner.check import CheckError, CheckResult, check
from advisor.runner.ladder import Settings, apply, ladder, settings_dict
from advisor.runner.seams import NullReporter, Process, Reporter, Seams, stop_process

#: Attempts when the user does not say: the first start and three rungs (docs/run.md, "Back-off").
DEFAULT_MAX_ATTEMPTS = 4
#: Readiness limits. llama.cpp: ollama's load timeout (5 min, OLLAMA_LOAD_TIMEOUT in ollama's envconfig) and
#: ramalama's 180 s bracket it; vLLM took 76-120 s for a 1 MB model on this CPU (tests/test_run_engine.py) and large
#: GPU models take over 10 minutes to load and compile.
DEFAULT_TIMEOUT_S = {LLAMA_CPP: 300.0, "vllm": 900.0}
#: Polling: peers poll once a second; a tiny model is ready in ~1 s, so start at 0.1 s and back off to 1 s, as
#: llama-swap's first check comes 250 ms after the start.
POLL_FIRST_S = 0.1
POLL_MAX_S = 1.0
#: Bytes of log read to classify a failure and to show (ollama keeps the last 8 KiB of error lines: llm/status.go).
LOG_TAIL_BYTES = 64 * 1024


@dataclass
class Attempt:
    settings: dict[str, Any]
    outcome: str  # ok | failed | timeout | check_failed
    reason: str | None = None
    exit_code: int | None = None
    log: str | None = None
    ready_s: float | None = None


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
    #: Why the run failed (None when ``ok``): the caller shows it and exits with its code.
    error: AdvisorError | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(dataclasses.replace(self, process=None, error=None))
        data.pop("process")
        data.pop("error")
        if self.error is not None:
            data["error"] = self.error.message
        return data


@dataclass(frozen=True)
class RunRequest:
    plan: Plan
    model_path: str
    host: str
    port: int
    api_key: str | None = None
    timeout_s: float | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    log_dir: Path = Path(".")
    check: bool = True
    #: The engine module that builds and reads the command; None: the plan's own (tests pass a fake).
    engine: Engine | None = None


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


@dataclass
class _Run:
    """One ``execute`` call: what every attempt shares."""

    request: RunRequest
    engine: Engine
    seams: Seams
    report: Reporter
    url: str
    headers: dict[str, str]
    timeout: float
    result: RunResult


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


def _failed(run: _Run, error: AdvisorError) -> None:
    run.result.ok, run.result.error = False, error


def _checked(run: _Run, proc: Process, attempt: Attempt) -> str | None:
    """Send the test prompt to a ready engine. None: done (ok, or a failed check recorded in the result);
    "exited": the engine died on it, a start failure that smaller settings may fix."""
    seams, result = run.seams, run.result
    t_check = seams.clock()
    try:
        result.check = check(run.url, run.headers, seams)
    except CheckError as exc:
        result.timings["check_s"] = round(seams.clock() - t_check, 3)
        if _exit_within(proc, seams, CHECK_EXIT_GRACE_S) is None:  # alive but answering wrong: no setting fixes it
            attempt.outcome, attempt.reason = "check_failed", str(exc)
            stop_process(proc, seams)
            _failed(run, CheckFailedError(f"the test prompt failed: {exc}"))
            return None
        attempt.outcome = "check_failed"  # it died on the first request (memory, kernels)
        return "exited"
    result.timings["check_s"] = round(seams.clock() - t_check, 3)
    if proc.poll() is None:
        attempt.outcome, result.ok, result.process = "ok", True, proc
        return None
    attempt.outcome = "check_failed"  # it answered, then died: not a working engine
    return "exited"


def _timed_out(run: _Run, proc: Process, attempt: Attempt, log: Path) -> None:
    attempt.outcome = "timeout"
    text = read_tail(log)
    stop_process(proc, run.seams)
    attempt.reason = f"not ready after {run.timeout:g} s"
    last = tail_lines(text, 1, 200)
    _failed(run, EngineError(f"{run.engine.name} was not ready after {run.timeout:g} s"
                             + (f"; last log line: {last[0]}" if last else ""),
                             hint=f"raise --timeout, or read the log: {log}"))


def _attempt(run: _Run, settings: Settings, number: int) -> Failure | None:
    """Start once. None: done (``result.ok``, or ``result.error`` for a failure no smaller setting fixes);
    a Failure: the start failed in a way the next rung of the ladder may fix."""
    req, seams, result = run.request, run.seams, run.result
    launch = engines.launch(req.plan, req.host, req.port, req.api_key, local_path=req.model_path,
                            settings=settings, engine=run.engine)
    log = req.log_dir / f"{run.engine.name}-{req.port}-{int(time.time())}-{number}.log"
    attempt = Attempt(settings=settings_dict(settings), outcome="failed", log=str(log))
    result.attempts.append(attempt)
    result.argv, result.log, result.settings = launch.argv, str(log), attempt.settings
    run.report.info(f"attempt {number}: starting {run.engine.name}")
    started = seams.clock()
    proc = seams.start(launch, log)
    result.pid = proc.pid
    try:
        state, code = wait_ready(proc, run.engine, run.url, run.headers, run.timeout, log, seams, run.report)
        run.report.done_waiting()
        if state == "ready":
            attempt.ready_s = result.timings["ready_s"] = round(seams.clock() - started, 3)
            run.report.info(f"{run.engine.name} is ready at {run.url} after {attempt.ready_s:.1f} s (pid {proc.pid})")
            if not req.check:
                attempt.outcome, result.ok, result.process = "ok", True, proc
                return None
            state = _checked(run, proc, attempt) or "done"
            code = proc.poll()
        if state == "timeout":
            _timed_out(run, proc, attempt, log)
        if state != "exited":
            return None
        stop_process(proc, seams)  # the leader is gone; its children may not be
        text = read_tail(log)
        attempt.exit_code = code
        failure = run.engine.classify(text) or Failure("exited", _exit_reason(code, text), retry=True)
        attempt.reason = failure.reason
        return failure
    except BaseException:
        # Ctrl-C, a signal (raised as KeyboardInterrupt by the caller) or a bug: never leave the engine behind.
        if proc.poll() is None or seams.group_alive(proc.pid):
            stop_process(proc, seams)
        if attempt.outcome == "failed" and attempt.reason is None:
            attempt.reason = "interrupted"
        raise


def _final(run: _Run, failure: Failure) -> AdvisorError | None:
    """The error for a start failure that no smaller setting fixes, or None when the ladder may help."""
    req, name = run.request, run.engine.name
    if failure.kind == "port":
        return PortInUseError(f"port {req.port} on {req.host} is already in use ({failure.reason})")
    if failure.kind == "model":
        return ModelFileError(f"{name} cannot load {req.model_path}: {failure.reason}")
    if failure.kind == "missing":
        return EngineMissingError(f"{name} is not installed completely: {failure.reason}")
    if not failure.retry:
        return EngineError(f"{name} failed to start: {failure.reason}", hint=f"read the log: {run.result.log}")
    return None


def _next(settings: Settings, failure: Failure, ladder: list[Any]) -> tuple[Settings, str]:
    """The settings of the next attempt: the engine's own suggestion first, else the next rung that changes
    something."""
    if failure.fix:
        return apply(settings, failure.fix), f"the engine's own estimate ({', '.join(f'{k}={v}' for k, v in failure.fix.items())})"
    changed, why = settings, ""
    while ladder and changed == settings:
        rung = ladder.pop(0)
        changed, why = apply(settings, rung.settings), rung.reason
    return changed, why


def execute(request: RunRequest, seams: Seams | None = None, report: Reporter | None = None) -> RunResult:
    """Start, wait, check; on a failure that smaller settings may fix, back off one rung and try again.

    On success the engine is left running (``result.process``): the caller stops it (``--check``), leaves it
    (``--detach``) or serves in the foreground. On any failure or interrupt nothing is left running.
    """
    plan = request.plan
    engine = request.engine or engines.get(plan.engine_ref.name)
    url = base_url(request.host, request.port)
    run = _Run(request, engine, seams or Seams(), report or NullReporter(), url, auth_headers(request.api_key),
               request.timeout_s or DEFAULT_TIMEOUT_S.get(plan.backend, 300.0),
               RunResult(ok=False, backend=plan.backend, engine=engine.name, model=plan.model.id, base_url=url))
    settings: Settings = plan.settings
    rungs = list(plan.fallbacks) or ladder(settings)
    for number in range(1, max(1, request.max_attempts) + 1):
        if not run.seams.port_free(request.host, request.port):
            _failed(run, PortInUseError(f"port {request.port} on {request.host} is already in use"))
            return run.result
        failure = _attempt(run, settings, number)
        if failure is None:
            return run.result
        run.report.info(f"attempt {number} failed: {failure.reason}")
        error = _final(run, failure)
        if error is not None:
            _failed(run, error)
            return run.result
        if number >= request.max_attempts:
            break
        changed, why = _next(settings, failure, rungs)
        if changed == settings:
            _failed(run, EngineError(f"{engine.name} failed to start and no smaller setting is left to try: "
                                     f"{failure.reason}", hint=f"read the log: {run.result.log}"))
            return run.result
        run.report.info(f"backing off: {why}")
        settings = changed
    _failed(run, EngineError(f"{engine.name} failed to start in {len(run.result.attempts)} attempts; last: "
                             f"{run.result.attempts[-1].reason}", hint="raise --max-attempts, or choose a smaller model"))
    return run.result
