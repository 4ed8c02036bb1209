"""Facts of a GGUF on the Hugging Face Hub, read from its header alone with HTTP range requests.

A reference is ``org/repo`` plus a file name (``--file``, or ``org/repo/path/file.gguf``) or a quantization
(``org/repo:Q4_K_M`` / ``--quant``), at an optional revision. One listing call (``HfApi.model_info`` with
``files_metadata=True``: huggingface_hub hf_api.py, ``GET /api/models/{repo}[/revision/{rev}]?blobs=true``) gives the
resolved commit and every file's size; each shard's header is then read with ``Range: bytes=a-b`` GETs on the file
URL (``hf_hub_url``, ``/{repo}/resolve/{commit}/{file}``) through huggingface_hub's own HTTP client
(``get_session``, which follows the Hub's redirects to its CDN and whose ``build_hf_headers`` adds HF_TOKEN).
The first range is 2 MiB; when the header goes on past it (a 150k-token vocabulary and its merges take several MiB)
the next range doubles what was read, so a header costs a few requests and never the tensor data.

Split models (``-00001-of-0000N.gguf``, llama.cpp's llama_split_path naming) are one model: every shard's header is
read and the facts cover all shards, as advisor.gguf.facts does for local files.

Cache (advisor's state dir, ``home_dir()/cache/gguf-facts/<org>--<repo>/``): ``refs/<revision>.json`` holds the
listing of a revision (commit, files, sizes, etags) and ``<commit>/<file>.json`` the parsed facts keyed by the first
shard's etag. A listing is trusted for REF_TTL_S, so a second call within it makes no request at all; with
HF_HUB_OFFLINE set the cache is used whatever its age and a miss is one clear error. HF_ENDPOINT and HF_HUB_OFFLINE
are read when called (huggingface_hub reads them once at import: constants.py), so a changed environment counts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from advisor import settings
from advisor.errors import BadInputError, DownloadError
from advisor.gguf.facts import (
    SPLIT_RE,
    HeaderIncomplete,
    check_split,
    ModelFacts,
    TensorFacts,
    facts_from_raw,
    parse_header,
)

#: First range read from each shard: most headers fit (a 32k vocabulary takes about 0.5 MiB).
FIRST_RANGE_BYTES = 2 * 2**20
#: Each further range asks for this many times what was read so far.
GROWTH = 2
#: How long a cached listing of a branch or tag is trusted without asking the Hub (a file at a commit never changes;
#: a branch may move, and a day-old listing only risks a day-old size).
REF_TTL_S = 24 * 3600
#: Cache format; bump when the stored JSON changes.
CACHE_VERSION = 3
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_REPO_RE = re.compile(r"^(?:hf://|hf\.co/|https://huggingface\.co/)?(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)"
                      r"(?P<path>(?:/[^:]+)*?)(?::(?P<quant>[\w.-]+))?$")


class HubNotFoundError(DownloadError):
    """The repository, revision or file does not exist on the Hub (or is private without a token)."""


class HubOfflineError(DownloadError):
    """HF_HUB_OFFLINE is set, or the Hub cannot be reached, and the cache does not hold what was asked."""


@dataclasses.dataclass(frozen=True)
class HubRef:
    repo: str
    file: str | None = None
    quant: str | None = None
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo + (f"/{self.file}" if self.file else "") + (f":{self.quant}" if self.quant else "")


@dataclasses.dataclass(frozen=True)
class RepoFileEntry:
    size: int
    etag: str


@dataclasses.dataclass(frozen=True)
class RepoListing:
    repo: str
    revision: str | None
    commit: str
    files: dict[str, RepoFileEntry]
    fetched_at: float

    def ggufs(self) -> list[str]:
        return sorted(f for f in self.files if f.endswith(".gguf"))


@dataclasses.dataclass(frozen=True)
class HubFacts:
    """A Hub GGUF's facts with where they came from: ``files`` are the repo paths of every shard, in order."""

    facts: ModelFacts
    repo: str
    files: tuple[str, ...]
    commit: str
    revision: str | None
    from_cache: bool


def looks_like_hub_ref(text: str) -> bool:
    """``org/repo``, ``org/repo:QUANT``, ``org/repo/file.gguf`` or ``hf://...`` (callers check local paths first)."""
    if text.startswith(("/", ".", "~")) or "\\" in text:
        return False
    m = _REPO_RE.match(text)
    if not m or m.group("repo").endswith(".gguf"):  # "dir/x.gguf" is a (missing) local file, not a repo
        return False
    return m.group("path") == "" or text.endswith(".gguf")


