"""Model files: a local path as given, or a file of a Hub repository from (or into) huggingface_hub's cache.

Downloads go only into that cache (never ``local_dir``), so advisor can neither overwrite nor delete a user's file.
huggingface_hub itself shows the progress bar, resumes partial downloads (``.incomplete`` blobs) and reads HF_TOKEN.
``HF_HUB_OFFLINE`` and the cache location are read when called, not when huggingface_hub was imported, so that a
changed environment (tests, a wrapper script) is honoured.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from advisor import settings
from advisor.errors import DownloadError, ModelNotFoundError
from advisor.plan import ModelRef

#: Free space kept beyond the download itself: huggingface_hub writes the blob, and the cache holds small metadata
#: files too (a margin of our choosing; 1 GiB is under 1 % of a typical 8B model file set).
DISK_MARGIN_BYTES = 2**30
#: Files vLLM needs from a transformers-format repository (weights, config, tokenizer), not the whole repo.
VLLM_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja"]
#: The first bytes of every GGUF file (gguf's GGUF_MAGIC, ggml/include/gguf.h).
GGUF_MAGIC = b"GGUF"


def offline(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return settings.is_true(env.get("HF_HUB_OFFLINE"))


def check_local(path: Path) -> Path:
    """A local file or directory, as given; a ``.gguf`` must start with the GGUF magic."""
    if not path.exists():
        raise ModelNotFoundError(f"model not found: {path}")
    if not path.is_dir():
        from advisor.strict import open_regular

        try:  # a FIFO or device is refused without blocking (opening a FIFO waits for a writer)
            with os.fdopen(open_regular(path, ModelNotFoundError), "rb") as fh:
                magic = fh.read(4)
        except OSError as exc:
            raise ModelNotFoundError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.suffix == ".gguf" and not path.is_dir():
        if magic != GGUF_MAGIC:
            raise ModelNotFoundError(f"{path} is not a GGUF file (it does not start with 'GGUF')")
    return path


def cached_file(repo: str, filename: str, revision: str | None = None) -> Path | None:
    """The file's path in the cache, or None when it is not there. Cheap: no network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=settings.model_cache_dir(), revision=revision)
    return Path(found) if isinstance(found, str) else None


def _hub_error(repo: str, what: str, exc: Exception) -> DownloadError:
    from huggingface_hub import errors

    if isinstance(exc, errors.GatedRepoError):
        return DownloadError(f"{repo} is gated: accept its licence on the Hub", hint="then set HF_TOKEN")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return DownloadError(f"repository {repo} not found (or private)", hint="check the name, or set HF_TOKEN")
    if isinstance(exc, errors.RevisionNotFoundError):
        return DownloadError(f"revision not found in {repo}")
    if isinstance(exc, errors.LocalEntryNotFoundError):
        return DownloadError(
            f"{what} from {repo} is not in the Hugging Face cache and the Hub cannot be reached",
            hint="unset HF_HUB_OFFLINE, or download it first with 'hf download'" if offline() else None,
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # LocalEntryNotFoundError is an EntryNotFoundError too (huggingface_hub errors.py): it is tested first above.
    if isinstance(exc, (errors.EntryNotFoundError, errors.RemoteEntryNotFoundError)):
        return DownloadError(f"{what} is not in {repo}")
    return DownloadError(f"downloading {what} from {repo} failed: {first}")


def _check_disk(size: int | None, cache: Path) -> None:
    if not size:
        return
    cache.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache).free
    if free < size + DISK_MARGIN_BYTES:
        raise DownloadError(
            f"not enough free disk in {cache}: {size / 2**30:.1f} GiB needed (+1 GiB margin), "
            f"{free / 2**30:.1f} GiB free",
            hint="free some space or point HF_HOME at a larger disk",
        )


