"""Speed measured through a running engine's OpenAI-compatible API (llama-server, vLLM), like llama-bench's pp and
tg tests: one streamed ``/v1/completions`` request per test, its prompt given as token ids (so its length is exact
and no chat template is added) drawn at random from what the engine's own ``/tokenize`` returns for plain words.

- with the engine's own timings where it sends them (llama-server: ``timings.prompt_per_second`` and
  ``predicted_per_second`` in the last stream event, tools/server/server-common.cpp ``server_slot_stats::to_json``);
- else from whole-request times, as llama-bench times whole tests (tools/llama-bench/llama-bench.cpp, ``test_prompt``
  and ``test_gen``): prefill = prompt tokens / the time of a request generating one token; decode = tokens / the time
  of a request with a one-token prompt; decode at depth = the extra tokens / the extra time of the same prompt
  generating more. Event arrival times are not used: vLLM's API server may send many tokens in one event when its
  process gets the CPU late (a tiny model on a loaded CPU read 130 to 129 000 tokens/s from event times);
- generation runs to ``max_tokens`` with ``ignore_eos`` (llama-server: tools/server/server-schema.cpp; vLLM:
  ``CompletionRequest.ignore_eos`` in vllm/entrypoints/openai/completion/protocol.py), counted by the engine's
  ``usage.completion_tokens``;
- llama-server's prompt cache is off (``cache_prompt``, server-schema.cpp) and every prompt is a fresh random draw,
  so no request reuses an earlier one's KV cache (vLLM's prefix cache matches from the first token only).

The HTTP calls go through ``BenchSeams`` so that tests drive every path against a fake server.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from advisor.plan import LLAMA_SERVER
from advisor.runner.check import CHECK_TIMEOUT_S, CheckError, stream_chat

#: Plain words to tokenize: each prompt is a random draw from their token ids (common words are mostly single
#: tokens in BPE and SentencePiece vocabularies; none is a special token).
WORDS = ("the of and to in is was for on that with as by at from his her it an are this which be or had not but "
         "one all were they she he we you there been has have their more when who will would time new after first "
         "people water river city house world music story light morning garden window table paper number sound "
         "mountain country school family between under never always little small large great other about over")

Post = Callable[[str, Mapping[str, Any], Mapping[str, str], float], tuple[int, str]]


def post_json(url: str, body: Mapping[str, Any], headers: Mapping[str, str], timeout: float) -> tuple[int, str]:
    """POST JSON, never through a proxy (HTTP_PROXY must not capture 127.0.0.1); raises OSError when nothing
    answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, json.dumps(body).encode(), {**headers, "Content-Type": "application/json"})
    try:
        with opener.open(req, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from None


@dataclass
class BenchSeams:
    post: Post = post_json
    stream: Callable[..., Iterator[tuple[float, dict[str, Any]]]] = stream_chat
    clock: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class Timed:
    """One request: tokens in and out, its whole time, and the engine's own speeds where it sent them."""

    prompt_tokens: int
    gen_tokens: int
    seconds: float
    engine_prefill: float | None = None
    engine_decode: float | None = None

    @property
    def prefill(self) -> float | None:
        """Prompt tokens/s: the engine's, else of a request that generated one token (its time is the prompt's)."""
        if self.engine_prefill:
            return self.engine_prefill
        return self.prompt_tokens / self.seconds if self.seconds > 0 and self.gen_tokens <= 1 else None

    @property
    def decode(self) -> float | None:
        """Generated tokens/s: the engine's, else of a request with a one-token prompt."""
        if self.engine_decode:
            return self.engine_decode
        return self.gen_tokens / self.seconds if self.seconds > 0 and self.prompt_tokens <= 1 else None


def decode_at_depth(short: Timed, long: Timed) -> float | None:
    """Tokens/s generated after a deep prompt: the engine's, else the extra tokens of ``long`` over ``short`` (the
    same prompt length) in the extra time."""
    if long.engine_decode:
        return long.engine_decode
    extra, dt = long.gen_tokens - short.gen_tokens, long.seconds - short.seconds
    return extra / dt if extra > 0 and dt > 0 else None


@dataclass
class Server:
    """The engine being measured: its name (advisor.engines), base URL, model name and context per request."""

    engine: str
    url: str
    model: str | None = None
    n_ctx: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    pool: list[int] = field(default_factory=list)


def describe(server: Server, models: Mapping[str, Any]) -> None:
    """Fill the model name and context of a request from ``/v1/models``: vLLM's ``max_model_len``, llama-server's
    ``meta.n_ctx`` (the context of one slot: tools/server/server-context.cpp, the models route)."""
    try:
        first = models["data"][0]
    except (KeyError, IndexError, TypeError):
        return
    server.model = first.get("id") if isinstance(first.get("id"), str) else None
    meta = first.get("meta") if isinstance(first.get("meta"), dict) else {}
    n_ctx = first.get("max_model_len") or meta.get("n_ctx")
    server.n_ctx = int(n_ctx) if isinstance(n_ctx, int) and n_ctx > 0 else None


def token_pool(server: Server, seams: BenchSeams) -> list[int]:
    """Token ids of ``WORDS`` as the engine tokenizes them (llama-server: ``content``; vLLM: ``prompt``)."""
    body: dict[str, Any] = ({"content": WORDS, "add_special": False} if server.engine == LLAMA_SERVER
                            else {"prompt": WORDS, "add_special_tokens": False})
    if server.model and server.engine != LLAMA_SERVER:
        body["model"] = server.model
    try:
        status, text = seams.post(f"{server.url}/tokenize", body, server.headers, 30.0)
        tokens = json.loads(text).get("tokens") if status == 200 else None
    except (OSError, ValueError, AttributeError) as exc:
        raise CheckError(f"/tokenize failed: {exc}") from None
    ids = [t for t in tokens or [] if isinstance(t, int) and not isinstance(t, bool)]
    if not ids:
        raise CheckError(f"/tokenize answered {status} without token ids: {text[:200]}")
    return sorted(set(ids))


def _request(server: Server, prompt: list[int], max_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
                            "stream": True, "stream_options": {"include_usage": True}}
    if server.model:
        body["model"] = server.model
    if server.engine == LLAMA_SERVER:
        body["cache_prompt"] = False
    return body


def timed(server: Server, n_prompt: int, max_tokens: int, rng: random.Random, seams: BenchSeams) -> Timed:
    """One streamed completion of a random ``n_prompt``-token prompt, generating ``max_tokens``."""
    prompt = [rng.choice(server.pool) for _ in range(n_prompt)]
    t0 = seams.clock()
    events = 0
    usage: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    stream = seams.stream(f"{server.url}/v1/completions", _request(server, prompt, max_tokens), server.headers,
                          CHECK_TIMEOUT_S)
    for _, event in stream:
        if isinstance(event.get("error"), dict):
            raise CheckError(f"the engine answered an error: {event['error'].get('message')}")
        events += 1 if event.get("choices") else 0
        usage = event.get("usage") or usage
        timings = event.get("timings") or timings
    seconds = seams.clock() - t0
    if not events:
        raise CheckError("the engine answered the benchmark request with no tokens")
    n_in = int(timings.get("prompt_n") or usage.get("prompt_tokens") or n_prompt)
    n_out = int(usage.get("completion_tokens") or timings.get("predicted_n") or events)
    pre, dec = timings.get("prompt_per_second"), timings.get("predicted_per_second")
    return Timed(n_in, n_out, seconds, float(pre) if pre else None, float(dec) if dec and n_out > 1 else None)
