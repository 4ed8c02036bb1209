"""``advisor catalog list|show``: the curated models, their variants, sizes, scores and sources.

Module-level imports stay light: the catalog (TOML parsing) and the size layout (gguf, numpy) load inside the
commands, so other commands do not pay for them.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Annotated, Any

import typer

from advisor.cli._options import JsonOpt, model_name

catalog_app = typer.Typer(
    help="The built-in model catalog: models, variants (quantizations, files, sizes), quality scores with sources.",
    no_args_is_help=True,
)

TaskOpt = Annotated[
    str | None,
    typer.Option("--task", help="Only models for this task: code, chat, reasoning, completion, math, tools, vision."),
]


def _score_entry(ts: Any) -> dict[str, Any]:
    return {"metric": ts.metric or None, "value": ts.raw, "normalized": round(ts.value, 1), "imputed": ts.imputed,
            "method": ts.method, "scale": ts.scale, "source": ts.source}


def _model_summary(cat: Any, m: Any) -> dict[str, Any]:
    scores = {}
    for task in m.tasks:  # every task the model is tagged with, on that task's one scale (catalog/scales.toml)
        ts = cat.task_score(m, task)
        scores[task] = None if ts is None else _score_entry(ts)
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
        "released": m.released or None,
        "superseded_by": list(m.superseded_by),
        "user": m.id in cat.user_ids,
        "from_hub": bool(m.discovered),
        "fetched": m.discovered or None,
    }


@catalog_app.command("list")
def list_models(task: TaskOpt = None, json_output: JsonOpt = False) -> None:
    """List the catalog's models (optionally only those for one task)."""
    from advisor.catalog.load import load_catalog

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
    for col in ("params", "ctx", "released", "tasks", "licence", "code", "chat"):
        table.add_column(col)
    for r in rows:
        active = r["params_active_b"]
        params = f"{r['params_total_b']:.1f}B" + (f" ({active:.1f}B active)" if active else "")
        tag = " (hub " + r["fetched"] + ")" if r["from_hub"] else (" (user)" if r["user"] else "")
        table.add_row(r["id"] + tag, params, f"{r['context_native'] // 1024}K", r["released"] or "",
                      " ".join(r["tasks"]), r["license"], _score_cell(r["scores"].get("code")),
                      _score_cell(r["scores"].get("chat")))
    Console().print(table)
    Console(stderr=True).print("scores: the task's one scale (chat: MMLU-Pro %, code: LiveCodeBench %; "
                               "catalog/scales.toml); ~ marks a value mapped or estimated from other data",
                               highlight=False, markup=False)


def _score_cell(s: dict[str, Any] | None) -> str:
    if not s:
        return ""
    return ("~" if s["imputed"] else "") + f"{s['normalized']:.1f}"


@catalog_app.command("show")
def show(model_id: Annotated[str, typer.Argument(metavar="ID", help="A model id from 'advisor catalog list'.")],
         json_output: JsonOpt = False) -> None:
    """One model: architecture, recommended sampling, variants with sizes (measured or derived) and scores."""
    import dataclasses

    from advisor.catalog.load import load_catalog
    from advisor.catalog.model import sized_variants

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
        "scores": [dataclasses.asdict(s) for s in m.scores],
        "task_scores": {t: (None if (ts := cat.task_score(m, t)) is None else _score_entry(ts)) for t in m.tasks},
        "released": m.released or None, "released_source": m.released_source or None,
        "superseded_by": list(m.superseded_by), "superseded_reason": m.superseded_reason or None,
        "from_hub": bool(m.discovered), "fetched": m.discovered or None,
        "scores_missing": m.scores_missing or None,
        "user": m.id in cat.user_ids,
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

    from advisor.render.profile import human_bytes

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

    scores = Table(title="Benchmarks", title_justify="left")
    for col in ("task", "metric", "value", "source"):
        scores.add_column(col)
    for sc in d["scores"]:
        scores.add_row(sc["task"], sc["metric"], f"{sc['value']:g}", sc["source"])
    if d["scores"]:
        out.print(scores)
    else:
        out.print(f"[bold]Benchmarks[/bold]  none: {d['scores_missing']}")
    tasks = Table(title="Quality per task (one scale per task: catalog/scales.toml)", title_justify="left")
    for col in ("task", "score", "how"):
        tasks.add_column(col)
    for t, ts in d["task_scores"].items():
        if ts is None:
            tasks.add_row(t, "", "no scale")
            continue
        how = ts["method"] + (f" from {ts['metric']} {ts['value']:.1f}" if ts["metric"] and ts["value"] is not None
                              else "")
        tasks.add_row(t, f"{ts['normalized']:.1f}", how)
    out.print(tasks)

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