def fetch_file(repo: str, filename: str, revision: str | None, info: Callable[[str], None]) -> Path:
    """One file of ``repo``: from the cache, else downloaded into it (after checking free disk)."""
    found = cached_file(repo, filename, revision)
    if found is not None:
        return found
    if offline():
        raise DownloadError(
            f"{filename} from {repo} is not in the Hugging Face cache ({settings.model_cache_dir()}) and "
            "HF_HUB_OFFLINE is set",
            hint="unset HF_HUB_OFFLINE, or download it first with 'hf download'",
        )
    from huggingface_hub import hf_hub_download

    cache = settings.model_cache_dir()
    try:
        dry = hf_hub_download(repo, filename, revision=revision, cache_dir=cache, dry_run=True)
        size = getattr(dry, "file_size", None)
        fresh = getattr(dry, "will_download", True)
        if fresh:
            _check_disk(size, cache)
            info(f"downloading {filename} from {repo}" + (f" ({size / 2**30:.2f} GiB)" if size else ""))
        path = Path(hf_hub_download(repo, filename, revision=revision, cache_dir=cache))
    except DownloadError:
        raise
    except Exception as exc:  # noqa: BLE001 - huggingface_hub and requests errors become one line
        raise _hub_error(repo, filename, exc) from None
    if fresh:
        verify(path, f"{filename} from {repo}", size, info)
    return path


def verify(path: Path, what: str, size: int | None, info: Callable[[str], None] = lambda _m: None) -> None:
    """Check a downloaded file against the Hub's metadata: its size (the file_size the Hub announced) and, for an
    LFS file, its SHA-256. huggingface_hub names a blob by its ETag, and the Hub's ETag of an LFS file is the
    SHA-256 of its content (huggingface_hub docs, "Manage the cache": blobs are named by their hash, SHA-256 for
    LFS files). A mismatch is a DownloadError naming the command that removes the file, so it is not reused."""
    import hashlib
    import re
    import shlex

    blob = path.resolve()
    try:
        actual = blob.stat().st_size
    except OSError as exc:
        raise DownloadError(f"{what}: cannot read the downloaded file {blob}: {exc.strerror or exc}") from None
    problem = None
    if size is not None and actual != size:
        problem = f"{actual} bytes, the Hub announced {size}"
    elif re.fullmatch(r"[0-9a-f]{64}", blob.name):
        info(f"verifying the SHA-256 of {path.name}")
        digest = hashlib.sha256()
        with blob.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
        if digest.hexdigest() != blob.name:
            problem = f"SHA-256 {digest.hexdigest()[:16]}..., the Hub's is {blob.name[:16]}..."
    if problem:
        doomed = [str(blob)] + ([str(path)] if path.is_symlink() or path != blob else [])
        raise DownloadError(f"{what} is corrupt ({problem}); it stays in the Hugging Face cache until removed",
                            hint=f"remove it with: rm -f {' '.join(shlex.quote(p) for p in doomed)}, then run again")


def fetch_snapshot(repo: str, revision: str | None, info: Callable[[str], None]) -> Path:
    """A transformers-format repository (for vLLM): config, tokenizer and weights, from the cache or the Hub."""
    from huggingface_hub import snapshot_download

    cache = settings.model_cache_dir()
    try:
        if not offline():
            info(f"fetching {repo} (config, tokenizer, weights)")
        return Path(
            snapshot_download(
                repo, revision=revision, cache_dir=cache, allow_patterns=VLLM_PATTERNS, local_files_only=offline()
            )
        )
    except Exception as exc:  # noqa: BLE001
        raise _hub_error(repo, "the model", exc) from None


def local_path(model: ModelRef) -> Path | None:
    """Where the model is on this disk without any download: its path, or for a user model added from a local file
    ('advisor catalog add PATH') the file in the directory that stands as its "repository"; else None."""
    if model.path:
        return Path(model.path).expanduser()
    if model.repo and Path(model.repo).expanduser().is_absolute():
        base = Path(model.repo).expanduser()
        return base / model.files[0] if model.files else base
    return None


def resolve(model: ModelRef, info: Callable[[str], None] = lambda _m: None) -> Path:
    """The path to hand the engine: a local file or directory, the first file of a (split) GGUF, or a snapshot
    directory. Every file of a split GGUF is fetched; llama.cpp finds the others next to the first."""
    local = local_path(model)
    if local is not None:
        return check_local(local)
    if not model.repo:
        raise ModelNotFoundError(f"model {model.id}: the plan names neither a path nor a repository")
    if not model.files:
        return fetch_snapshot(model.repo, model.revision, info)
    paths = [fetch_file(model.repo, name, model.revision, info) for name in model.files]
    return check_local(paths[0])
