"""``advisor run``: where the plan comes from (the planner, a plan file, or defaults for a model the planner cannot
size), the engine that fits (installed by ``advisor setup`` with ``--setup``), the model on disk, then the runner
(start, readiness, test prompt, back-off) and what is learned from it; ``ps`` and ``stop`` for what was left running.

The CLI parses options into ``Source`` and ``Options``, calls one function here and renders what comes back.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from advisor import engines
from advisor.app import advise as advice
from advisor.app import engines as engine_choice
from advisor.errors import AdvisorError, BadInputError, EngineMissingError
from advisor.plan import (
    BACKENDS,
    LLAMA_CPP,
    VLLM,
    EngineRef,
    LlamaCppSettings,
    ModelRef,
    Plan,
    PlanFileError,
    VllmSettings,
)
from advisor.planner import Request
from advisor.probe.profile import HardwareProfile
from advisor.runner import execute as runner
from advisor.runner.seams import Reporter, free_port, stop_group, stop_process
from advisor.runner.signals import stopping_on_signals
from advisor.store import state


@dataclass(frozen=True)
class Source:
    """Where the plan comes from: exactly one of ``model``, ``plan_file`` or ``auto``."""

    model: str | None = None
    plan_file: Path | None = None
    auto: bool = False
    file: str | None = None  # the GGUF file in the Hub repository ``model``
    backend: str | None = None
    hardware: Path | None = None  # plan for a saved profile (only with --auto --dry-run)
    want: Request = Request(top=1)


@dataclass(frozen=True)
class Options:
    host: str = "127.0.0.1"
    port: int | None = None
    api_key: str | None = None
    check_only: bool = False
    detach: bool = False
    dry_run: bool = False
    python: str | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    setup: bool = False


@dataclass(frozen=True)
class DryRun:
    """The command ``run`` would start: the plan's engine, argv and environment (secrets masked)."""

    engine: str
    argv: list[str]
    env: dict[str, str]
    unset: list[str]
    plan: Plan

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "argv": self.argv, "env": self.env, "unset": self.unset}


# -- where the plan comes from ----------------------------------------------------------------------------------------


def validate(source: Source, opts: Options) -> None:
    if sum([source.model is not None, source.plan_file is not None, source.auto]) != 1:
        raise BadInputError("give exactly one of MODEL, --plan FILE or --auto")
    if opts.check_only and opts.detach:
        raise BadInputError("--check stops the engine and --detach keeps it: choose one")
    if source.backend is not None and source.backend not in BACKENDS:
        raise BadInputError(f"--backend must be one of {', '.join(BACKENDS)}, not {source.backend!r}")
    if opts.max_attempts is not None and opts.max_attempts < 1:
        raise BadInputError("--max-attempts must be at least 1")
    if opts.port is not None and not 0 < opts.port < 65536:
        raise BadInputError(f"--port {opts.port} is not a port number")
    if source.hardware is not None and not (source.auto or opts.dry_run):
        raise BadInputError("--hardware plans for another machine: use it with --auto --dry-run, or with recommend")
    if source.want.concurrency < 1 or (source.want.context is not None and source.want.context < 1):
        raise BadInputError("--concurrency and --context must be at least 1")


def load_plan(path: Path) -> Plan:
    """A plan file: one plan, or ``advisor recommend --json`` (its first, best plan). Its arguments must be the ones
    its settings give (advisor.engines.check_args)."""
    from advisor.strict import MAX_PLAN_BYTES, load_json

    data = load_json(path, MAX_PLAN_BYTES, PlanFileError)  # regular files only, bounded, depth-checked
    if isinstance(data, dict) and "plans" in data:
        plans = data["plans"]
        if not isinstance(plans, list) or not plans:
            raise PlanFileError(f"{path}: 'plans' holds no plan")
        plan = Plan.from_dict(plans[0], where=f"{path}: plans[0]")
    else:
        plan = Plan.from_dict(data, where=str(path))
    engines.check_args(plan)
    return plan


def _model_ref(model: str, file: str | None, backend: str | None) -> tuple[ModelRef, str]:
    """MODEL as given: a local .gguf file or model directory, else a Hub repository (with --file for a GGUF)."""
    path = Path(model).expanduser()
    looks_local = path.exists() or model.endswith(".gguf") or model.startswith((".", "/", "~")) or model.count("/") != 1
    if looks_local and not file:
        chosen = backend or (VLLM if path.is_dir() else LLAMA_CPP)
        return ModelRef(id=path.name or model, path=str(path.resolve() if path.exists() else path)), chosen
    if file:
        return ModelRef(id=f"{model}/{file}", repo=model, files=[file]), backend or LLAMA_CPP
    if backend == LLAMA_CPP:
        raise BadInputError(f"{model}: say which GGUF file with --file")
    return ModelRef(id=model, repo=model, format="safetensors"), VLLM