def parse_ref(text: str, file: str | None = None, quant: str | None = None, revision: str | None = None) -> HubRef:
    m = _REPO_RE.match(text)
    if not m:
        raise BadInputError(f"{text}: not a Hugging Face reference (expected org/repo, org/repo:QUANT or "
                            "org/repo/file.gguf)")
    path = m.group("path").lstrip("/") or None
    q = m.group("quant")
    if path and file and path != file:
        raise BadInputError(f"{text}: names file {path} and --file {file}: give one")
    if q and quant and q.upper() != quant.upper():
        raise BadInputError(f"{text}: names quantization {q} and --quant {quant}: give one")
    check_repo_path(path or file)
    return HubRef(m.group("repo"), path or file, q or quant, revision)


#: Longest repository file path accepted (the Hub's own paths stay far below; Linux's PATH_MAX is 4096).
MAX_HUB_PATH = 1024


def check_repo_path(file: str | None) -> None:
    """A file path inside a repository: relative, no ``.``/``..`` parts, no control characters. A path that could
    climb out of the repository (and out of the local cache it is mirrored into) is refused, not normalised."""
    if file is None:
        return
    parts = file.split("/")
    if (not file or len(file) > MAX_HUB_PATH or file.startswith("/") or "\\" in file
            or any(p in ("", ".", "..") for p in parts) or any(ord(c) < 32 or ord(c) == 127 for c in file)):
        raise BadInputError(f"{file[:200]!r}: not a file path inside a Hub repository (relative, no '..', at most "
                            f"{MAX_HUB_PATH} characters)")


# --------------------------------------------------------------------------------------------------------------------
# Environment, cache


def offline() -> bool:
    return settings.is_true(os.environ.get("HF_HUB_OFFLINE"))


def endpoint() -> str:
    # huggingface_hub constants.py: ENDPOINT = HF_ENDPOINT or https://huggingface.co, read at its import.
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def cache_root() -> Path:
    return settings.home_dir() / "cache" / "gguf-facts"


def _repo_dir(repo: str) -> Path:
    return cache_root() / repo.replace("/", "--")


def _ref_path(repo: str, revision: str | None) -> Path:
    return _repo_dir(repo) / "refs" / (quote(revision or "main", safe="") + ".json")


def _facts_path(repo: str, commit: str, file: str) -> Path:
    if not re.fullmatch(r"[0-9a-f]{40}", commit or ""):  # a Hub commit id; anything else must not become a path
        raise BadInputError(f"{repo}: the Hub answered commit {commit[:60]!r}, not a commit id")
    return _repo_dir(repo) / commit / (file.replace("/", "--") + ".json")


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    """Atomic write (a reader never sees half a file); a cache that cannot be written is only slower next time."""
    from advisor.store.files import write_private  # 0600 in 0700 directories, like all of ADVISOR_HOME

    try:
        write_private(path, json.dumps(doc, separators=(",", ":")))
    except (OSError, BadInputError):
        pass


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None  # absent or damaged: treated as a miss and rewritten
    return doc if isinstance(doc, dict) and doc.get("version") == CACHE_VERSION else None


def facts_to_json(f: ModelFacts) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for fld in dataclasses.fields(f):
        v = getattr(f, fld.name)
        if fld.name == "tensors":
            v = [[t.name, list(t.shape), t.type_id, t.nbytes, t.file_index, t.offset] for t in v]
        elif isinstance(v, tuple):
            v = list(v)
        d[fld.name] = v
    return d


def facts_from_json(d: dict[str, Any]) -> ModelFacts:
    kw: dict[str, Any] = {}
    for fld in dataclasses.fields(ModelFacts):
        v = d[fld.name]
        if fld.name == "tensors":
            v = tuple(TensorFacts(n, tuple(s), t, nb, i, off) for n, s, t, nb, i, off in v)
        elif isinstance(v, list) and fld.name != "metadata":
            v = tuple(v)
        kw[fld.name] = v
    return ModelFacts(**kw)


# --------------------------------------------------------------------------------------------------------------------
# Hub calls (huggingface_hub's client; every error becomes one line)


def _token() -> str | bool | None:
    # build_hf_headers(token=None) falls back to HF_TOKEN / the stored token (huggingface_hub utils/_headers.py).
    return os.environ.get("HF_TOKEN") or None


def _hub_error(repo: str, what: str, exc: Exception) -> DownloadError:
    from huggingface_hub import errors

    if isinstance(exc, errors.OfflineModeIsEnabled):
        return HubOfflineError(f"{what} from {repo} is not in advisor's cache and HF_HUB_OFFLINE is set",
                               hint="unset HF_HUB_OFFLINE to read its header from the Hub")
    if isinstance(exc, (errors.RepositoryNotFoundError, errors.RevisionNotFoundError)) and not isinstance(
            exc, errors.GatedRepoError):
        kind = "revision" if isinstance(exc, errors.RevisionNotFoundError) else "repository"
        return HubNotFoundError(f"{kind} not found: {repo}" + ("" if kind == "repository" else f" ({what})"),
                                hint="check the name, or set HF_TOKEN for a private repository")
    import httpx2

    if isinstance(exc, httpx2.TransportError):
        return HubOfflineError(f"cannot reach the Hub at {endpoint()} for {what} from {repo} "
                               f"({type(exc).__name__})", hint="check the network, or set HF_HUB_OFFLINE=1 to use "
                               "only the cache")
    from advisor.hub.download import _hub_error as download_error

    return download_error(repo, what, exc)


