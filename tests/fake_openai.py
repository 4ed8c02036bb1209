"""A tiny OpenAI-compatible server on 127.0.0.1 for executor tests: configurable readiness, a streamed reply."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAI:
    """``health``: status codes /health answers, one per request (the last repeats); ``timings``: llama-server's
    extra object in the final chunk; ``api_key``: required on /v1 paths when set."""

    def __init__(self, health: list[int] | None = None, timings: dict[str, Any] | None = None,
                 api_key: str | None = None, tokens: int = 5, models_status: int = 200,
                 done: bool = True, model: dict[str, Any] | None = None,
                 vocab: list[int] | None = None, completion_timings: Any = None,
                 token_delay: float = 0.0, per_event: int = 1) -> None:  # fmt: skip
        """``/v1/completions`` (the benchmark's requests) streams ``max_tokens`` tokens ``token_delay`` seconds
        apart, then usage (prompt tokens = the prompt's token ids) and, where ``completion_timings(body)`` gives
        them, llama-server's ``timings``; ``per_event`` tokens in each event, as vLLM may send them; ``/tokenize``
        answers ``vocab``; ``model`` adds fields to /v1/models' entry (llama-server's ``meta``, vLLM's ``max_model_len``)."""
        self.per_event = per_event
        self.model = model or {}
        self.vocab = vocab
        self.completion_timings = completion_timings
        self.token_delay = token_delay
        self.health = list(health or [200])
        self.timings = timings
        self.api_key = api_key
        self.tokens = tokens
        self.models_status = models_status
        self.done = done  # False: the stream stops without "data: [DONE]", as when the engine dies mid-answer
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                return not fake.api_key or self.headers.get("Authorization") == f"Bearer {fake.api_key}"

            def do_GET(self) -> None:  # noqa: N802
                fake.requests.append(("GET", self.path, dict(self.headers), None))
                if self.path == "/health":
                    status = fake.health.pop(0) if len(fake.health) > 1 else fake.health[0]
                    self._send(status, {"status": "ok"} if status == 200 else {"error": {"message": "Loading model"}})
                elif self.path == "/v1/models":
                    if not self._authorized():
                        self._send(401, {"error": "unauthorized"})
                    else:
                        self._send(fake.models_status, {"data": [{"id": "tiny", "object": "model", **fake.model}]})
                else:
                    self._send(404, {"detail": "Not Found"})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(("POST", self.path, dict(self.headers), body))
                if not self._authorized():
                    self._send(401, {"error": "unauthorized"})
                    return
                if self.path == "/tokenize":
                    self._send(200 if fake.vocab else 404, {"tokens": fake.vocab or []})
                    return
                if self.path == "/v1/completions":
                    self._complete(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for i in range(fake.tokens):
                    chunk = {"choices": [{"index": 0, "delta": {"content": f"t{i} "}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                final: dict[str, Any] = {"choices": [], "usage": {"completion_tokens": fake.tokens}}
                if fake.timings:
                    final["timings"] = fake.timings
                end = "data: [DONE]\n\n" if fake.done else ""
                self.wfile.write(f"data: {json.dumps(final)}\n\n{end}".encode())

            def _complete(self, body: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                n = int(body.get("max_tokens") or fake.tokens)
                n_in = len(body.get("prompt") or [])
                for i in range(0, n, fake.per_event):
                    time.sleep(fake.token_delay)
                    k = min(fake.per_event, n - i)
                    chunk = {"choices": [{"index": 0, "text": "t " * k}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                usage = {"prompt_tokens": n_in, "completion_tokens": n}
                final: dict[str, Any] = {"choices": [], "usage": usage}
                if fake.completion_timings:
                    final["timings"] = fake.completion_timings(body)
                end = "data: [DONE]\n\n" if fake.done else ""
                self.wfile.write(f"data: {json.dumps(final)}\n\n{end}".encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
