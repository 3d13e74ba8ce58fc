"""One streaming answer, timed the same way by every bench that compares two paths: an OpenAI chat
completion, an OpenAI Responses stream or an Anthropic Messages stream (`api`), each with the same
prompt and token budget; a "delta" is one event that carries generated text."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class StreamTiming:
    ttft_s: float  # request sent → first non-empty content delta
    tokens: int  # content deltas received
    decode_tok_s: float  # (deltas − 1) / (last delta − first delta), as the client saw them
    server_decode_tok_s: float  # llama-server's own `timings.predicted_per_second`


# The path (after /v1) of each API's streaming endpoint.
API_PATHS = {"chat": "/chat/completions", "responses": "/responses", "messages": "/messages"}


def timed_stream(
    client: httpx.Client, url: str, model: str, prompt: str, max_tokens: int, api: str = "chat"
) -> StreamTiming:
    """POST a streaming request of `api` to `url`; retried once if a keep-alive connection was closed
    just as the request went out (llama-server's cpp-httplib does that now and then; the request never
    started, so sending it again is safe)."""
    try:
        return _timed_stream_once(client, url, model, prompt, max_tokens, api)
    except httpx.RemoteProtocolError:
        return _timed_stream_once(client, url, model, prompt, max_tokens, api)


def _body(api: str, model: str, prompt: str, max_tokens: int) -> dict[str, object]:
    # ignore_eos (a llama.cpp extension) keeps every answer exactly max_tokens long.
    common = {"model": model, "temperature": 0, "ignore_eos": True, "stream": True}
    if api == "responses":
        return {**common, "input": prompt, "max_output_tokens": max_tokens}
    return {**common, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}


def _text_of(api: str, event: dict) -> str:  # type: ignore[type-arg]
    if api == "responses":
        return str(event.get("delta", "")) if event.get("type") == "response.output_text.delta" else ""
    if api == "messages":
        delta = event.get("delta") or {}
        return str(delta.get("text", "")) if event.get("type") == "content_block_delta" else ""
    choices = event.get("choices") or [{}]
    return str(choices[0].get("delta", {}).get("content") or "")


def _timed_stream_once(
    client: httpx.Client, url: str, model: str, prompt: str, max_tokens: int, api: str
) -> StreamTiming:
    arrivals: list[float] = []
    server_speed = 0.0
    started = time.perf_counter()
    with client.stream("POST", url, json=_body(api, model, prompt, max_tokens)) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[len("data: ") :])
            if _text_of(api, event):
                arrivals.append(time.perf_counter())
            timings = event.get("timings") or {}
            server_speed = timings.get("predicted_per_second", server_speed)
    decode_s = arrivals[-1] - arrivals[0]
    return StreamTiming(arrivals[0] - started, len(arrivals), (len(arrivals) - 1) / decode_s, server_speed)
