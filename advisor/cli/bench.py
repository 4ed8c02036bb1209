"""``advisor bench [MODEL | --plan FILE] [--json]`` and ``advisor bench --memory``: measure speed on this machine
(advisor.app.bench); plans made afterwards use the measurement. Progress goes to stderr, results to stdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from advisor.cli._options import JsonOpt


def bench(
    model: Annotated[str | None, typer.Argument(
        help="A local .gguf file or model directory, a catalog id or a Hub repo (planned as 'advisor run MODEL' "
             "would run it).", show_default=False)] = None,
    plan_file: Annotated[Path | None, typer.Option("--plan", help="A plan JSON (one plan, or 'advisor recommend "
                                                   "--json' output: its first plan).", dir_okay=False)] = None,
    memory: Annotated[bool, typer.Option("--memory", help="Measure the CPU's memory bandwidth (a short streaming "
                                         "read) for the CPU speed model.")] = False,
    prompt: Annotated[int, typer.Option("--prompt", help="Prompt tokens of the prefill test (llama-bench -p).")] = 512,
    gen: Annotated[int, typer.Option("--gen", help="Tokens of the generation test (llama-bench -n).")] = 128,
    reps: Annotated[int, typer.Option("--reps", help="Repetitions of each test.")] = 2,
    depth: Annotated[int | None, typer.Option("--depth", help="Long-context depth to test as well (default 4096 or "
                                              "what the context allows; 0: none).", show_default=False)] = None,
    seconds: Annotated[float, typer.Option("--seconds", help="With --memory: how long to read.")] = 2.0,
    json_output: JsonOpt = False,
) -> None:
    """Measure prefill and decode tokens/s of a model on this machine (or its memory bandwidth with --memory):
    in-process for llama-cpp-python plans, through the plan's own server for llama-server and vLLM plans."""
    from advisor.app import bench as app
    from advisor.app.advise import hardware

    profile = hardware(None)

    def progress(msg: str) -> None:
        typer.echo(f"bench: {msg}", err=True)

    if memory:
        if model or plan_file:
            from advisor.errors import BadInputError
            raise BadInputError("--memory measures the machine, not a model: give no MODEL or --plan")
        rec = app.bench_memory(profile, seconds=seconds, progress=progress)
        data = {"memory_bandwidth_gbs": rec.bandwidth_gbs, "threads": rec.threads, "bytes_read": rec.bytes_read}
        typer.echo(json.dumps(data, indent=2) if json_output else f"memory bandwidth: {rec.bandwidth_gbs:.1f} GB/s "
                   f"({rec.threads} threads)")
        return
    outcome = app.bench(profile, model, plan_file, app.BenchOptions(prompt=prompt, gen=gen, reps=reps, depth=depth),
                        progress)
    if json_output:
        typer.echo(json.dumps(outcome.to_dict(), indent=2))
        return
    _render(outcome)


def _render(outcome) -> None:
    from rich.console import Console
    from rich.table import Table

    r = outcome.record
    table = Table(title=f"{r.model_id} {r.quant or ''} on {r.runner} (n_gpu_layers {r.n_gpu_layers})")
    for col in ("test", "tokens/s", "runs", "predicted"):
        table.add_column(col, justify="left" if col == "test" else "right")
    for s in r.samples:
        pred = r.predicted_prefill if s.test == "pp" else r.predicted_decode
        table.add_row(s.name, f"{s.mean:.1f}", ", ".join(f"{x:.1f}" for x in s.tokens_per_s),
                      f"{pred:g}" if pred and not s.depth and s.tokens in (512, 128) else "")
    Console().print(table)
    typer.echo(f"stored in {outcome.path}; plans for this model now use the measurement", err=True)