def _plannable(model: str, file: str | None) -> bool:
    """Whether the planner can choose settings for MODEL: a local .gguf (from its header) or a catalog model (by
    id or Hub repo). Model directories and Hub files outside the catalog run with ``default_plan``."""
    if file is None and advice.is_local_gguf(model):
        return True
    if file is not None or Path(model).expanduser().exists():
        return False
    from advisor.catalog.load import load_catalog

    name = model.split(":")[0].lower()
    return any(m.id.lower() == name or m.repo.lower() == name for m in load_catalog().models)


def default_plan(model: ModelRef, engine: EngineRef, has_gpu: bool, model_path: Path | None = None,
                 learned: Mapping[str, Any] | None = None) -> Plan:
    """The plan for a model the planner cannot size (a model directory, a Hub file outside the catalog).

    llama.cpp with every layer on the GPU when there is one (999 = "all": llama.cpp clamps -ngl to the layer count)
    and a 4096 context; vLLM with its defaults, the context capped at the model's own limit, and on a CPU bfloat16,
    4 sequences and 1 GiB of KV cache (what vLLM's CPU build starts with here: tests/test_run_engine.py). Settings
    that worked before on this machine win, as they do for planned models (advisor.planner.assemble.apply_learned).
    """
    from advisor.planner.assemble import apply_learned

    backend = engine.backend
    settings: LlamaCppSettings | VllmSettings
    if backend == LLAMA_CPP:
        settings = LlamaCppSettings(n_gpu_layers=999 if has_gpu else 0)
    else:
        settings = _vllm_defaults(model_path, has_gpu)
    key = "llama_cpp" if backend == LLAMA_CPP else "vllm"
    plan = Plan(model=model, backend=backend, engine=engine, **{key: settings})
    plan = replace(plan, args=engines.argv(engine, settings, model, plan.sampling))
    return apply_learned(plan, learned)


def _vllm_defaults(model_path: Path | None, has_gpu: bool) -> VllmSettings:
    limit = 4096
    config = (model_path / "config.json") if model_path and model_path.is_dir() else None
    if config is not None and config.is_file():
        try:
            limit = min(limit, int(json.loads(config.read_text()).get("max_position_embeddings") or limit))
        except (OSError, ValueError, TypeError, AttributeError, RecursionError, OverflowError):
            pass
    if has_gpu:
        return VllmSettings(max_model_len=limit)
    return VllmSettings(max_model_len=limit, max_num_seqs=4, dtype="bfloat16", cpu_kv_cache_gib=1)


def _ensure_engine(profile: HardwareProfile, backend: str, opts: Options, say: Callable[[str], None]) -> None:
    """With --setup, install the engine build that fits when what is there is missing or unfit (advisor setup);
    without it, stop with the command that would."""
    if opts.python is not None:
        return  # the user named the interpreter: their choice, not ours
    from advisor.setup import check_engine, ensure_engine

    status = check_engine(profile, backend)
    if status.ok:
        return
    if not opts.setup:
        raise EngineMissingError(f"{status.reason}", hint=f"run '{status.fix_command}', or add --setup")
    if opts.dry_run:
        say(f"--setup would first run: {status.fix_command}")
        return
    say(f"setting up {backend}: {status.reason}")
    ensure_engine(profile, backend, say=say)