# --------------------------------------------------------------------------------------------------------------------
# refresh / add: the user overlay (advisor.catalog.overlay), never the packaged files


@catalog_app.command("refresh")
def refresh(
    ids: Annotated[list[str] | None, typer.Argument(metavar="[ID]...", help="Catalog ids (default: all).",
                                                    show_default=False)] = None,
    headers: Annotated[bool, typer.Option("--headers/--no-headers", help="Also read one GGUF header per repo "
                                          "(range requests) and report where it disagrees with the catalog's "
                                          "architecture.")] = True,
    discover: Annotated[bool | None, typer.Option("--discover/--no-discover", help="Also list the trusted "
                                                  "publishers' repositories (newest, then most downloaded) and add "
                                                  "the new ones to the overlay (default: when no ID is given).",
                                                  show_default=False)] = None,
    publishers: Annotated[list[str] | None, typer.Option("--publisher", metavar="ORG", help="A Hub user or organisation to "
                                                         "discover from (repeatable; default ggml-org, bartowski, "
                                                         "unsloth).", show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Repositories listed per publisher and "
                                       "order.")] = 10,
    measure: Annotated[bool, typer.Option("--sizes/--no-sizes", help="Measure the catalog's GGUF sizes from the "
                                          "Hub listings.")] = True,
    json_output: JsonOpt = False,
) -> None:
    """Measure GGUF variant sizes from the Hub's file listing into the user overlay, and discover new GGUF
    repositories of trusted publishers (their facts from one header read by range requests, sizes from the listing,
    quality estimated and marked imputed); 'catalog list' marks them (hub DATE).

    One listing call per repository (huggingface_hub model_info with file metadata); the packaged catalog is never
    written. With HF_HUB_OFFLINE set it changes nothing and exits 4 (nothing could be measured). A repository that
    fails is reported and the others are still recorded; the exit status is then 4.
    """
    import dataclasses

    from rich.console import Console
    from rich.progress import Progress

    from advisor.app.catalog import refresh as run_refresh
    from advisor.catalog import overlay as catalog_overlay
    from advisor.errors import DownloadError

    err = Console(stderr=True)
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("reading Hub listings", total=None)

        def progress(repo: str, done: int, total: int) -> None:
            bar.update(task, description=repo, completed=done, total=total)

        out = run_refresh(ids, headers, discover, publishers, limit, measure, progress)
    path = out.overlay or catalog_overlay.overlay_path()
    if json_output:
        sys.stdout.write(json.dumps({"schema": 1, "overlay": str(path), "date": out.date, "variants": out.rows,
                                     "architecture_mismatches": out.mismatches,
                                     "discovered": [dataclasses.asdict(o) for o in out.outcomes],
                                     "errors": out.errors}, indent=2) + "\n")
    else:
        _render_refresh(err, out.rows, out.mismatches, out.errors, str(out.overlay) if out.overlay else None)
        for o in out.outcomes:
            err.print(f"hub: {o.repo}: {o.status}" + (f" as {o.model_id}" if o.model_id else "")
                      + (f" ({o.reason})" if o.reason else ""), highlight=False, markup=False)
    if out.errors:
        first = out.errors[0]
        raise DownloadError(f"{len(out.errors)} repositor{'y' if len(out.errors) == 1 else 'ies'} or header(s) "
                            f"could not be read: {first['repo']}: {first['error']}")


def _render_refresh(err: Any, rows: list[dict[str, Any]], mismatches: list[dict[str, Any]],
                    errors: list[dict[str, str]], path: str | None) -> None:
    from rich.table import Table

    from advisor.render.profile import human_bytes

    table = Table(title="catalog refresh", title_justify="left")
    for col in ("id", "quant", "before", "after", "status"):
        table.add_column(col, no_wrap=col != "status")
    for r in rows:
        after = "" if r["new_bytes"] is None else human_bytes(r["new_bytes"])
        table.add_row(r["id"], r["quant"], f"{human_bytes(r['old_bytes'])} ({r['old_source']})", after, r["status"])
    err.print(table)
    for mm in mismatches:
        err.print(f"{mm['id']}: {mm['repo']}/{mm['file']} header differs from the catalog: "
                  + "; ".join(mm["differences"]), highlight=False, markup=False)
    for e in errors:
        err.print(f"{e['repo']}: {e['error']}", highlight=False, markup=False)
    if path:
        err.print(f"measured sizes written to {path}", highlight=False, markup=False)


