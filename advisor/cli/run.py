"""``advisor run`` (start an engine from a plan, verify it, back off, stop cleanly), ``advisor ps`` and
``advisor stop``. Messages go to stderr, data (JSON, the dry-run command) to stdout.

The workflow is advisor.app.serve; this module only declares options, calls it and renders. Module-level imports
stay light: the runner, huggingface_hub and rich load only when a command runs.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from advisor.cli._options import (
    Backend,
    BackendOpt,
    ConcurrencyOpt,
    ContextOpt,
    HardwareOpt,
    JsonOpt,
    LicenseOpt,
    HostOpt,
    MaxSizeOpt,
    TaskOpt,
    TimeoutOpt,
    model_name,
)



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


# -- run --------------------------------------------------------------------------------------------------------------


def run(
    model: Annotated[
        str | None, typer.Argument(help="A local .gguf file, a model directory (vLLM), or a Hub repo with --file.",
                                  parser=model_name)
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
    backend: BackendOpt = Backend.auto,
    host: HostOpt = "127.0.0.1",
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
    timeout: TimeoutOpt = None,
) -> None:
    """Start an engine for a model or a plan, check it with a test prompt, and keep it running (or stop: --check).

    A start that fails for lack of memory is retried one rung down the plan's fallback ladder.
    """
    from advisor.app import serve
    from advisor.planner import Request

    want = Request(task=task, context=context, concurrency=concurrency, max_size_bytes=int(max_size * 1e9)
                   if max_size else None, license=license, top=1)
    source = serve.Source(model=model, plan_file=plan_file, auto=auto, file=file,
                          backend=None if backend == Backend.auto else backend.value, hardware=hardware,
                          want=want)
    opts = serve.Options(host=host, port=port, api_key=api_key, check_only=check_only, detach=detach,
                         dry_run=dry_run, python=python, max_attempts=max_attempts, timeout=timeout, setup=setup)
    serve.validate(source, opts)
    plan, machine = serve.plan_for(source, opts, _err)
    if dry_run:
        shown = serve.dry_run(plan, opts)
        if json_output:
            print(json.dumps(shown.to_dict()))
        else:
            prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in shown.env.items())
            print((prefix + " " if prefix else "") + shlex.join(shown.argv))
        return
    result = serve.start(plan, machine, opts, _Reporter(), lambda r: _print_result(r, json_output))
    if result.error is not None:
        if json_output and not result.ok and result.process is None:
            print(json.dumps(result.to_dict(), indent=2))
        raise result.error


def _print_result(result: Any, json_output: bool) -> None:
    if json_output:
        print(json.dumps(result.to_dict(), indent=2), flush=True)
    else:
        print(result.base_url, flush=True)


# -- ps and stop ------------------------------------------------------------------------------------------------------


def ps(json_output: JsonOpt = False) -> None:
    """List the engines advisor started that are still running."""
    from advisor.app.serve import running

    alive = running()
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
    from advisor.app.serve import stop as stop_servers

    stopped = stop_servers(server_id, all_)
    if not stopped:
        _err("no engine started by advisor is running")
    for r in stopped:
        _err(f"stopped {r.id} ({r.engine}, pid {r.pid})")
