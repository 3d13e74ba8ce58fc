"""In-process request metrics: what the request path bumps (sans-IO; the caller passes the clock).

The proxy opens one `RequestObservation` per request it sends upstream (to a local llama-server, or
through the mesh to a peer's gateway) and feeds it the status, the body chunks it relays anyway and
the end. A chunk costs a deque append (a reference, no copy): token counts come from the `timings`
object llama-server puts in its last event (or the `usage` objects of the first and last events),
parsed once at the end, so the stream is never scanned on the way through: `chunk` measured 0.3 µs
on a loaded 2-CPU box (a no-op method call 0.16 µs), where two substring checks per chunk took ~2 µs;
relaying a chunk costs ~60 µs (services/gateway/upstream.py). Scrapes only read these counters.
"""

from __future__ import annotations

import collections
import enum
import json
import re
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field

# Time to first token: loopback llama-server on a GPU answers in tens of ms, a long prompt on a CPU
# split model in tens of seconds.
TTFT_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Decode speed per request: a split 70B on CPUs does ~1 token/s, a small model on a GPU hundreds.
DECODE_BUCKETS_TOKENS_PER_S = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)
# How much of the end of a response is kept to find its token counts in (llama-server's last SSE event
# with `timings` is ~400 B; an Anthropic stream's `usage` comes in its last events).
USAGE_TAIL_BYTES = 16 * 1024
# The last event may be split over reads, and `[DONE]` follows it: a few chunks hold all of it.
TAIL_CHUNKS = 8
_TIMINGS_RE = re.compile(rb'"timings"\s*:\s*(\{[^{}]*\})')
_COUNT_RE = re.compile(rb'"(prompt_tokens|completion_tokens|input_tokens|output_tokens)"\s*:\s*(\d+)')


class Served(enum.StrEnum):
    """Where a request went from this gateway."""

    HERE = "here"  # a llama-server of this node
    FORWARDED = "forwarded"  # a peer's gateway, through the mesh


@dataclass
class Histogram:
    """Counts per bucket (not cumulative; the last one is +Inf) and the sum of observed values."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def merged(self, other: Histogram) -> Histogram:
        counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        return Histogram(self.bounds, counts, self.total + other.total)


def ttft_histogram() -> Histogram:
    return Histogram(TTFT_BUCKETS_S)


def decode_histogram() -> Histogram:
    return Histogram(DECODE_BUCKETS_TOKENS_PER_S)


@dataclass(frozen=True)
class RequestKey:
    model: str
    endpoint: str  # the API path, e.g. /v1/chat/completions
    status: int
    served: Served


@dataclass
class ModelTraffic:
    """Tokens and latency of one model's requests through this gateway."""

    tokens_in: int = 0
    tokens_out: int = 0
    ttft: Histogram = field(default_factory=ttft_histogram)
    decode: Histogram = field(default_factory=decode_histogram)


@dataclass(frozen=True)
class Usage:
    tokens_in: int
    tokens_out: int
    decode_tokens_per_s: float = 0.0  # 0: not reported


def parse_usage(tail: bytes) -> Usage | None:
    """Token counts from the end of a response: llama-server's `timings` (the last one), else the
    OpenAI/Anthropic `usage` counters. None when neither is there."""
    timings = _TIMINGS_RE.findall(tail)
    if timings:
        try:
            data = json.loads(timings[-1])
            prompt = int(data.get("prompt_n", 0)) + int(data.get("cache_n", 0))
            return Usage(prompt, int(data.get("predicted_n", 0)), float(data.get("predicted_per_second", 0)))
        except (ValueError, TypeError, AttributeError):
            pass  # a truncated or odd object: fall back to the usage counters
    counts: dict[bytes, int] = {}
    for name, value in _COUNT_RE.findall(tail):
        counts[name] = max(counts.get(name, 0), int(value))  # Anthropic repeats them as they grow
    if not counts:
        return None
    tokens_in = counts.get(b"prompt_tokens", counts.get(b"input_tokens", 0))
    return Usage(tokens_in, counts.get(b"completion_tokens", counts.get(b"output_tokens", 0)))


class RequestObservation:
    """One upstream request; `finish` is idempotent and records it."""

    def __init__(self, metrics: RequestMetrics, model: str, endpoint: str, served: Served) -> None:
        self._metrics = metrics
        self._model = model
        self._endpoint = endpoint
        self._served = served
        self._start_s = metrics.clock()
        self._first_chunk_s: float | None = None
        self._status = 0
        self._head = b""  # a stream's first chunk (Anthropic's message_start has the input tokens)
        self._last: collections.deque[bytes] = collections.deque(maxlen=TAIL_CHUNKS)
        self._chunks = 0
        self._done = False

    def response(self, status: int) -> None:
        self._status = status

    def chunk(self, data: bytes) -> None:
        """A relayed piece of a streamed body."""
        if self._first_chunk_s is None:
            self._first_chunk_s = self._metrics.clock()
            self._head = data
        self._last.append(data)
        self._chunks += 1

    def body(self, content: bytes) -> None:
        """A whole (not streamed) body."""
        self._last.append(content)
        self._chunks += 1

    def tail(self) -> bytes:
        """What token counts are looked for in: the last chunks, and the first one of a long stream."""
        tail = b"".join(self._last)[-USAGE_TAIL_BYTES:]
        return self._head[:USAGE_TAIL_BYTES] + tail if self._chunks > TAIL_CHUNKS else tail

    def finish(self) -> None:
        if self._done:
            return
        self._done = True
        usage = parse_usage(self.tail()) if self._chunks else None
        self._metrics.record(self, usage)

    @property
    def key(self) -> RequestKey:
        return RequestKey(self._model, self._endpoint, self._status, self._served)

    @property
    def ttft_s(self) -> float | None:
        """Streams only: a whole body arrives at once, its first byte is its last."""
        if self._first_chunk_s is None:
            return None
        return self._first_chunk_s - self._start_s

    def decode_s(self, now_s: float) -> float:
        return now_s - self._first_chunk_s if self._first_chunk_s is not None else 0.0


@dataclass
class RequestMetrics:
    """Counters of every request this gateway sent upstream, by model; read by scrapes."""

    requests: dict[RequestKey, int] = field(default_factory=dict)
    traffic: dict[str, ModelTraffic] = field(default_factory=dict)
    in_flight: int = 0
    clock: Callable[[], float] = time.monotonic

    def begin(self, model: str, endpoint: str, served: Served) -> RequestObservation:
        self.in_flight += 1
        return RequestObservation(self, model, endpoint, served)

    def record(self, observation: RequestObservation, usage: Usage | None) -> None:
        self.in_flight -= 1
        key = observation.key
        self.requests[key] = self.requests.get(key, 0) + 1
        traffic = self.traffic.setdefault(key.model, ModelTraffic())
        ttft_s = observation.ttft_s
        if ttft_s is not None and key.status < 400:
            traffic.ttft.observe(ttft_s)
        if usage is None:
            return
        traffic.tokens_in += usage.tokens_in
        traffic.tokens_out += usage.tokens_out
        speed = usage.decode_tokens_per_s
        if not speed and usage.tokens_out > 1:
            decode_s = observation.decode_s(self.clock())
            speed = (usage.tokens_out - 1) / decode_s if decode_s > 0 else 0.0
        if speed > 0:
            traffic.decode.observe(speed)
