"""``advisor run`` (start an engine from a plan, verify it, back off, stop cleanly), ``advisor ps`` and
``advisor stop``. Messages go to stderr, data (JSON, the dry-run command) to stdout.

Module-level imports stay light: the executor, huggingface_hub and rich load only when a command runs.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from advisor.cli._options import (
    ConcurrencyOpt,
    ContextOpt,
    HardwareOpt,
    JsonOpt,
    LicenseOpt,
    MaxSizeOpt,
    TaskOpt,
)
from advisor.errors import AdvisorError, BadInputError, EngineMissingError

BackendOpt = Annotated[
    str | None, typer.Option("--backend", help="llama.cpp or vllm (default: from the plan, or from MODEL).")
]


def _err(message: str) -> None:
    print(f"advisor: {message}", file=sys.stderr, flush=True)


class _Reporter:
    """Progress on stderr: lines for steps, a spinner with the engine's log tail while waiting (terminals only)."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self.status: Any = None

    def info(self, message: str) -> None:
        self.done_waiting()
        _err(message)

    def waiting(self, message: str, tail: list[str]) -> None:
        if not self.console.is_terminal:
            return
        from rich.text import Text

        text = Text(message)
        for line in tail:
            text.append("\n  " + line, style="dim")
        if self.status is None:
            self.status = self.console.status(text)
            self.status.start()
        else:
            self.status.update(text)

    def done_waiting(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the engine the same way Ctrl-C does


# -- plan sources ---------------------------------------------------------------------------------------------------


def _load_plan(path: Path):
    from advisor.plan import Plan, PlanFileError

    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise PlanFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise PlanFileError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict) and "plans" in data:  # `advisor recommend --json`: take the first (best) plan
        plans = data["plans"]
        if not isinstance(plans, list) or not plans:
            raise PlanFileError(f"{path}: 'plans' holds no plan")
        return Plan.from_dict(plans[0], where=f"{path}: plans[0]")
    return Plan.from_dict(data, where=str(path))


def _model_ref(model: str, file: str | None, backend: str | None):
    """MODEL as given: a local .gguf file or model directory, else a Hub repository (with --file for a GGUF)."""
    from advisor.plan import LLAMA_CPP, VLLM, ModelRef

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


def _machine() -> tuple[str, bool]:
    """The learned-settings key for this machine, and whether it has a GPU (the probe's own guarded detectors)."""
    from advisor.app.advise import machine_key
    from advisor.probe import probe

    profile = probe()
    return machine_key(profile), bool(profile.gpus)


def _request(task: str, context: int | None, concurrency: int, backend: str | None, max_size: float | None,
             license: str | None):
    from advisor.planner import Request

    return Request(task=task, context=context, concurrency=concurrency, backend=backend or "auto",
                   max_size_bytes=int(max_size * 1e9) if max_size else None, license=license, top=1)


def _plannable(model: str, file: str | None) -> bool:
    """Whether the planner can choose settings for MODEL: a local .gguf (from its header) or a catalog model (by
    id or Hub repo). Model directories and Hub files outside the catalog run with the executor's defaults."""
    from advisor.app.advise import is_local_gguf

    if file is None and is_local_gguf(model):
        return True
    if file is not None or Path(model).expanduser().exists():
        return False
    from advisor.catalog.load import load_catalog

    catalog = load_catalog()
    name = model.split(":")[0].lower()
    return any(m.id.lower() == name or m.repo.lower() == name for m in catalog.models)


def _plan_model(profile: Any, model: str, want: Any):
    """The planner's plan for one model: a local GGUF from its header, a catalog model from the catalog."""
    from dataclasses import replace

    from advisor.app.advise import advise

    advice = advise(profile, replace(want, model=model))
    return advice.plans[0] if advice.plans else advice.recommendation.best()


def _ensure_engine(profile: Any, backend: str, setup: bool, dry_run: bool, python: str | None) -> None:
    """With --setup, install the engine build that fits when what is there is missing or unfit (advisor setup);
    without it, stop with the command that would."""
    if python is not None:
        return  # the user named the interpreter: their choice, not ours
    from advisor.setup import check_engine, ensure_engine

    status = check_engine(profile, backend)
    if status.ok:
        return
    if not setup:
        raise EngineMissingError(f"{status.reason}", hint=f"run '{status.fix_command}', or add --setup")
    if dry_run:
        _err(f"--setup would first run: {status.fix_command}")
        return
    _err(f"setting up {backend}: {status.reason}")
    ensure_engine(profile, backend, say=_err)


