"""The test prompt: one streamed chat completion against the OpenAI-compatible API every engine serves, timed (time
to first token, tokens/s) and checked (tokens came, the stream ended with ``[DONE]``)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from advisor.engines import Http

#: The smoke test: deterministic, short (the request sets temperature 0, which wins over the engine's defaults).
TEST_PROMPT = "Say OK"
TEST_MAX_TOKENS = 16
#: Seconds the test request may stay silent (the first request on a CPU vLLM compiles kernels; measured here
#: as the slowest step, tens of seconds for a tiny model).
CHECK_TIMEOUT_S = 120.0


class CheckSeams(Protocol):
    """The part of advisor.runner.seams.Seams the check uses."""

    http: Http
    stream: Callable[..., Iterator[tuple[float, dict[str, Any]]]]
    clock: Callable[[], float]


class CheckError(Exception):
    """The test request failed (HTTP error, broken stream)."""


def stream_chat(
    url: str, body: Mapping[str, Any], headers: Mapping[str, str], timeout: float
) -> Iterator[tuple[float, dict[str, Any]]]:
    """POST a streamed chat completion; yield (arrival time, chunk) for each server-sent ``data:`` event."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        conn.request("POST", parts.path, json.dumps(body), {**headers, "Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            text = response.read().decode("utf-8", "replace").strip()
            raise CheckError(f"{parts.path} answered {response.status}: {text[:300]}")
        for raw in response:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                yield time.monotonic(), json.loads(data)
            except json.JSONDecodeError:
                raise CheckError(f"the engine sent a malformed stream event: {data[:200]}") from None
        # OpenAI-compatible servers end every stream with "data: [DONE]" (llama-server, llama-cpp-python's
        # sse-starlette stream, vLLM): a stream that stops without it is an engine that died mid-answer.
        raise CheckError("the answer stream ended before [DONE] (did the engine crash?)")
    except (OSError, http.client.HTTPException) as exc:
        raise CheckError(f"the test request failed: {exc}") from None
    finally:
        conn.close()


@dataclass
class CheckResult:
    ttft_s: float | None
    latency_s: float
    completion_tokens: int | None
    tokens_per_s: float | None
    text: str
    tokens_per_s_source: str | None = None  # engine (its own timings) | client (measured from the stream)


def check(url: str, headers: Mapping[str, str], seams: CheckSeams) -> CheckResult:
    """One streamed chat request: time to first token, latency, tokens and tokens/s (the engine's own ``timings``
    where it sends them, as llama-server does; else measured between the first and the last token)."""
    status, body = seams.http.get(f"{url}/v1/models", headers, 5.0)
    try:
        model = json.loads(body)["data"][0]["id"] if status == 200 else None
    except (ValueError, KeyError, IndexError, TypeError):
        model = None
    request: dict[str, Any] = {
        "messages": [{"role": "user", "content": TEST_PROMPT}],
        "max_tokens": TEST_MAX_TOKENS,
        "temperature": 0,  # deterministic: a request's own sampling overrides the engine's defaults (plan.sampling)
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if model:
        request["model"] = model
    t0 = seams.clock()
    first: float | None = None
    last: float | None = None
    pieces: list[str] = []
    usage: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    for _, chunk in seams.stream(f"{url}/v1/chat/completions", request, headers, CHECK_TIMEOUT_S):
        now = seams.clock()
        if isinstance(chunk.get("error"), dict):
            raise CheckError(f"the engine answered an error: {chunk['error'].get('message')}")
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content = delta.get("content") or delta.get("reasoning_content") or ""
            if content:
                first = now if first is None else first
                last = now
                pieces.append(content)
        usage = chunk.get("usage") or usage
        timings = chunk.get("timings") or timings
    end = seams.clock()
    tokens = usage.get("completion_tokens") or timings.get("predicted_n") or (len(pieces) or None)
    if not tokens and not pieces:
        raise CheckError("the engine answered the test prompt with no tokens")
    rate, source = None, None
    if timings.get("predicted_per_second"):
        rate, source = float(timings["predicted_per_second"]), "engine"
    elif tokens and tokens > 1 and first is not None and last is not None and last > first:
        rate, source = (tokens - 1) / (last - first), "client"  # decode rate after the first token
    return CheckResult(
        ttft_s=None if first is None else round(first - t0, 4),
        latency_s=round(end - t0, 4),
        completion_tokens=tokens,
        tokens_per_s=None if rate is None else round(rate, 2),
        text="".join(pieces),
        tokens_per_s_source=source,
    )
