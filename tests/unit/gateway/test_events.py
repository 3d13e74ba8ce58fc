"""The console's event bus and SSE framing: bounded queues, slow subscribers dropped, keep-alives."""

from __future__ import annotations

import asyncio
import json

import pytest

from services.gateway.events import (
    KEEPALIVE_COMMENT,
    ConsoleEvent,
    EventBus,
    EventKind,
    TooManySubscribers,
    sse_stream,
)

JOINED = ConsoleEvent(EventKind.PEER_JOINED, {"node_id": "abc", "name": "b"})


def parse_sse(chunk: bytes) -> tuple[str, dict]:
    fields = dict(line.split(": ", 1) for line in chunk.decode().strip().splitlines())
    return fields["event"], json.loads(fields["data"])


def test_an_event_is_one_typed_sse_message() -> None:
    kind, data = parse_sse(JOINED.encode())
    assert kind == "peer_joined"
    assert data == {"node_id": "abc", "name": "b"}
    assert JOINED.encode().endswith(b"\n\n")


async def test_every_subscriber_gets_every_event() -> None:
    bus = EventBus()
    first, second = bus.subscribe(), bus.subscribe()
    bus.publish(JOINED)
    assert await first.next(1.0) == JOINED
    assert await second.next(1.0) == JOINED


async def test_a_slow_subscriber_is_dropped_and_never_blocks_the_publisher() -> None:
    bus = EventBus(queue_max_events=4)
    slow, fast = bus.subscribe(), bus.subscribe()
    for _ in range(4):
        bus.publish(JOINED)
        await fast.next(1.0)
    bus.publish(JOINED)  # the fifth event overflows the slow queue: publish returns at once
    assert slow.dropped and not fast.dropped
    assert bus.dropped_total == 1
    bus.publish(JOINED)
    assert await fast.next(1.0) == JOINED


async def test_the_subscriber_limit_is_enforced() -> None:
    bus = EventBus(max_subscribers=1)
    bus.subscribe()
    with pytest.raises(TooManySubscribers):
        bus.subscribe()


async def test_first_subscriber_callback_runs_once_per_idle_period() -> None:
    bus = EventBus()
    calls: list[int] = []
    bus.on_first_subscriber(lambda: calls.append(1))
    first = bus.subscribe()
    bus.subscribe()
    assert calls == [1]
    bus.close()
    del first
    bus.subscribe()
    assert calls == [1, 1]


async def test_stream_sends_snapshot_then_events_then_keepalives() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    snapshot = ConsoleEvent(EventKind.SNAPSHOT, {"node_id": "me"})
    stream = sse_stream(bus, subscription, snapshot, keepalive_s=0.05)
    head = await anext(stream)
    assert head.startswith(b"retry: ") and b"event: snapshot" in head
    bus.publish(JOINED)
    assert await anext(stream) == JOINED.encode()
    assert await anext(stream) == KEEPALIVE_COMMENT
    await stream.aclose()
    assert not bus.has_subscribers


async def test_a_dropped_subscriber_stream_ends() -> None:
    bus = EventBus(queue_max_events=1)
    subscription = bus.subscribe()
    stream = sse_stream(bus, subscription, JOINED, keepalive_s=10)
    await anext(stream)
    bus.publish(JOINED)
    bus.publish(JOINED)  # overflow: dropped
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(stream), 1.0)


async def test_close_ends_every_stream_promptly() -> None:
    bus = EventBus()
    stream = sse_stream(bus, bus.subscribe(), JOINED, keepalive_s=10)
    await anext(stream)
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    bus.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 1.0)