def _choose_engine(backend: str, python: str | None):
    """(engine, executable, help text), in this order:

    llama.cpp: --python (llama-cpp-python there), the build ``advisor setup`` installed and verified for this
    machine, llama-server on PATH, llama-cpp-python in advisor's own Python. ``advisor setup`` only installs a
    managed build when what was there does not fit the hardware, so its build goes first.
    vLLM: --python, ADVISOR_VLLM_PYTHON, the managed vLLM of ``advisor setup``, advisor's own Python.
    """
    from advisor import engines
    from advisor.engines import vllm as vllm_engine
    from advisor.runner.execute import python_engine_present
    from advisor.plan import LLAMA_CPP
    from advisor.setup import engine_python

    if backend == LLAMA_CPP:
        managed = engine_python("llama.cpp")
        exe = None if (python or managed) else shutil.which("llama-server")
        if exe:
            try:
                done = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=20, errors="replace")
                help_text = done.stdout + done.stderr
            except (OSError, subprocess.TimeoutExpired):
                help_text = ""
            return engines.get(engines.LLAMA_SERVER), exe, help_text
        interpreter = python or (str(managed) if managed else sys.executable)
        if python_engine_present(interpreter, "llama_cpp"):
            return engines.get(engines.LLAMA_CPP_PYTHON), interpreter, ""
        raise EngineMissingError(
            f"no llama.cpp engine: llama-server is not on PATH and {interpreter} cannot import llama_cpp",
            hint="install one with 'advisor setup --backend llama.cpp'",
        )
    managed = engine_python("vllm")
    default = str(managed) if managed else sys.executable
    interpreter = engines.which_python(python, vllm_engine.PYTHON_ENV, os.environ, default)
    if not python_engine_present(interpreter, "vllm"):
        raise EngineMissingError(
            f"vLLM is not installed for {interpreter}",
            hint=f"install it with 'advisor setup --backend vllm', or point --python / {vllm_engine.PYTHON_ENV} at "
            "an interpreter that has it",
        )
    return engines.get(engines.VLLM), interpreter, ""


def _dry_run_path(model) -> str:
    from advisor.hub import download as hub
    local = hub.local_path(model)
    if local is not None:
        return str(local)
    if model.files:
        found = hub.cached_file(model.repo, model.files[0], model.revision)
        return str(found) if found else f"<{model.repo}/{model.files[0]}, downloaded first>"
    return f"<{model.repo}, downloaded first>"


# -- run --------------------------------------------------------------------------------------------------------------