def fetch_listing(repo: str, revision: str | None) -> RepoListing:
    """One listing call: the resolved commit and every file's size and etag (LFS sha256, else the git blob id)."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=endpoint()).model_info(repo, revision=revision, files_metadata=True, token=_token())
    except Exception as exc:  # noqa: BLE001 - huggingface_hub and httpx errors become one line
        raise _hub_error(repo, "the file listing", exc) from None
    files = {}
    for s in info.siblings or []:
        etag = (s.lfs.sha256 if s.lfs else None) or s.blob_id or ""
        size = s.lfs.size if s.lfs else s.size
        if size is not None:
            files[s.rfilename] = RepoFileEntry(int(size), etag)
    if not info.sha:
        raise DownloadError(f"the Hub listing of {repo} names no commit")
    listing = RepoListing(repo, revision, info.sha, files, time.time())
    _write_json(_ref_path(repo, revision), {
        "version": CACHE_VERSION, "repo": repo, "revision": revision, "commit": listing.commit,
        "fetched_at": listing.fetched_at, "files": {k: [v.size, v.etag] for k, v in files.items()}})
    if not _COMMIT_RE.match(revision or ""):  # a commit's listing never changes: store it under the commit too
        _write_json(_ref_path(repo, listing.commit), {
            "version": CACHE_VERSION, "repo": repo, "revision": listing.commit, "commit": listing.commit,
            "fetched_at": listing.fetched_at, "files": {k: [v.size, v.etag] for k, v in files.items()}})
    return listing


def cached_listing(repo: str, revision: str | None) -> RepoListing | None:
    doc = _read_json(_ref_path(repo, revision))
    if doc is None:
        return None
    try:
        files = {k: RepoFileEntry(int(v[0]), str(v[1])) for k, v in doc["files"].items()}
        return RepoListing(repo, revision, str(doc["commit"]), files, float(doc["fetched_at"]))
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def listing(repo: str, revision: str | None, *, fresh: bool = False) -> RepoListing:
    """The repo's listing: from the cache when recent (or offline), else from the Hub."""
    cached = None if fresh and not offline() else cached_listing(repo, revision)
    if cached is not None:
        pinned = _COMMIT_RE.match(revision or "") is not None
        if offline() or pinned or time.time() - cached.fetched_at < REF_TTL_S:
            return cached
    if offline():
        raise HubOfflineError(f"{repo}: not in advisor's cache and HF_HUB_OFFLINE is set",
                              hint="unset HF_HUB_OFFLINE to read the file listing and header from the Hub")
    return fetch_listing(repo, revision)


def _read_range(session: Any, url: str, headers: dict[str, str], start: int, end: int) -> bytes:
    """Bytes ``start..end`` (inclusive) of the file at ``url``; fewer when the file ends first."""
    from huggingface_hub import hf_raise_for_status

    want = end - start + 1
    with session.stream("GET", url, headers={**headers, "Range": f"bytes={start}-{end}"}, timeout=60) as r:
        if r.status_code >= 400:
            r.read()
            hf_raise_for_status(r)
        skip = start if r.status_code == 200 else 0  # a server that ignores Range sends the whole file
        chunks: list[bytes] = []
        got = 0
        for chunk in r.iter_bytes():
            if skip:
                cut = min(skip, len(chunk))
                chunk, skip = chunk[cut:], skip - cut
            chunks.append(chunk)
            got += len(chunk)
            if got >= want:
                break
    return b"".join(chunks)[:want]


def read_header(repo: str, commit: str, file: str, size: int, name: str,
                progress: Callable[[int], None] | None = None) -> Any:
    """The parsed header (advisor.gguf.facts' raw form) of one file, read by growing range requests."""
    from huggingface_hub import get_session, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(repo, file, revision=commit, endpoint=endpoint())
    try:
        headers = build_hf_headers(token=_token())
        # huggingface_hub get_hf_file_metadata: identity encoding, so that byte offsets are the file's.
        headers["Accept-Encoding"] = "identity"
        session = get_session()
        buf = b""
        want = min(FIRST_RANGE_BYTES, size)
        while True:
            part = _read_range(session, url, headers, len(buf), want - 1)
            buf += part
            if progress:
                progress(len(part))
            if len(buf) < want:  # the file is shorter than the listing says: parse what exists
                size = len(buf)
            try:
                return parse_header(buf, name, size)
            except HeaderIncomplete:
                want = min(size, len(buf) * GROWTH)
    except (BadInputError, DownloadError):
        raise
    except Exception as exc:  # noqa: BLE001 - huggingface_hub and httpx errors become one line
        raise _hub_error(repo, file, exc) from None


