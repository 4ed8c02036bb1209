"""``advisor bench`` for llama-server and vLLM plans: the plan's own engine is started as ``advisor run`` starts it
(advisor.engines.launch through advisor.runner.execute, on 127.0.0.1, one attempt: a backed-off start would measure
other settings than the plan's), timed over its OpenAI-compatible API (advisor.runner.bench), and stopped in every
case (done, failed, Ctrl-C or a signal).

Tests, as llama-bench names them: ``pp{prompt}`` (a ``prompt``-token prompt, one token generated), ``tg{gen}`` (a
one-token prompt, ``gen`` tokens generated), ``reps`` times each after an untimed warm-up request; then at depth: a
``depth``-token prompt generating ``long_gen`` tokens (``tg{long_gen}@d{depth}``) and, for an engine that sends no
timings, the same length generating one (``pp{depth}``, and the difference of the two gives the decode speed).
The depth is capped by the context the server reports for one request.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from advisor.app.bench import BenchOptions, BenchOutcome, Progress, save
from advisor.errors import BadInputError, CheckFailedError
from advisor.plan import LLAMA_CPP, Plan
from advisor.probe.profile import HardwareProfile
from advisor.runner import bench as http
from advisor.runner import execute as runner
from advisor.runner.check import CheckError
from advisor.runner.seams import Seams, free_port, stop_process
from advisor.runner.signals import stopping_on_signals
from advisor.store import bench as store

HOST = "127.0.0.1"
#: Seconds between two "waiting for the engine" lines (the runner polls about once a second).
WAIT_EVERY_S = 10.0


@dataclass(frozen=True)
class ServedSeams:
    """What the served benchmark touches outside itself: the runner's seams (process, readiness, stopping), the
    benchmark's HTTP, and a fixed port (None: a free one). Tests pass fakes."""

    run: Seams = field(default_factory=Seams)
    http: http.BenchSeams = field(default_factory=http.BenchSeams)
    port: int | None = None