@catalog_app.command("add")
def add(
    ref: Annotated[str, typer.Argument(metavar="HUB_REF|PATH", help="org/repo[:QUANT] (with --file or --quant), a "
                                       "local .gguf, or a directory with config.json and *.safetensors.",
                                       show_default=False, parser=model_name)],
    file: Annotated[str | None, typer.Option("--file", help="The .gguf in the Hub repository.",
                                             show_default=False)] = None,
    quant: Annotated[str | None, typer.Option("--quant", help="Quantization: picks the Hub file, and names the "
                                              "variant when the file name does not.", show_default=False)] = None,
    revision: Annotated[str | None, typer.Option("--revision", help="Hub branch, tag or commit.",
                                                 show_default=False)] = None,
    model_id: Annotated[str | None, typer.Option("--id", help="The id to give it (default: from its name).",
                                                 show_default=False)] = None,
    tasks: Annotated[list[str] | None, typer.Option("--task", help="What it is for (repeatable; default chat).",
                                                    show_default=False)] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a user model of the same id.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Add a user model to the overlay from its GGUF header (Hub or local) or its config.json; 'catalog list'
    then shows it marked (user) and 'recommend --model ID' plans it."""
    import datetime
    from pathlib import Path

    from advisor.catalog import overlay as catalog_overlay

    from advisor.hub import gguf as hub_gguf
    from advisor.catalog.load import load_catalog
    from advisor.catalog.model import _GGUF_QUANTS, CatalogError
    from advisor.errors import BadInputError

    today = datetime.date.today().isoformat()
    known_tasks = ("code", "chat", "reasoning", "completion", "math", "tools", "vision")
    for t in tasks or []:
        if t not in known_tasks:
            raise BadInputError(f"--task {t!r} is not one of {', '.join(known_tasks)}")
    task_list = list(dict.fromkeys(tasks or ["chat"]))
    p = Path(ref).expanduser()
    if p.is_dir():
        m = catalog_overlay.model_from_config_dir(p, model_id=model_id, tasks=task_list, date=today)
    else:
        if p.exists():
            from advisor.gguf.facts import read_gguf_facts

            facts = read_gguf_facts(p)
            repo, files = str(p.resolve().parent), [Path(f).name for f in facts.files]
            source = f"GGUF header of {p.resolve()}"
        elif hub_gguf.looks_like_hub_ref(ref) or file or quant:
            hf = hub_gguf.hub_facts(hub_gguf.parse_ref(ref, file, quant, revision))
            facts, repo, files = hf.facts, hf.repo, list(hf.files)
            source = f"GGUF header of {hf.repo}/{hf.files[0]} at {hf.commit[:12]}"
        else:
            raise BadInputError(f"{ref}: no such file or directory, and not a Hub reference (org/repo)")
        q = catalog_overlay.guess_quant(facts, files, quant, _GGUF_QUANTS)
        base = facts.name or (repo.split("/")[-1] if not p.exists() else Path(files[0]).stem)
        mid = model_id or catalog_overlay.slug(re.sub(rf"[-_. ]?{re.escape(q)}.*$", "", base, flags=re.IGNORECASE) or base)
        m = catalog_overlay.model_from_facts(facts, model_id=mid, repo=repo, files=files,
                                             size_bytes=facts.file_bytes, quant=q, tasks=task_list,
                                             source=source, date=today)
    cat = load_catalog()
    if m.id in {x.id for x in cat.models} and m.id not in cat.user_ids:
        raise CatalogError(f"{m.id!r} is already a catalog model", hint="give another --id")
    ov = catalog_overlay.with_model(catalog_overlay.load_overlay(), m, replace=replace)
    path = catalog_overlay.save_overlay(ov)
    if json_output:
        sys.stdout.write(json.dumps({"schema": 1, "overlay": str(path), "id": m.id,
                                     "model": catalog_overlay._plain(m)}, indent=2) + "\n")
    else:
        v = m.variants[0]
        sys.stderr.write(f"added {m.id} ({m.arch.name}, {m.params_total_b}B, {v.format} {v.quant}) to {path}\n")
