"""Pre-armed RPC paths: a split host opens its next tunnel connections to a worker before llama-server asks.

Setting up one tunnel connection takes about three round trips (RpcOpen → RpcOffer on a QUIC
stream, then TCP and TLS to the worker's fast path, where the ticket rides with the client's
Finished), and llama-server opens its RPC connections one after another, about a dozen per model
load: at 20 ms RTT that alone added ~0.7 s to a load. So a host keeps ARMED_PER_WORKER paths per
(worker, model) ready (set up exactly as a live connection would be: the same ticket, single use
and expiring, the same check of the worker's node key), from the moment its tunnel listener
exists; a llama-server connection takes one and starts at once, and a new one is armed behind it.

A ready path carries no bytes until llama-server's first request, and the worker connects it to
its rpc-server only then (rpc_tunnel.py): an rpc-server serves one client at a time, and an idle
armed path must never hold it. One idle for ARMED_IDLE_S is closed and armed again, so a path
that a NAT or a restarted worker may have cut is never handed to llama-server (a dead RPC
connection aborts llama-server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.mesh.link import PeerLink, StreamPair

logger = logging.getLogger("mesh.rpc")

# llama-server's RPC connections come one at a time, each at least one round trip (HELLO) long,
# and arming one takes about three: three ready paths keep ahead of a load's run of connections.
ARMED_PER_WORKER = 3
# Well inside the idle timeouts of NATs and firewalls for TCP (minutes); re-arming costs a few
# round trips per path.
ARMED_IDLE_S = 30.0

# The worker's side waits this long for an armed path's first request, past the host's re-arming.
FIRST_REQUEST_WAIT_S = 2 * ARMED_IDLE_S
READ_BYTES = 256 * 1024

OpenPath = Callable[[PeerLink, str], Awaitable[tuple[StreamPair, bool, str]]]


async def first_request(reader: asyncio.StreamReader, server_gone: asyncio.Event) -> bytes:
    """The worker's side: the first bytes of a path, b\"\" if the host closed it or never used it,
    or the rpc-server it was offered for went away first (the host must not answer for it)."""
    read = asyncio.ensure_future(reader.read(READ_BYTES))
    gone = asyncio.ensure_future(server_gone.wait())
    try:
        await asyncio.wait({read, gone}, timeout=FIRST_REQUEST_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        unread = not read.done()
        if unread:
            read.cancel()
    if unread or read.cancelled() or read.exception() is not None:
        return b""
    return read.result()


@dataclass(eq=False)
class ArmedPath:
    link: PeerLink
    pair: StreamPair
    fast: bool  # on the TLS fast path (else the QUIC stream it was offered on)
    instance: str  # the worker's rpc-server process it leads to (RpcOffer.server_instance)
    expiry: asyncio.TimerHandle | None = None

    def usable(self) -> bool:
        """Neither side closed it (a worker sends nothing before a request)."""
        reader, writer = self.pair
        return not (writer.is_closing() or reader.at_eof() or self.link.closed.is_set())

    def close(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
        with contextlib.suppress(Exception):
            self.pair[1].close()


class ArmedPaths:
    """The ready paths of every (worker, model) this node hosts a split with."""

    def __init__(
        self, open_path: OpenPath, size: int = ARMED_PER_WORKER, idle_s: float = ARMED_IDLE_S
    ) -> None:
        self._open_path = open_path
        self._size = size
        self._idle_s = idle_s
        self._ready: dict[tuple[str, str], list[ArmedPath]] = {}
        self._arming: dict[tuple[str, str], set[asyncio.Task[None]]] = {}

    def ready(self, peer_id: str, model: str) -> int:
        """How many paths to `peer_id`'s worker for `model` are ready now."""
        return sum(1 for path in self._ready.get((peer_id, model), []) if path.usable())

    def take(self, link: PeerLink, model: str) -> ArmedPath | None:
        """A ready path to `link`'s worker for `model` (None: none ready), and another armed behind it."""
        key = (link.node_id, model)
        ready = self._ready.get(key, [])
        found = None
        while ready and found is None:
            path = ready.pop(0)
            if path.link is link and path.usable():
                found = path
                if path.expiry is not None:
                    path.expiry.cancel()
            else:
                path.close()
        self.arm(link, model)
        return found

    def arm(self, link: PeerLink, model: str) -> None:
        """Arm paths until `size` are ready or being set up."""
        if link.closed.is_set() or self._size <= 0:
            return
        key = (link.node_id, model)
        arming = self._arming.setdefault(key, set())
        for _ in range(self._size - len(self._ready.get(key, [])) - len(arming)):
            task = asyncio.ensure_future(self._arm_one(link, model))
            arming.add(task)
            task.add_done_callback(arming.discard)

    async def _arm_one(self, link: PeerLink, model: str) -> None:
        try:
            pair, fast, instance = await self._open_path(link, model)
        except (ConnectionError, OSError, TimeoutError) as exc:
            # The worker's rpc-server may not be up yet: the next llama-server connection arms again.
            logger.debug("could not arm an RPC path to %s: %s", link.node_id[:8], exc)
            return
        path = ArmedPath(link, pair, fast, instance)
        key = (link.node_id, model)
        if link.closed.is_set():
            path.close()
            return
        path.expiry = asyncio.get_running_loop().call_later(self._idle_s, self._expire, key, path)
        self._ready.setdefault(key, []).append(path)

    def _expire(self, key: tuple[str, str], path: ArmedPath) -> None:
        ready = self._ready.get(key, [])
        if path in ready:
            ready.remove(path)
        path.close()
        self.arm(path.link, key[1])

    def peer_gone(self, peer_id: str) -> None:
        for key in [k for k in (self._ready.keys() | self._arming.keys()) if k[0] == peer_id]:
            for path in self._ready.pop(key, []):
                path.close()
            for task in self._arming.pop(key, set()):
                task.cancel()

    def close(self) -> None:
        for peer_id in {key[0] for key in self._ready.keys() | self._arming.keys()}:
            self.peer_gone(peer_id)
