"""A local HTTP server that speaks the Hugging Face Hub endpoints advisor uses, so the real huggingface_hub client
code runs against it (HF_ENDPOINT points here).

Endpoints, as huggingface_hub 2.4 calls them:
- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}`` (``HfApi.model_info``, hf_api.py; with
  ``?blobs=true`` for ``files_metadata=True``): ``{"id", "sha", "siblings": [{"rfilename", "size", "blobId",
  "lfs": {"size", "sha256", "pointerSize"}}]}``;
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` (``hf_hub_url``; ``get_hf_file_metadata`` reads ``X-Repo-Commit``,
  ``ETag``/``X-Linked-Etag`` and ``Content-Length``/``X-Linked-Size``); ``GET`` honours ``Range: bytes=a-b`` with 206;
- ``GET /api/models?author=A&sort=createdAt|downloads&limit=N`` (``HfApi.list_models``): the repositories of
  author ``A`` as ``[{"id", "modelId", "createdAt", "downloads", "likes", "tags", "private"}]``, sorted by the key,
  largest first, as the Hub does; no ``Link`` header, so huggingface_hub's paginator stops after one page;
- errors carry ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound) as ``hf_raise_for_status``
  (utils/_http.py) maps them.

Every request is recorded (method, path, Range header) and the body bytes sent are counted, so tests can check that
only headers were read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclasses.dataclass
class Request:
    method: str
    path: str
    range: str | None


@dataclasses.dataclass
class FakeRepo:
    files: dict[str, Path]  # path in repo -> local file
    sha: str = "a" * 40
    created_at: str = "2025-01-01T00:00:00.000Z"
    downloads: int = 0


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[Request] = []
        self.bytes_sent = 0
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def add(self, repo: str, files: dict[str, Path], sha: str | None = None, created_at: str | None = None,
            downloads: int = 0) -> None:
        self.repos[repo] = FakeRepo(dict(files), sha or hashlib.sha1(repo.encode()).hexdigest(),
                                    created_at or "2025-01-01T00:00:00.000Z", downloads)

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bytes_sent = 0

    # -- handling ----------------------------------------------------------------------------------------------------

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              head: bool = False) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head and body:
            h.wfile.write(body)
            with self._lock:
                self.bytes_sent += len(body)

    def _error(self, h: BaseHTTPRequestHandler, code: str, head: bool) -> None:
        body = json.dumps({"error": code}).encode()
        self._send(h, 404, body, {"X-Error-Code": code, "Content-Type": "application/json"}, head)

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        url = urlsplit(h.path)
        path = unquote(url.path)
        with self._lock:
            self.requests.append(Request(h.command, path, h.headers.get("Range")))
        if path == "/api/models":
            return self._list(h, url.query, head)
        m = re.match(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$", path)
        if m:
            return self._info(h, m.group("repo"), m.group("rev"), head)
        m = re.match(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", path)
        if m:
            return self._resolve(h, m.group("repo"), m.group("rev"), m.group("file"), head)
        self._send(h, 404, b"not found", head=head)

    def _repo(self, h: BaseHTTPRequestHandler, repo: str, rev: str | None, head: bool) -> FakeRepo | None:
        r = self.repos.get(repo)
        if r is None:
            self._error(h, "RepoNotFound", head)
            return None
        if rev not in (None, "main", r.sha):
            self._error(h, "RevisionNotFound", head)
            return None
        return r

    def _info(self, h: BaseHTTPRequestHandler, repo: str, rev: str | None, head: bool) -> None:
        r = self._repo(h, repo, rev, head)
        if r is None:
            return
        siblings = []
        for name, p in sorted(r.files.items()):
            size = p.stat().st_size
            siblings.append({"rfilename": name, "size": size, "blobId": _etag(p)[:40],
                             "lfs": {"size": size, "sha256": _etag(p), "pointerSize": 134}})
        body = json.dumps({"id": repo, "modelId": repo, "sha": r.sha, "private": False,
                           "siblings": siblings}).encode()
        self._send(h, 200, body, {"Content-Type": "application/json"}, head)

    def _list(self, h: BaseHTTPRequestHandler, query: str, head: bool) -> None:
        from urllib.parse import parse_qs

        q = parse_qs(query)
        author = (q.get("author") or [""])[0]
        sort = (q.get("sort") or ["createdAt"])[0]
        limit = int((q.get("limit") or ["1000"])[0])
        mine = [(name, r) for name, r in self.repos.items() if name.split("/", 1)[0] == author]
        key = {"createdAt": lambda x: x[1].created_at, "downloads": lambda x: x[1].downloads}.get(sort)
        if key is None:
            return self._send(h, 400, b'{"error": "bad sort"}', {"Content-Type": "application/json"}, head)
        mine.sort(key=key, reverse=True)
        body = json.dumps([{"id": name, "modelId": name, "createdAt": r.created_at, "downloads": r.downloads,
                            "likes": 0, "tags": ["gguf"], "private": False} for name, r in mine[:limit]]).encode()
        self._send(h, 200, body, {"Content-Type": "application/json"}, head)

    def _resolve(self, h: BaseHTTPRequestHandler, repo: str, rev: str, name: str, head: bool) -> None:
        r = self._repo(h, repo, rev, head)
        if r is None:
            return
        p = r.files.get(name)
        if p is None:
            self._error(h, "EntryNotFound", head)
            return
        size = p.stat().st_size
        headers = {"ETag": f'"{_etag(p)}"', "X-Repo-Commit": r.sha, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        rng = h.headers.get("Range")
        if head or not rng:
            headers["Content-Length"] = str(size)
            if head:
                return self._send(h, 200, b"", headers, head=True)
            return self._send(h, 200, p.read_bytes(), headers)
        m = re.match(r"^bytes=(\d+)-(\d*)$", rng)
        if not m or int(m.group(1)) >= size:
            return self._send(h, 416, b"", {"Content-Range": f"bytes */{size}"})
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
        with p.open("rb") as fh:
            fh.seek(start)
            body = fh.read(end - start + 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send(h, 206, body, headers)

    @property
    def range_gets(self) -> list[Request]:
        return [q for q in self.requests if q.method == "GET" and "/resolve/" in q.path]


_ETAGS: dict[tuple[str, int, float], str] = {}


def _etag(p: Path) -> str:
    """The LFS sha256 (the Hub's ETag of an LFS file) for files up to 64 MiB; for larger (sparse, multi-GB) ones a
    stand-in derived from path, size and mtime, since hashing them is slow. Cached per (path, size, mtime)."""
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime)
    if key not in _ETAGS:
        if st.st_size <= 64 << 20:
            _ETAGS[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            _ETAGS[key] = hashlib.sha256(repr(key).encode()).hexdigest()
    return _ETAGS[key]


def _fixture():  # type: ignore[no-untyped-def]
    import pytest

    @pytest.fixture(name="fake_hub")
    def fake_hub_fixture(monkeypatch):  # type: ignore[no-untyped-def]
        """A started FakeHub with HF_ENDPOINT pointing at it and offline mode off (tests/conftest.py sets
        HF_HUB_OFFLINE=1); always stopped. huggingface_hub reads HF_HUB_OFFLINE once at import (constants.py), so
        the constant is patched too for in-process calls."""
        from huggingface_hub import constants

        hub = FakeHub().start()
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        try:
            yield hub
        finally:
            hub.stop()

    return fake_hub_fixture


#: Import it into a test module to use the ``fake_hub`` fixture.
fake_hub_fixture = _fixture()