def run(
    model: Annotated[
        str | None, typer.Argument(help="A local .gguf file, a model directory (vLLM), or a Hub repo with --file.")
    ] = None,
    plan_file: Annotated[
        Path | None, typer.Option("--plan", help="A plan JSON (one plan, or 'advisor recommend --json' output).")
    ] = None,
    auto: Annotated[bool, typer.Option("--auto", help="Run the best plan 'advisor recommend' would give.")] = False,
    task: TaskOpt = "chat",
    context: ContextOpt = None,
    concurrency: ConcurrencyOpt = 1,
    max_size: MaxSizeOpt = None,
    license: LicenseOpt = None,
    hardware: HardwareOpt = None,
    setup: Annotated[
        bool, typer.Option("--setup", help="Install the engine build that fits first, if it is missing or unfit.")
    ] = False,
    file: Annotated[str | None, typer.Option("--file", help="The GGUF file in the Hub repository MODEL.")] = None,
    backend: BackendOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option("--port", help="Port (default: a free one).")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="Require this key from clients.")] = None,
    check_only: Annotated[bool, typer.Option("--check", help="Start, verify, stop and exit (scripts, CI).")] = False,
    detach: Annotated[bool, typer.Option("--detach", help="Leave it running after the check.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command; start nothing.")] = False,
    json_output: JsonOpt = False,
    python: Annotated[
        str | None, typer.Option("--python", help="Interpreter of a Python engine (vLLM; env ADVISOR_VLLM_PYTHON).")
    ] = None,
    max_attempts: Annotated[int | None, typer.Option("--max-attempts", help="Starts to try, backing off.")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds to wait for readiness.")] = None,
    node: Annotated[int | None, typer.Option("--node", help="Run this node's part of a multi-node --plan "
                                             "(0 is the head).")] = None,
    no_engine: Annotated[bool, typer.Option("--no-engine", help="With --node 0: form the cluster, start no "
                                            "engine.")] = False,
) -> None:
    """Start an engine for a model or a plan, check it with a test prompt, and keep it running (or stop: --check).

    A start that fails for lack of memory is retried one rung down the plan's fallback ladder.
    """
    t_begin = time.monotonic()
    from advisor.plan import BACKENDS

    sources = sum([model is not None, plan_file is not None, auto])
    if sources != 1:
        raise BadInputError("give exactly one of MODEL, --plan FILE or --auto")
    if check_only and detach:
        raise BadInputError("--check stops the engine and --detach keeps it: choose one")
    if backend is not None and backend not in BACKENDS:
        raise BadInputError(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if max_attempts is not None and max_attempts < 1:
        raise BadInputError("--max-attempts must be at least 1")
    if port is not None and not 0 < port < 65536:
        raise BadInputError(f"--port {port} is not a port number")

    from advisor.runner import execute as executor

    from advisor.hub import download as hub

    from advisor.store import state
    if hardware is not None and not (auto or dry_run):
        raise BadInputError("--hardware plans for another machine: use it with --auto --dry-run, or with recommend")
    if concurrency < 1 or (context is not None and context < 1):
        raise BadInputError("--concurrency and --context must be at least 1")
    want = _request(task, context, concurrency, backend, max_size, license)
    node_run = None
    if node is not None:
        if plan_file is None or dry_run:
            raise BadInputError("--node runs a node's part of a multi-node plan: give --plan FILE (no --dry-run)")
        import atexit

        from advisor.app import cluster as cluster_app

        node_run = cluster_app.start_node(_load_plan(plan_file), node, _err, timeout, state.logs_dir(), check_only,
                                          detach, engine=not no_engine, json_output=json_output)
        if node_run is None:
            return
        atexit.register(lambda: None if getattr(node_run, "keep", False) else node_run.stop())
    if auto or (model is not None and _plannable(model, file)):
        from advisor.app.advise import advise, hardware as load_hardware, machine_key

        profile = load_hardware(hardware)
        machine = machine_key(profile)
        if auto:
            advice = advise(profile, want)
            plan = advice.plans[0] if advice.plans else advice.recommendation.best()  # best() says what misses
        else:
            plan = _plan_model(profile, model, want)
        _ensure_engine(profile, plan.backend, setup, dry_run, python)
    elif plan_file is not None:
        machine, _ = _machine()
        plan = _load_plan(plan_file)
        if plan.nodes and node is None and not dry_run:
            raise BadInputError(f"this plan spans {len(plan.nodes)} machines: run each one's part with "
                                "'advisor run --plan FILE --node N' (0 is the head)")
    else:
        assert model is not None
        machine, has_gpu = _machine()
        ref, chosen = _model_ref(model, file, backend)
        learned = state.learned_settings(machine, ref.id, chosen)
        model_dir = Path(ref.path) if ref.path else None
        plan = executor.default_plan(ref, chosen, has_gpu, model_dir, learned)
    if backend is not None and plan.backend != backend:
        raise BadInputError(f"the plan is for {plan.backend}, not {backend}")

    engine, exe, help_text = _choose_engine(plan.backend, python)
    port = port or executor.free_port(host)
    reporter = _Reporter()

    if dry_run:
        path = _dry_run_path(plan.model)
        launch = engine.command(exe, path, plan.settings, host, port, api_key, help_text=help_text,
                                sampling=plan.sampling)
        env = {k: ("***" if "KEY" in k else v) for k, v in launch.env.items()}
        if json_output:
            print(json.dumps({"engine": engine.name, "argv": launch.argv, "env": env, "unset": list(launch.unset)}))
        else:
            prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
            print((prefix + " " if prefix else "") + shlex.join(launch.argv))
        return

    t_resolve = time.monotonic()
    model_path = hub.resolve(plan.model, reporter.info)
    resolve_s = time.monotonic() - t_resolve
    request = executor.RunRequest(
        plan=plan, model_path=str(model_path), engine=engine, exe=exe, host=host, port=port, api_key=api_key,
        help_text=help_text, timeout_s=timeout, max_attempts=max_attempts or executor.DEFAULT_MAX_ATTEMPTS,
        log_dir=state.logs_dir(), check=True,
    )  # fmt: skip
    fit = _llama_fit(plan, exe, str(model_path), reporter)
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    record = None
    result = None
    keep = False  # --detach after a good check: the engine outlives advisor
    try:
        try:
            result = executor.execute(request, report=reporter)
        except AdvisorError as exc:
            failed = getattr(exc, "result", None)
            if failed is not None:
                _learn(machine, plan, failed)
                if json_output:
                    print(json.dumps({**failed.to_dict(), "error": exc.message}, indent=2))
            raise
        _learn(machine, plan, result)
        result.llama_fit = fit
        check = result.check
        if check is not None:
            rate = f"{check.tokens_per_s:.1f} tokens/s" if check.tokens_per_s else "tokens/s unknown"
            ttft = f"{check.ttft_s:.2f} s" if check.ttft_s is not None else "n/a"
            reporter.info(
                f"test prompt answered: {check.completion_tokens} tokens, first token {ttft}, {rate}, "
                f"total {check.latency_s:.2f} s"
            )
        if check_only:
            t_stop = time.monotonic()
            executor.stop_process(result.process)
            result.timings["stop_s"] = round(time.monotonic() - t_stop, 3)
            result.timings["resolve_s"] = round(resolve_s, 3)
            result.timings["total_s"] = round(time.monotonic() - t_begin, 3)
            reporter.info(f"stopped {engine.name} (pid {result.pid})")
            _print_result(result, json_output)
            return
        record = state.ServerRecord(
            id=str(port), pid=result.pid or 0, port=port, host=host, backend=plan.backend, engine=engine.name,
            model=plan.model.id, base_url=result.base_url, log=result.log or "",
            create_time=state.create_time(result.pid or 0), argv=result.argv, detached=detach,
        )  # fmt: skip
        state.write_server(record)
        _print_result(result, json_output)
        if detach:
            keep = True
            if node_run is not None:
                node_run.keep = True
            reporter.info(f"left running: {result.base_url} (stop it with 'advisor stop {record.id}')")
            return
        reporter.info(f"serving at {result.base_url}/v1 — press Ctrl-C to stop")
        code = result.process.wait()
        raise AdvisorError(f"{engine.name} exited with code {code}; log: {result.log}")
    finally:
        try:
            if result is not None and result.process is not None and not keep and result.process.poll() is None:
                executor.stop_process(result.process)
            if record is not None and not keep:
                state.remove_server(record)
        finally:
            signal.signal(signal.SIGTERM, old_term)


def _llama_fit(plan: Any, exe: str, model_path: str, reporter: Any) -> dict[str, Any] | None:
    """Where llama.cpp's own fitter is installed (beside llama-server or on PATH), show its answer beside ours."""
    from advisor.engines.llama_server import FIT_TOOL
    from advisor.runner.execute import llama_fit
    from advisor.plan import LLAMA_CPP

    if plan.backend != LLAMA_CPP:
        return None
    tool = shutil.which(FIT_TOOL, path=f"{Path(exe).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if tool is None:
        return None
    fit = llama_fit(tool, model_path, plan.settings)
    theirs = f"-ngl {fit['n_gpu_layers']}" if fit["n_gpu_layers"] is not None else (
        fit["output_tail"][-1] if fit["output_tail"] else "no answer")
    reporter.info(f"llama.cpp's own fit ({FIT_TOOL}): {theirs}; advisor's plan: -ngl {plan.settings.n_gpu_layers} "
                  f"-c {plan.settings.ctx}")
    return fit


def _learn(machine: str, plan: Any, result: Any) -> None:
    from advisor.store import state
    worked = result.settings if result.ok else None
    extra = {"engine": result.engine}
    if result.ok and result.check is not None and result.check.tokens_per_s:
        extra["tokens_per_s"] = result.check.tokens_per_s
    try:
        state.record_run(machine, plan.model.id, plan.backend, [vars(a) for a in result.attempts], worked, extra)
    except OSError as exc:  # learning is a bonus: a read-only home must not fail the run
        _err(f"could not record the learned settings: {exc}")


def _print_result(result: Any, json_output: bool) -> None:
    if json_output:
        print(json.dumps(result.to_dict(), indent=2), flush=True)
    else:
        print(result.base_url, flush=True)


# -- ps and stop ------------------------------------------------------------------------------------------------------


def ps(json_output: JsonOpt = False) -> None:
    """List the engines advisor started that are still running."""
    from advisor.store import state
    alive = [r for r in state.read_servers() if state.is_alive(r)]
    if json_output:
        print(json.dumps([vars(r) for r in alive], indent=2))
        return
    if not alive:
        _err("no engine started by advisor is running")
        return
    rows = [("ID", "PID", "ENGINE", "URL", "MODEL", "UP")]
    for r in alive:
        rows.append((r.id, str(r.pid), r.engine, r.base_url, r.model, f"{(time.time() - r.started) / 60:.0f} min"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def stop(
    server_id: Annotated[str | None, typer.Argument(metavar="ID", help="The ID 'advisor ps' shows.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Stop every engine advisor started.")] = False,
) -> None:
    """Stop an engine advisor started (and forget the state of ones that are gone)."""
    from advisor.runner import execute as executor
    from advisor.store import state
    records = state.read_servers()
    for r in [r for r in records if not state.is_alive(r)]:
        state.remove_server(r)  # stale: the engine is gone, or its pid now belongs to another process
        records.remove(r)
    if all_:
        chosen = records
    elif server_id is not None:
        chosen = [r for r in records if r.id == server_id]
        if not chosen:
            raise BadInputError(f"no running engine with ID {server_id} (see 'advisor ps')")
    elif len(records) == 1:
        chosen = records
    elif not records:
        _err("no engine started by advisor is running")
        return
    else:
        raise BadInputError("several engines are running: give an ID or --all (see 'advisor ps')")
    for r in chosen:
        executor.stop_group(r.pid, lambda t: (time.sleep(t), False)[1])
        state.remove_server(r)
        _err(f"stopped {r.id} ({r.engine}, pid {r.pid})")
