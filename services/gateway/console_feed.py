"""What feeds the console's event bus: routing-source changes, request rates and the gateway's log.

The watchers already rebuild the routing state on every gossip, runner and plan message; the feed hangs
off that (`RoutingSources.add_listener`) and diffs mesh snapshots, so the console costs no extra gRPC
call. While no browser listens it builds nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from services.gateway.event_diff import diff_snapshots
from services.gateway.events import ConsoleEvent, EventBus, EventKind
from services.gateway.mesh_summary import MeshSnapshot, mesh_snapshot
from services.gateway.sources import RoutingSources
from services.gateway.status import RequestCounters

# Rates move slowly (τ = 60 s); a browser needs no fresher figure than this.
REQUEST_RATE_EVENT_INTERVAL_S = 5.0
# The gateway's own loggers ("gateway.routing", "gateway.remote", ...) at this level and up reach the UI.
LOG_EVENT_LOGGER = "gateway"
LOG_EVENT_LEVEL = logging.INFO


class ConsoleFeed:
    """Turns routing-source changes into typed events on `bus`."""

    def __init__(self, sources: RoutingSources, counters: RequestCounters, bus: EventBus) -> None:
        self._sources = sources
        self._counters = counters
        self._bus = bus
        self._previous: MeshSnapshot | None = None
        self._last_rates: dict[str, float] = {}
        sources.add_listener(self.on_sources_changed)
        bus.on_first_subscriber(self.prime)

    def current(self) -> MeshSnapshot:
        sources = self._sources
        return mesh_snapshot(sources.view, sources.table.entries, sources.plan, sources.paths, sources.pool)

    def prime(self) -> None:
        """Take the diff baseline now: a stream's snapshot is built after this, so nothing is missed."""
        self._previous = self.current()
        self._last_rates = self._counters.rates_per_minute()

    def on_sources_changed(self) -> None:
        if not self._bus.has_subscribers:
            self._previous = None
            return
        new = self.current()
        if self._previous is not None:
            for event in diff_snapshots(self._previous, new):
                self._bus.publish(event)
        self._previous = new

    def publish_rates(self) -> None:
        rates = self._counters.rates_per_minute()
        if rates != self._last_rates and self._bus.has_subscribers:
            self._bus.publish(ConsoleEvent(EventKind.REQUEST_RATE, {"request_rate_per_min": rates}))
        self._last_rates = rates

    async def run_rates(self, interval_s: float = REQUEST_RATE_EVENT_INTERVAL_S) -> None:
        """Owned by the gateway (a watch task); cancelled with it."""
        while True:
            await asyncio.sleep(interval_s)
            self.publish_rates()


class LogEventHandler(logging.Handler):
    """Publishes log records as `log` events; safe from any thread (hops onto the bus's loop)."""

    def __init__(self, bus: EventBus, loop: asyncio.AbstractEventLoop, level: int = LOG_EVENT_LEVEL) -> None:
        super().__init__(level)
        self._bus = bus
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if not self._bus.has_subscribers:
            return
        event = ConsoleEvent(
            EventKind.LOG,
            {
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
                "time_unix_s": round(record.created, 3),
            },
        )
        if threading.get_ident() == self._loop_thread:
            self._bus.publish(event)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._bus.publish, event)


def install_log_events(bus: EventBus, logger_name: str = LOG_EVENT_LOGGER) -> LogEventHandler:
    """Attach a LogEventHandler to the gateway's logger; call on the event loop's thread."""
    handler = LogEventHandler(bus, asyncio.get_running_loop())
    logging.getLogger(logger_name).addHandler(handler)
    return handler


def remove_log_events(handler: LogEventHandler, logger_name: str = LOG_EVENT_LOGGER) -> None:
    logging.getLogger(logger_name).removeHandler(handler)