def plan_for(source: Source, opts: Options, say: Callable[[str], None]) -> tuple[Plan, str]:
    """The plan to run and the machine key its learned settings are stored under."""
    want = replace(source.want, backend=source.backend or "auto", top=1)
    if source.auto or (source.model is not None and _plannable(source.model, source.file)):
        here = source.hardware is None
        profile = advice.hardware(source.hardware)
        want = replace(want, model=None if source.auto else source.model)
        found = advice.advise(profile, want, here=here, python=opts.python)
        plan = found.plans[0] if found.plans else found.recommendation.best()  # best() says what misses
        if here:  # a plan for another machine (--hardware) runs there: its engine is not looked for here
            _ensure_engine(profile, plan.backend, opts, say)
        if here and opts.setup and not opts.dry_run:
            plan = _replanned_if_installed(plan, profile, want, opts)
        return plan, advice.machine_key(profile)
    profile = advice.hardware(None)
    if source.plan_file is not None:
        plan = load_plan(source.plan_file)
        if plan.nodes and not opts.dry_run:
            raise BadInputError(f"this plan spans {len(plan.nodes)} machines: run each one's part with "
                                "'advisor run --plan FILE --node N' (0 is the head)")
        if plan.engine is None:  # a plan that names no engine runs on this machine's engine for its backend
            llama, vllm = engine_choice.choose(profile, here=True, python=opts.python)
            engine = llama if plan.backend == LLAMA_CPP else vllm
            plan = replace(plan, engine=engine, args=engines.argv(engine, plan.settings, plan.model, plan.sampling))
        return plan, advice.machine_key(profile)
    assert source.model is not None
    ref, backend = _model_ref(source.model, source.file, source.backend)
    llama, vllm = engine_choice.choose(profile, here=True, python=opts.python)
    machine = advice.machine_key(profile)
    learned = state.learned_settings(machine, ref.id, backend)
    return default_plan(ref, llama if backend == LLAMA_CPP else vllm, bool(profile.gpus),
                        Path(ref.path) if ref.path else None, learned), machine


def _replanned_if_installed(plan: Plan, profile: HardwareProfile, want: Request, opts: Options) -> Plan:
    """After --setup installed an engine, the plan is made again for it (its arguments follow the engine)."""
    llama, vllm = engine_choice.choose(profile, here=True, python=opts.python)
    ref = llama if plan.backend == LLAMA_CPP else vllm
    if ref == plan.engine_ref:
        return plan
    found = advice.advise(profile, replace(want, engines=(llama, vllm)), here=True, python=opts.python)
    return found.plans[0] if found.plans else plan


# -- running ---------------------------------------------------------------------------------------------------------


def dry_run(plan: Plan, opts: Options) -> DryRun:
    """What ``run`` would start for ``plan``: the same builder the runner uses, with the model where it is cached
    (or a placeholder for what would be downloaded first)."""
    from advisor.hub import download as hub

    local = hub.local_path(plan.model)
    if local is None and plan.model.files:
        found = hub.cached_file(plan.model.repo, plan.model.files[0], plan.model.revision)
        local = found if found else None
    path = str(local) if local is not None else None
    if path is None:
        what = f"{plan.model.repo}/{plan.model.files[0]}" if plan.model.files else plan.model.repo
        path = f"<{what}, downloaded first>"
    port = opts.port or free_port(opts.host)
    launch = engines.launch(plan, opts.host, port, opts.api_key, local_path=path)
    env = {k: ("***" if "KEY" in k else v) for k, v in launch.env.items()}
    return DryRun(plan.engine_ref.name, launch.argv, env, list(launch.unset), plan)


def _learn(machine: str, plan: Plan, result: runner.RunResult, say: Callable[[str], None]) -> None:
    worked = result.settings if result.ok else None
    extra: dict[str, Any] = {"engine": result.engine}
    if result.ok and result.check is not None and result.check.tokens_per_s:
        extra["tokens_per_s"] = result.check.tokens_per_s
    try:
        state.record_run(machine, plan.model.id, plan.backend, [vars(a) for a in result.attempts], worked, extra)
    except (OSError, AdvisorError) as exc:  # learning is a bonus: a read-only home must not fail the run
        say(f"could not record the learned settings: {getattr(exc, 'message', exc)}")


def _llama_fit(plan: Plan, model_path: str, say: Callable[[str], None]) -> dict[str, Any] | None:
    """Where llama.cpp's own fitter is installed (beside llama-server or on PATH), show its answer beside ours."""
    from advisor.engines.llama_server import FIT_TOOL
    from advisor.runner.fit import llama_fit

    if plan.backend != LLAMA_CPP or plan.llama_cpp is None:
        return None
    beside = str(Path(plan.engine_ref.exe).parent) if plan.engine_ref.exe else ""
    tool = shutil.which(FIT_TOOL, path=f"{beside}{os.pathsep}{os.environ.get('PATH', '')}")
    if tool is None:
        return None
    fit = llama_fit(tool, model_path, plan.llama_cpp)
    theirs = f"-ngl {fit['n_gpu_layers']}" if fit["n_gpu_layers"] is not None else (
        fit["output_tail"][-1] if fit["output_tail"] else "no answer")
    say(f"llama.cpp's own fit ({FIT_TOOL}): {theirs}; advisor's plan: -ngl {plan.llama_cpp.n_gpu_layers} "
        f"-c {plan.llama_cpp.ctx}")
    return fit


