"""``advisor catalog refresh``: measure the catalog's GGUF sizes from the Hub's listings (one call per repository),
check one header per model against the catalog's architecture, and discover new repositories of trusted publishers;
what is found goes into the user overlay (the packaged catalog is never written)."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.catalog import overlay as catalog_overlay
from advisor.errors import AdvisorError
from advisor.hub import gguf as hub_gguf


@dataclass
class Refreshed:
    """What a refresh did: a row per variant, headers that disagree, discovered repositories, failures."""

    date: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    sizes: list[Any] = field(default_factory=list)
    found: list[Any] = field(default_factory=list)
    outcomes: list[Any] = field(default_factory=list)
    overlay: Path | None = None  # where the overlay was written, None when nothing changed


#: Progress callback: (repository, done so far, total).
Progress = Callable[[str, int, int], None]


def _mismatches(arch: Any, facts: Any) -> list[str]:
    """Where a GGUF header disagrees with the catalog's Architecture (names as in catalog.Architecture)."""
    mla = facts.is_mla  # the header's head sizes are the latent cache's; the config's are the *_mla keys
    pairs = [("name", arch.name, facts.architecture), ("n_layer", arch.n_layer, facts.n_layer),
             ("n_embd", arch.n_embd, facts.n_embd), ("n_head", arch.n_head, max(facts.n_head, default=0)),
             ("n_head_kv", 1 if mla else arch.n_head_kv, max(facts.n_head_kv, default=0)),
             ("head_dim_k", arch.head_dim_k, facts.key_length_mla if mla else facts.head_dim_k),
             ("vocab_size", arch.vocab_size, facts.n_vocab),
             ("tied_embeddings", arch.tied_embeddings, facts.tied_embeddings),
             ("n_expert", arch.n_expert, facts.n_expert)]
    return [f"{k}: catalog {a}, header {b}" for k, a, b in pairs if a != b]


def _check_header(m: Any, v: Any, repo: str, commit: str | None, out: Refreshed) -> None:
    try:
        hf = hub_gguf.hub_facts(hub_gguf.HubRef(repo, v.files[0], revision=commit))
    except AdvisorError as exc:
        out.errors.append({"repo": repo, "error": f"header of {v.files[0]}: {exc.message}"})
        return
    bad = _mismatches(m.arch, hf.facts)
    if bad:
        out.mismatches.append({"id": m.id, "repo": repo, "file": v.files[0], "differences": bad})


def _measure_repo(repo: str, items: list[tuple[Any, Any]], headers: bool, out: Refreshed) -> None:
    """One listing call for ``repo``: the measured size of each of its variants, and one header per model."""
    try:
        lst = hub_gguf.fetch_listing(repo, None)
    except AdvisorError as exc:
        out.errors.append({"repo": repo, "error": exc.message})
        return
    checked: set[str] = set()
    for m, sv in items:
        v = sv.variant
        row = {"id": m.id, "quant": v.quant, "repo": repo, "files": list(v.files), "old_bytes": sv.size_bytes,
               "old_source": sv.size_source}
        missing = [f for f in v.files if f not in lst.files]
        if missing:
            out.rows.append({**row, "new_bytes": None, "status": f"not on the Hub: {', '.join(missing)}"})
            continue
        new = sum(lst.files[f].size for f in v.files)
        out.sizes.append(catalog_overlay.MeasuredSize(m.id, repo, tuple(v.files), v.quant, new, out.date,
                                                      lst.commit))
        same = sv.size_source == "measured" and sv.size_bytes == new
        out.rows.append({**row, "new_bytes": new, "status": "unchanged" if same else "measured"})
        if headers and m.id not in checked:
            checked.add(m.id)
            _check_header(m, v, repo, lst.commit, out)


def refresh(ids: list[str] | None, headers: bool = True, discover: bool | None = None,
            publishers: list[str] | None = None, limit: int = 10, measure: bool = True,
            progress: Progress = lambda repo, done, total: None) -> Refreshed:
    """Measure, check and discover; write what was found to the overlay. Raises HubOfflineError when offline."""
    from advisor.catalog.load import load_catalog
    from advisor.catalog.model import sized_variants

    if hub_gguf.offline():
        raise hub_gguf.HubOfflineError("HF_HUB_OFFLINE is set: nothing refreshed, the overlay is unchanged",
                                       hint="unset HF_HUB_OFFLINE to read the Hub listing")
    cat = load_catalog()
    out = Refreshed(date=datetime.date.today().isoformat())
    models = [cat.get(i) for i in ids] if ids else [m for m in cat.models if m.id not in cat.user_ids]
    by_repo: dict[str, list[tuple[Any, Any]]] = {}
    for m in models if measure else []:
        for sv in sized_variants(m):
            if sv.variant.format == "gguf":
                by_repo.setdefault(sv.variant.repo, []).append((m, sv))
    for done, (repo, items) in enumerate(sorted(by_repo.items())):
        progress(repo, done, len(by_repo))
        _measure_repo(repo, items, headers, out)
    if discover if discover is not None else not ids:
        out.found, out.outcomes = _discover(cat, publishers or None, limit, out.date, out.errors)
    if out.sizes or out.found:
        ov = catalog_overlay.with_sizes(catalog_overlay.load_overlay(), out.sizes)
        for m in out.found:
            ov = catalog_overlay.with_model(ov, m, replace=True)
        out.overlay = catalog_overlay.save_overlay(ov)
    return out


def _discover(cat: Any, publishers: list[str] | None, limit: int, today: str,
              errors: list[dict[str, str]]) -> tuple[list[Any], list[Any]]:
    """New repositories of the trusted publishers as user models (advisor.catalog.discover); failures go to
    ``errors`` and the others are still added."""
    from advisor.catalog import discover as disc
    from advisor.catalog.model import _GGUF_QUANTS

    known = {m.repo for m in cat.models} | {v.repo for m in cat.models for v in m.all_variants()}
    pubs = tuple(publishers) if publishers else disc.TRUSTED_PUBLISHERS
    try:
        cands = disc.list_candidates(pubs, limit, known)
    except AdvisorError as exc:
        errors.append({"repo": ", ".join(pubs), "error": exc.message})
        return [], []
    found, outcomes = [], []
    ids = {m.id for m in cat.models if m.id not in cat.user_ids}
    for c in cands:
        try:
            m, o = disc.discover_one(c, today, _GGUF_QUANTS)
        except AdvisorError as exc:
            errors.append({"repo": c.repo, "error": exc.message})
            outcomes.append(disc.Outcome(c.repo, "failed", exc.message))
            continue
        if m is not None and m.id in ids:
            m, o = None, disc.Outcome(c.repo, "skipped", f"id {m.id!r} is a packaged catalog model")
        if m is not None:
            found.append(m)
        outcomes.append(o)
    return found, outcomes
