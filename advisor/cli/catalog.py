"""``advisor catalog list|show``: the curated models, their variants, sizes, scores and sources.

Module-level imports stay light: the catalog (TOML parsing) and the size layout (gguf, numpy) load inside the
commands, so other commands do not pay for them.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from advisor.cli._options import JsonOpt

catalog_app = typer.Typer(
    help="The built-in model catalog: models, variants (quantizations, files, sizes), quality scores with sources.",
    no_args_is_help=True,
)

TaskOpt = Annotated[
    str | None,
    typer.Option("--task", help="Only models for this task: code, chat, reasoning, completion, math, tools, vision."),
]


def _model_summary(cat: Any, m: Any) -> dict[str, Any]:
    scores = {}
    for task in sorted({s.task for s in m.scores}):
        s = m.score(task)
        scores[task] = {"metric": s.metric, "value": s.value, "normalized": cat.normalized_score(m, task)}
    return {
        "id": m.id,
        "name": m.name,
        "family": m.family,
        "repo": m.repo,
        "license": m.license,
        "tasks": list(m.tasks),
        "params_total_b": m.params_total_b,
        "params_active_b": m.params_active_b,
        "context_native": m.context_native,
        "architecture": m.arch.name,
        "quants": sorted({v.quant for v in m.all_variants()}),
        "scores": scores,
    }


@catalog_app.command("list")
def list_models(task: TaskOpt = None, json_output: JsonOpt = False) -> None:
    """List the catalog's models (optionally only those for one task)."""
    from advisor.catalog import load_catalog

    cat = load_catalog()
    models = [m for m in cat.models if task is None or task in m.tasks]
    if task is not None and not models:
        from advisor.errors import BadInputError

        known = sorted({t for m in cat.models for t in m.tasks})
        raise BadInputError(f"no model in the catalog has task {task!r}", hint=f"known tasks: {', '.join(known)}")
    rows = [_model_summary(cat, m) for m in models]
    if json_output:
        sys.stdout.write(json.dumps({"schema": 1, "models": rows}, indent=2) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} models" + (f" for {task}" if task else ""), title_justify="left")
    table.add_column("id", no_wrap=True)  # ids are what `catalog show` takes: never cut them
    for col in ("params", "ctx", "tasks", "licence", "code score", "chat score"):
        table.add_column(col)
    for r in rows:
        active = r["params_active_b"]
        params = f"{r['params_total_b']:.1f}B" + (f" ({active:.1f}B active)" if active else "")
        table.add_row(r["id"], params, f"{r['context_native'] // 1024}K", " ".join(r["tasks"]), r["license"],
                      _score_cell(r["scores"].get("code")), _score_cell(r["scores"].get("chat")))
    Console().print(table)
    Console(stderr=True).print("scores: metric value (percentile among catalog models with that metric)",
                               highlight=False, markup=False)


def _score_cell(s: dict[str, Any] | None) -> str:
    if not s:
        return ""
    return f"{s['metric']} {s['value']:g} (p{s['normalized']:.0f})"


@catalog_app.command("show")
def show(model_id: Annotated[str, typer.Argument(metavar="ID", help="A model id from 'advisor catalog list'.")],
         json_output: JsonOpt = False) -> None:
    """One model: architecture, recommended sampling, variants with sizes (measured or derived) and scores."""
    import dataclasses

    from advisor.catalog import load_catalog, sized_variants

    cat = load_catalog()
    m = cat.get(model_id)
    variants = []
    for sv in sized_variants(m):
        v = sv.variant
        q = cat.quant(v.quant if v.format == "gguf" else f"{v.format}-{v.quant}")
        variants.append({
            "format": v.format, "quant": v.quant, "repo": v.repo, "files": list(v.files),
            "size_bytes": sv.size_bytes, "size_source": sv.size_source,
            "size_where": v.size_where or ("quant_layout: llama-quantize recipe over the architecture's tensors"
                                           if v.format == "gguf" else "quant_layout: checkpoint tensor inventory"),
            "size_measures": v.size_measures, "derived_bytes": sv.derived_bytes, "imatrix": v.imatrix,
            "quality_score": q.score if q else None, "notes": v.notes,
        })
    data = {
        "schema": 1,
        "id": m.id, "name": m.name, "family": m.family, "repo": m.repo, "license": m.license, "tasks": list(m.tasks),
        "params_total_b": m.params_total_b, "params_active_b": m.params_active_b, "params_source": m.params_source,
        "context_native": m.context_native, "context_source": m.context_source,
        "architecture": dataclasses.asdict(m.arch),
        "sampling": dataclasses.asdict(m.sampling),
        "scores": [dict(dataclasses.asdict(s), normalized=cat.normalized_score(m, s.task) if m.score(s.task) == s
                        else None) for s in m.scores],
        "scores_missing": m.scores_missing or None,
        "variants": variants,
        "notes": m.notes,
    }
    if json_output:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    _render_show(data)


def _render_show(d: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from advisor.output import human_bytes

    out = Console()
    a, s = d["architecture"], d["sampling"]
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    params = f"{d['params_total_b']}B" + (f", {d['params_active_b']}B active" if d["params_active_b"] else "")
    head.add_row("Model", f"{d['name']} ({d['repo']})")
    head.add_row("Licence", d["license"])
    head.add_row("Tasks", " ".join(d["tasks"]))
    head.add_row("Parameters", params)
    head.add_row("Context", f"{d['context_native']} tokens")
    arch = (f"{a['name']}: {a['n_layer']} layers, n_embd {a['n_embd']}, {a['n_head']} heads / {a['n_head_kv']} KV, "
            f"head_dim {a['head_dim_k']}, n_ff {a['n_ff']}, vocab {a['vocab_size']}"
            + (", tied embeddings" if a["tied_embeddings"] else ""))
    if a["n_expert"]:
        arch += f", {a['n_expert']} experts ({a['n_expert_used']} used)"
    if a["sliding_window"]:
        arch += f", sliding window {a['sliding_window']} (pattern {a['sliding_window_pattern']})"
    head.add_row("Architecture", arch)
    samp = ", ".join(f"{k} {s[k]}" for k in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                                               "max_new_tokens") if s.get(k) is not None)
    head.add_row("Sampling", samp or "engine defaults")
    out.print(head)

    scores = Table(title="Scores (compare only within one metric)", title_justify="left")
    for col in ("task", "metric", "value", "percentile", "source"):
        scores.add_column(col)
    for sc in d["scores"]:
        pct = "" if sc["normalized"] is None else f"{sc['normalized']:.0f}"
        scores.add_row(sc["task"], sc["metric"], f"{sc['value']:g}", pct, sc["source"])
    if d["scores"]:
        out.print(scores)
    else:
        out.print(f"[bold]Scores[/bold]  none: {d['scores_missing']}")

    variants = Table(title="Variants", title_justify="left")
    for col in ("format", "quant", "size", "size source", "quality"):
        variants.add_column(col, no_wrap=True)
    variants.add_column("repo / file", overflow="fold")
    for v in d["variants"]:
        variants.add_row(v["format"], v["quant"], human_bytes(v["size_bytes"]), v["size_source"],
                         "" if v["quality_score"] is None else f"{v['quality_score']:g}",
                         f"{v['repo']} / {', '.join(v['files'])}")
    out.print(variants)
    Console(stderr=True).print(f"sampling source: {s['source']}", highlight=False, markup=False, soft_wrap=True)