class ProgressReporter:
    """advisor.runner.seams.Reporter onto ``progress`` lines: start-up messages, and the wait at most every
    ``WAIT_EVERY_S`` seconds."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.last = 0.0

    def info(self, message: str) -> None:
        self.progress(message)

    def waiting(self, message: str, tail: list[str]) -> None:
        now = time.monotonic()
        if now - self.last >= WAIT_EVERY_S:
            self.last = now
            self.progress(message + (f" | {tail[-1]}" if tail else ""))

    def done_waiting(self) -> None:
        pass


def _plan_ctx(plan: Plan) -> int | None:
    if plan.backend == LLAMA_CPP and plan.llama_cpp is not None:
        return plan.llama_cpp.ctx // max(1, plan.llama_cpp.parallel or 1)
    return plan.vllm.max_model_len if plan.vllm is not None else None


def depth_for(opts: BenchOptions, n_ctx: int | None) -> int:
    """The long-context depth: 4096 unless ``opts.depth`` says, within the context of one request."""
    want = 4096 if opts.depth is None else opts.depth
    room = (n_ctx - opts.long_gen - 8) if n_ctx else want
    return max(0, min(want, room))


def _fits(opts: BenchOptions, n_ctx: int | None) -> None:
    if n_ctx and max(opts.prompt + 1, opts.gen + 1) > n_ctx:
        raise BadInputError(f"--prompt {opts.prompt} / --gen {opts.gen} do not fit the engine's context of "
                            f"{n_ctx} tokens per request")


def _rate(value: float | None, what: str) -> float:
    if value is None or value <= 0:
        raise CheckFailedError(f"the engine's answer gave no {what} speed (too few tokens generated?)")
    return value


def measure(server: http.Server, opts: BenchOptions, progress: Progress,
            seams: http.BenchSeams) -> list[store.Sample]:
    """The pp/tg tests and the depth test against a ready server (see the module's docstring)."""
    rng = random.Random(0)
    _fits(opts, server.n_ctx)
    http.timed(server, min(opts.prompt, 32), 2, rng, seams)  # warm-up, untimed (llama-bench's own warm-up run)
    pp: list[float] = []
    tg: list[float] = []
    for rep in range(opts.reps):
        pp.append(_rate(http.timed(server, opts.prompt, 1, rng, seams).prefill, "prefill"))
        progress(f"pp{opts.prompt}: {pp[-1]:.1f} tokens/s (run {rep + 1}/{opts.reps})")
        tg.append(_rate(http.timed(server, 1, opts.gen, rng, seams).decode, "decode"))
        progress(f"tg{opts.gen}: {tg[-1]:.1f} tokens/s (run {rep + 1}/{opts.reps})")
    samples = [store.Sample("pp", opts.prompt, 0, pp), store.Sample("tg", opts.gen, 0, tg)]
    depth = depth_for(opts, server.n_ctx)
    if depth > opts.prompt:
        progress(f"filling {depth} tokens of context ...")
        long = http.timed(server, depth, opts.long_gen, rng, seams)
        short = long if long.engine_prefill and long.engine_decode else http.timed(server, depth, 1, rng, seams)
        samples.append(store.Sample("pp", depth, 0, [_rate(short.prefill, "prefill")]))
        samples.append(store.Sample("tg", opts.long_gen, depth, [_rate(http.decode_at_depth(short, long), "decode")]))
        progress(f"pp{depth}: {samples[-2].mean:.1f} tokens/s, tg{opts.long_gen}@d{depth}: "
                 f"{samples[-1].mean:.1f} tokens/s")
    return samples


def _connect(result: runner.RunResult, plan: Plan, seams: Seams, bench_seams: http.BenchSeams) -> http.Server:
    import json

    server = http.Server(result.engine, result.base_url, n_ctx=_plan_ctx(plan))
    try:
        status, body = seams.http.get(f"{server.url}/v1/models", {}, 10.0)
        if status == 200:
            http.describe(server, json.loads(body))
    except (OSError, ValueError):
        pass  # the model name is optional for both engines; the plan's context stands
    server.n_ctx = server.n_ctx or _plan_ctx(plan)
    server.pool = http.token_pool(server, bench_seams)
    return server


def bench_served(profile: HardwareProfile, plan: Plan, opts: BenchOptions, progress: Progress,
                 seams: ServedSeams | None = None) -> BenchOutcome:
    """Start ``plan``'s engine, measure it, stop it (always), store the record."""
    from advisor.app import engines as engine_choice
    from advisor.hub.download import resolve
    from advisor.store import state

    seams = seams or ServedSeams()
    run_seams, bench_seams, port = seams.run, seams.http, seams.port
    engine_choice.require(plan.engine_ref)
    model_path = str(resolve(plan.model, progress))
    request = runner.RunRequest(plan=plan, model_path=model_path, host=HOST, port=port or free_port(HOST),
                                log_dir=state.logs_dir(), max_attempts=1, check=False)
    with stopping_on_signals():  # SIGINT, SIGTERM, SIGHUP, SIGQUIT: the engine is stopped on the way out
        result = runner.execute(request, run_seams, ProgressReporter(progress))
        if not result.ok:
            assert result.error is not None
            raise result.error
        try:
            server = _connect(result, plan, run_seams, bench_seams)
            samples = measure(server, opts, progress, bench_seams)
        except CheckError as exc:
            raise CheckFailedError(f"benchmarking {result.engine} failed: {exc}", hint=f"its log: {result.log}") \
                from None
        finally:
            stop_process(result.process, run_seams)
            progress(f"stopped {result.engine} (pid {result.pid})")
    threads = plan.llama_cpp.threads if plan.llama_cpp else None
    return save(profile, plan, samples, runner=result.engine, version=plan.engine_ref.version, threads=threads)