def start(plan: Plan, machine: str, opts: Options, report: Reporter,
          show: Callable[[runner.RunResult], None]) -> runner.RunResult:
    """Download, start, check; then stop (``--check``), leave running (``--detach``) or serve in the foreground
    until the engine exits or advisor is interrupted. ``show`` renders the result once the engine answered. A failed
    run comes back with ``result.error`` set; nothing is left running then."""
    from advisor.hub import download as hub

    t_begin = time.monotonic()
    engine_choice.require(plan.engine_ref)
    port = opts.port or free_port(opts.host)
    t_resolve = time.monotonic()
    model_path = str(hub.resolve(plan.model, report.info))
    resolve_s = time.monotonic() - t_resolve
    request = runner.RunRequest(plan=plan, model_path=model_path, host=opts.host, port=port, api_key=opts.api_key,
                                timeout_s=opts.timeout, log_dir=state.logs_dir(),
                                max_attempts=opts.max_attempts or runner.DEFAULT_MAX_ATTEMPTS)
    fit = _llama_fit(plan, model_path, report.info)
    with stopping_on_signals():  # SIGINT, SIGTERM, SIGHUP, SIGQUIT: the engine is stopped on the way out
        result = runner.execute(request, report=report)
        _learn(machine, plan, result, report.info)
        if not result.ok:
            return result
        result.llama_fit = fit
        try:
            _report_check(result, report)
            if opts.check_only:
                t_stop = time.monotonic()
                stop_process(result.process)
                result.timings.update(stop_s=round(time.monotonic() - t_stop, 3), resolve_s=round(resolve_s, 3),
                                      total_s=round(time.monotonic() - t_begin, 3))
                report.info(f"stopped {result.engine} (pid {result.pid})")
                show(result)
                return result
            return _keep_serving(plan, result, opts, port, report, show)
        finally:
            if not opts.detach and result.process is not None and result.process.poll() is None:
                stop_process(result.process)


def _report_check(result: runner.RunResult, report: Reporter) -> None:
    check = result.check
    if check is None:
        return
    rate = f"{check.tokens_per_s:.1f} tokens/s" if check.tokens_per_s else "tokens/s unknown"
    ttft = f"{check.ttft_s:.2f} s" if check.ttft_s is not None else "n/a"
    report.info(f"test prompt answered: {check.completion_tokens} tokens, first token {ttft}, {rate}, "
                f"total {check.latency_s:.2f} s")


def _keep_serving(plan: Plan, result: runner.RunResult, opts: Options, port: int, report: Reporter,
                  show: Callable[[runner.RunResult], None]) -> runner.RunResult:
    record = state.ServerRecord(
        id=str(port), pid=result.pid or 0, port=port, host=opts.host, backend=plan.backend, engine=result.engine,
        model=plan.model.id, base_url=result.base_url, log=result.log or "",
        create_time=state.create_time(result.pid or 0), argv=result.argv, detached=opts.detach,
    )  # fmt: skip
    state.write_server(record)
    show(result)
    if opts.detach:
        report.info(f"left running: {result.base_url} (stop it with 'advisor stop {record.id}')")
        return result
    try:
        report.info(f"serving at {result.base_url}/v1 — press Ctrl-C to stop")
        code = result.process.wait()
        result.ok, result.error = False, AdvisorError(f"{result.engine} exited with code {code}; log: {result.log}")
        return result
    finally:
        state.remove_server(record)


# -- ps and stop ------------------------------------------------------------------------------------------------------


def running() -> list[state.ServerRecord]:
    """The engines advisor started that are verified to be still running (others are reported, never listed)."""
    return state.live_servers()


def stop(server_id: str | None, all_: bool) -> list[state.ServerRecord]:
    """Stop the engines chosen (one by ID, all, or the only one), forgetting those already gone; returns what
    was stopped."""
    # Only engines whose identity (pid, start time, command line) is verified; the state of those gone is removed,
    # a record that cannot be verified is reported and skipped: never signal a process that may not be ours.
    records = state.live_servers(forget_gone=True)
    if all_:
        chosen = records
    elif server_id is not None:
        chosen = [r for r in records if r.id == server_id]
        if not chosen:
            raise BadInputError(f"no running engine with ID {server_id} (see 'advisor ps')")
    elif len(records) <= 1:
        chosen = records
    else:
        raise BadInputError("several engines are running: give an ID or --all (see 'advisor ps')")
    for r in chosen:
        stop_group(r.pid, lambda t: (time.sleep(t), False)[1])
        state.remove_server(r)
    return chosen
