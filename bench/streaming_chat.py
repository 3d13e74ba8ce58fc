"""One streaming chat completion, timed the same way by every bench that compares two paths."""

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


def timed_stream(client: httpx.Client, url: str, model: str, prompt: str, max_tokens: int) -> StreamTiming:
    """POST a streaming chat completion to `url`; retried once if a keep-alive connection was closed
    just as the request went out (llama-server's cpp-httplib does that now and then; the request never
    started, so sending it again is safe)."""
    try:
        return _timed_stream_once(client, url, model, prompt, max_tokens)
    except httpx.RemoteProtocolError:
        return _timed_stream_once(client, url, model, prompt, max_tokens)


def _timed_stream_once(
    client: httpx.Client, url: str, model: str, prompt: str, max_tokens: int
) -> StreamTiming:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,  # llama.cpp extension: every answer has the same length
        "stream": True,
    }
    arrivals: list[float] = []
    server_speed = 0.0
    started = time.perf_counter()
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[len("data: ") :])
            choices = event.get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                arrivals.append(time.perf_counter())
            server_speed = event.get("timings", {}).get("predicted_per_second", server_speed)
    decode_s = arrivals[-1] - arrivals[0]
    return StreamTiming(arrivals[0] - started, len(arrivals), (len(arrivals) - 1) / decode_s, server_speed)
