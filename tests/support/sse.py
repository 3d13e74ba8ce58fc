"""A Server-Sent Events reader for tests: reads `/api/events` in a task, keeps every event it saw."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SseEvent:
    kind: str
    data: Any


@dataclass
class EventStream:
    """`async with EventStream(url) as stream:` then `await stream.wait_for(...)`."""

    url: str
    events: list[SseEvent] = field(default_factory=list)
    comments: int = 0
    content_type: str = ""
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _task: asyncio.Task[None] | None = None
    _client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> EventStream:
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(CONNECT_TIMEOUT_S, read=None))
        self._task = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    async def _read(self) -> None:
        assert self._client is not None
        async with self._client.stream("GET", self.url) as response:
            response.raise_for_status()
            self.content_type = response.headers.get("content-type", "")
            kind, data = "message", ""
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    self.comments += 1
                elif line.startswith("event:"):
                    kind = line[len("event:") :].strip()
                elif line.startswith("data:"):
                    data += line[len("data:") :].strip()
                elif not line and data:
                    await self._add(SseEvent(kind, json.loads(data)))
                    kind, data = "message", ""

    async def _add(self, event: SseEvent) -> None:
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[SseEvent], bool], timeout_s: float, what: str, start: int = 0
    ) -> SseEvent:
        """The first event from index `start` on that matches; fails the test after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        async with self._changed:
            while True:
                found = next((e for e in self.events[start:] if predicate(e)), None)
                if found is not None:
                    return found
                if self._task is not None and self._task.done():
                    self._task.result()  # the stream broke: raise why
                    raise AssertionError(f"the event stream ended before {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [e.kind for e in self.events]
                    raise AssertionError(f"no event for {what} within {timeout_s:g} s (saw {seen})")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), left)
