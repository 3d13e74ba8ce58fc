"""The console's live events: typed events, a small asyncio pub/sub, and their Server-Sent Events form.

Publishing never waits: each subscriber has a bounded queue, and one that falls that far behind is dropped
(its stream ends; the browser's EventSource reconnects and starts again from a fresh snapshot). So a slow
or stuck browser costs the gateway a few hundred queued events at most and never delays a watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

# A burst of this many events (a mesh forming, a plan reshuffle) fits in any subscriber's queue.
SUBSCRIBER_QUEUE_MAX_EVENTS = 256
# Each open console tab is one subscriber; more than this is a bug or an abuse, not a user.
MAX_SUBSCRIBERS = 64
# Proxies and browsers drop idle connections after 30-60 s; a comment line keeps the stream open.
KEEPALIVE_INTERVAL_S = 15.0
KEEPALIVE_COMMENT = b": keep-alive\n\n"
# How long a browser waits before reconnecting after the stream ends (the SSE `retry:` field).
RECONNECT_DELAY_MS = 1000


class EventKind(enum.StrEnum):
    SNAPSHOT = "snapshot"  # the whole /api/status, first on every stream
    PEER_JOINED = "peer_joined"
    PEER_LEFT = "peer_left"
    PEER_UPDATED = "peer_updated"  # RTT, VRAM, models on disk or served changed
    NODE_UPDATED = "node_updated"  # this node's own record changed
    PLAN_CHANGED = "plan_changed"
    MODEL_READY = "model_ready"
    MODEL_STATE = "model_state"
    REQUEST_RATE = "request_rate"
    POOL_CHANGED = "pool_changed"  # the pool per model (servers, candidates, demand) changed
    POOL_EVENT = "pool_event"  # a node took a model up or gave one back (promoted, retired, ...)
    TRANSFER_PROGRESS = "transfer_progress"  # a node's model-file fetches moved (or ended: empty)
    LOG = "log"


@dataclass(frozen=True)
class ConsoleEvent:
    kind: EventKind
    data: dict[str, Any]

    def encode(self) -> bytes:
        """One SSE message: `event:` names the kind, `data:` is one line of JSON."""
        payload = json.dumps(self.data, separators=(",", ":"), default=str)
        return f"event: {self.kind.value}\ndata: {payload}\n\n".encode()


# Put on a closed subscriber's queue only to wake its reader, which then sees `dropped` and ends.
_WAKE_UP = ConsoleEvent(EventKind.LOG, {})


class TooManySubscribers(Exception):
    """MAX_SUBSCRIBERS streams are open already."""


class Subscription:
    """One consumer's queue; `dropped` once it fell SUBSCRIBER_QUEUE_MAX_EVENTS behind."""

    def __init__(self, max_events: int = SUBSCRIBER_QUEUE_MAX_EVENTS) -> None:
        self.queue: asyncio.Queue[ConsoleEvent] = asyncio.Queue(max_events)
        self.dropped = False

    async def next(self, timeout_s: float) -> ConsoleEvent | None:
        """The next event, or None when none came within `timeout_s`."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout_s)
        except TimeoutError:
            return None


class EventBus:
    """Fan-out to every subscriber; `publish` is synchronous and never blocks."""

    def __init__(
        self, max_subscribers: int = MAX_SUBSCRIBERS, queue_max_events: int = SUBSCRIBER_QUEUE_MAX_EVENTS
    ) -> None:
        self._subscribers: list[Subscription] = []
        self._max_subscribers = max_subscribers
        self._queue_max_events = queue_max_events
        self._on_first_subscriber: list[Callable[[], None]] = []
        self.dropped_total = 0

    @property
    def has_subscribers(self) -> bool:
        return bool(self._subscribers)

    def on_first_subscriber(self, callback: Callable[[], None]) -> None:
        """Called when the bus goes from no subscribers to one (a feed primes its diff baseline)."""
        self._on_first_subscriber.append(callback)

    def subscribe(self) -> Subscription:
        if len(self._subscribers) >= self._max_subscribers:
            raise TooManySubscribers(f"{self._max_subscribers} event streams are open already")
        if not self._subscribers:
            for callback in self._on_first_subscriber:
                callback()
        subscription = Subscription(self._queue_max_events)
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    def close(self) -> None:
        """End every stream now (shutdown): a stream would otherwise hold uvicorn's graceful drain."""
        for subscription in self._subscribers:
            subscription.dropped = True
            with contextlib.suppress(asyncio.QueueFull):  # a full queue wakes its reader anyway
                subscription.queue.put_nowait(_WAKE_UP)
        self._subscribers.clear()

    def publish(self, event: ConsoleEvent) -> None:
        for subscription in list(self._subscribers):
            try:
                subscription.queue.put_nowait(event)
            except asyncio.QueueFull:
                # The consumer sees `dropped` as soon as it reads again: its queue is full.
                subscription.dropped = True
                self._subscribers.remove(subscription)
                self.dropped_total += 1


async def sse_stream(
    bus: EventBus,
    subscription: Subscription,
    first: ConsoleEvent,
    keepalive_s: float = KEEPALIVE_INTERVAL_S,
) -> AsyncIterator[bytes]:
    """The bytes of one `/api/events` response: the snapshot, then events and keep-alive comments.

    Ends when the subscriber was dropped for being slow; the caller's `finally` (and Starlette's
    disconnect handling, which cancels this generator) release the subscription.
    """
    try:
        yield f"retry: {RECONNECT_DELAY_MS}\n\n".encode() + first.encode()
        while not subscription.dropped:
            event = await subscription.next(keepalive_s)
            if subscription.dropped:
                break
            yield KEEPALIVE_COMMENT if event is None else event.encode()
    finally:
        bus.unsubscribe(subscription)