# --------------------------------------------------------------------------------------------------------------------
# Which files


def _quant_re(quant: str) -> re.Pattern[str]:
    # A quant name is a token of the file name: "Qwen3-8B-Q4_K_M.gguf", "q4_k_m/x-00001-of-00002.gguf".
    return re.compile(rf"(?:^|[-_./]){re.escape(quant)}(?:[-_./]|$)", re.IGNORECASE)


def _model_key(path: str) -> str:
    m = SPLIT_RE.match(path)
    return m.group("prefix") if m else path


def _shards(listing: RepoListing, first: str) -> list[str]:
    m = SPLIT_RE.match(first)
    if not m:
        return [first]
    _, count = check_split(f"{listing.repo}/{first}", m)
    names = [f"{m.group('prefix')}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    missing = [n for n in names if n not in listing.files]
    if missing:
        raise HubNotFoundError(f"{listing.repo}: split model {first} is missing shard(s) {', '.join(missing)}")
    return names


def available(listing: RepoListing) -> list[str]:
    """One entry per model file of the repo (first shards only), mmproj projectors left out."""
    out = []
    for f in listing.ggufs():
        m = SPLIT_RE.match(f)
        if (m and int(m.group("idx")) != 1) or "mmproj" in f.lower():
            continue
        out.append(f)
    return out


def select_files(listing: RepoListing, file: str | None, quant: str | None) -> list[str]:
    """The shards (in order) of the model ``file`` or ``quant`` names in the repo."""
    models = available(listing)
    shown = ", ".join(models[:12]) + (" ..." if len(models) > 12 else "") or "none"
    if file is not None:
        if file not in listing.files:
            raise HubNotFoundError(f"{file} is not in {listing.repo}", hint=f"its GGUF files: {shown}")
        if not file.endswith(".gguf"):
            raise BadInputError(f"{listing.repo}/{file}: not a .gguf file")
        first = SPLIT_RE.sub(lambda m: f"{m.group('prefix')}-00001-of-{m.group('count')}.gguf", file)
        return _shards(listing, first)
    if quant is not None:
        pat = _quant_re(quant)
        found = [f for f in models if pat.search(f)]
        if not found:
            raise HubNotFoundError(f"no {quant} GGUF in {listing.repo}", hint=f"its GGUF files: {shown}")
        if len(found) > 1:
            raise BadInputError(f"{listing.repo}: several files match {quant}: {', '.join(found)}",
                                hint="name one with --file")
        return _shards(listing, found[0])
    if not models:
        raise HubNotFoundError(f"{listing.repo} has no GGUF file")
    if len(models) > 1:
        raise BadInputError(f"{listing.repo} has {len(models)} GGUF files: name one with --file or :QUANT",
                            hint=f"its GGUF files: {shown}")
    return _shards(listing, models[0])


# --------------------------------------------------------------------------------------------------------------------
# Facts


def hub_facts(ref: HubRef, progress: Callable[[int], None] | None = None) -> HubFacts:
    """Facts of the GGUF ``ref`` names: from advisor's cache, else from its headers on the Hub."""
    lst = listing(ref.repo, ref.revision)
    files = select_files(lst, ref.file, ref.quant)
    etag = lst.files[files[0]].etag
    cpath = _facts_path(ref.repo, lst.commit, files[0])
    doc = _read_json(cpath)
    if doc is not None and doc.get("etag") == etag:
        try:
            return HubFacts(facts_from_json(doc["facts"]), ref.repo, tuple(files), lst.commit, ref.revision, True)
        except (KeyError, TypeError, ValueError):
            pass  # damaged: read again
    if offline():
        raise HubOfflineError(f"{files[0]} from {ref.repo}: its header is not in advisor's cache and "
                              "HF_HUB_OFFLINE is set", hint="unset HF_HUB_OFFLINE to read it from the Hub")
    names = [f"{ref.repo}/{f}" for f in files]
    raws = [read_header(ref.repo, lst.commit, f, lst.files[f].size, n, progress) for f, n in zip(files, names)]
    facts = facts_from_raw(names[0], names, raws)
    _write_json(cpath, {"version": CACHE_VERSION, "repo": ref.repo, "commit": lst.commit, "file": files[0],
                        "etag": etag, "facts": facts_to_json(facts)})
    return HubFacts(facts, ref.repo, tuple(files), lst.commit, ref.revision, False)
