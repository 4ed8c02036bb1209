"""Discovery of new GGUF repositories from trusted publishers (``advisor catalog refresh``).

For each publisher, two listing calls (huggingface_hub ``HfApi.list_models(author=..., sort=...)``, i.e.
``GET /api/models?author=A&sort=createdAt|downloads&limit=N``): the newest repositories first, then the most
downloaded. Each repository the catalog does not know yet gets one file listing (``advisor.hub.gguf.listing``) and
one GGUF header read by range requests (``hub_facts``, as ``advisor estimate`` does); it becomes a user model of the
overlay with its facts, the measured size of every quantization in the repository, its release month (the
repository's creation date), and ``discovered`` = the fetch date. Its quality is not measured: the catalog's
size-date fit estimates it (advisor.catalog.scale), marked imputed.

A repository is skipped, with the reason, when it has no GGUF, when its architecture has no tensor inventory in
advisor.gguf.layout (the planner could not size it), or when that inventory does not add up to the header's own
tensors within ``INVENTORY_TOLERANCE`` (the facts would misdescribe it).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: GGUF publishers whose uploads follow llama-quantize's recipes and name their files by quantization (the same
#: publishers the packaged catalog's GGUF groups come from).
TRUSTED_PUBLISHERS = ("ggml-org", "bartowski", "unsloth")
INVENTORY_TOLERANCE = 0.05
#: The quantization whose header is read (any one shard gives the architecture); others are listed by size only.
PREFERRED_QUANTS = ("Q4_K_M", "Q4_0", "Q8_0", "MXFP4_MOE")


@dataclass(frozen=True)
class Candidate:
    repo: str
    created: str  # YYYY-MM-DD or ""
    downloads: int


@dataclass(frozen=True)
class Outcome:
    repo: str
    status: str  # added | skipped | failed
    reason: str = ""
    model_id: str = ""


def list_candidates(publishers: Iterable[str], limit: int, known: set[str]) -> list[Candidate]:
    """Repositories of ``publishers``, newest first then most downloaded, without those the catalog knows."""
    from huggingface_hub import HfApi

    from advisor.hub.gguf import _hub_error, _token, endpoint

    api = HfApi(endpoint=endpoint())
    out: dict[str, Candidate] = {}
    for author in publishers:
        for sort in ("created_at", "downloads"):
            try:
                infos = list(api.list_models(author=author, sort=sort, limit=limit, token=_token()))
            except Exception as exc:  # noqa: BLE001 - huggingface_hub/httpx errors become one line
                raise _hub_error(author, "the publisher's model list", exc) from None
            for info in infos:
                if info.id in known or info.id in out:
                    continue
                created = info.created_at.strftime("%Y-%m-%d") if info.created_at else ""
                out[info.id] = Candidate(info.id, created, int(info.downloads or 0))
    return list(out.values())


def _quant_of(name: str, known: frozenset[str]) -> str | None:
    for q in sorted(known, key=len, reverse=True):
        if re.search(rf"(?:^|[-_.]){re.escape(q)}(?:[-_.]|$)", name.rsplit("/", 1)[-1], re.IGNORECASE):
            return q
    return None


def variants_of(listing: Any, known: frozenset[str]) -> dict[str, tuple[list[str], int]]:
    """quant -> (shard files, total bytes) for every GGUF model file of a repository listing."""
    from advisor.hub import gguf as hub_gguf

    out: dict[str, tuple[list[str], int]] = {}
    for first in hub_gguf.available(listing):
        q = _quant_of(first, known)
        if q is None or q in out:
            continue
        shards = hub_gguf._shards(listing, first)
        out[q] = (shards, sum(listing.files[f].size for f in shards))
    return out


def discover_one(c: Candidate, today: str, known_quants: frozenset[str]) -> tuple[Any | None, Outcome]:
    """A user Model for candidate ``c`` (or None) and what happened."""
    from advisor.catalog import overlay as catalog_overlay
    from advisor.catalog.model import Variant
    from advisor.gguf import layout
    from advisor.hub import gguf as hub_gguf

    lst = hub_gguf.listing(c.repo, None)
    found = variants_of(lst, known_quants)
    if not found:
        return None, Outcome(c.repo, "skipped", "no GGUF file named by a known quantization")
    quant = next((q for q in PREFERRED_QUANTS if q in found), sorted(found)[0])
    hf = hub_gguf.hub_facts(hub_gguf.HubRef(c.repo, file=found[quant][0][0], revision=lst.commit))
    f = hf.facts
    tasks = ["code", "chat"] if re.search(r"cod(e|er|ing)", c.repo, re.IGNORECASE) else ["chat"]
    name = c.repo.split("/", 1)[1]
    mid = catalog_overlay.slug(re.sub(r"-GGUF$", "", name, flags=re.IGNORECASE))
    source = f"GGUF header of {c.repo}/{hf.files[0]} at {hf.commit[:12]} (catalog refresh {today})"
    m = catalog_overlay.model_from_facts(f, model_id=mid, repo=c.repo, files=list(hf.files),
                                         size_bytes=found[quant][1], quant=quant, tasks=tasks, source=source,
                                         date=today)
    try:
        inv = sum(t.n_elements for t in layout.tensor_inventory(m.arch))
    except ValueError:
        return None, Outcome(c.repo, "skipped", f"architecture {f.architecture!r} has no tensor inventory here")
    header = sum(_n(t.shape) for t in f.tensors)
    if not header or abs(inv / header - 1) > INVENTORY_TOLERANCE:
        return None, Outcome(c.repo, "skipped", f"the {f.architecture} inventory ({inv / 1e9:.2f}B) does not match "
                                                f"the header's tensors ({header / 1e9:.2f}B)")
    variants = [Variant(format="gguf", quant=q, repo=c.repo, files=tuple(files), size_source="measured",
                        size_bytes=size, size_where=f"advisor catalog refresh {today}: Hub listing")
                for q, (files, size) in sorted(found.items())]
    m = dataclasses.replace(m, variants=tuple(variants), family="hub", released=c.created[:7],
                            released_source=f"Hub repository creation date {c.created} (the upload, not the model's "
                                            "first release)" if c.created else "",
                            discovered=today, scores_missing="discovered on the Hub: quality estimated from size and "
                                                             "release date (imputed)")
    return m, Outcome(c.repo, "added", model_id=m.id)


def _n(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
