"""One admitted peer: its control stream (pings, gossip, goodbye) and how to open data streams to it.

A link is direct (its own QUIC connection) or relayed (every stream goes through another peer's
link as a RELAY stream). Liveness: any frame from the peer counts as heard; a peer silent for
PEER_DEAD_AFTER_S is closed and reported gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from services.mesh.admission import AdmittedPeer
from services.mesh.frames import FrameError, encode_frame, stream_open_frame
from services.mesh.handshake import ControlReader
from services.proto.meshllm.mesh.v1 import wire_pb2

logger = logging.getLogger("mesh.link")

PING_INTERVAL_S = 1.0
PEER_DEAD_AFTER_S = 3.5
SILENCE_CHECK_S = 0.25
RTT_SMOOTHING = 0.3

StreamPair = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class LinkEvents:
    """What a link reports upward (to the endpoint)."""

    on_frame: Callable[[PeerLink, wire_pb2.WireFrame], Awaitable[None]]
    on_closed: Callable[[PeerLink, str], None]


@dataclass(eq=False)
class PeerLink:
    peer: AdmittedPeer
    local_node_id: str
    control_reader: ControlReader
    control_writer: asyncio.StreamWriter
    # Direct: opens a raw QUIC stream on this link's connection. Relayed: None (see `via`).
    open_raw_stream: Callable[[], Awaitable[StreamPair]] | None
    via: PeerLink | None = None
    dialed_by: str = ""
    address: str = ""
    rtt_ms: float = 0.0
    connected_at: float = field(default_factory=time.time)
    last_heard: float = field(default_factory=time.monotonic)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_reason: str = ""
    said_goodbye: bool = False
    broke_protocol: bool = False  # closed because the peer sent what the protocol forbids
    _ping_sent: dict[int, float] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _close_connection: Callable[[], None] | None = None

    @property
    def node_id(self) -> str:
        return self.peer.node_id

    @property
    def is_relayed(self) -> bool:
        return self.via is not None

    def start(self, events: LinkEvents, close_connection: Callable[[], None] | None) -> None:
        self._close_connection = close_connection
        self._tasks = [
            asyncio.ensure_future(self._read_control(events)),
            asyncio.ensure_future(self._ping_and_watch()),
        ]
        self._events = events

    async def open_stream(self, kind: int) -> StreamPair:
        """A data stream of `kind` to this peer, its StreamOpen already written."""
        if self.closed.is_set():
            raise ConnectionError(f"peer {self.node_id[:8]} is gone")
        if self.via is not None:
            reader, writer = await self.via.open_raw()
            writer.write(
                stream_open_frame(wire_pb2.STREAM_KIND_RELAY, self.local_node_id, self.node_id, kind)
            )
            return reader, writer
        reader, writer = await self.open_raw()
        writer.write(stream_open_frame(kind, self.local_node_id))
        return reader, writer

    async def open_raw(self) -> StreamPair:
        if self.open_raw_stream is None:
            raise ConnectionError("relayed links have no connection of their own")
        return await self.open_raw_stream()

    def send(self, frame: wire_pb2.WireFrame) -> None:
        if not self.closed.is_set():
            self.control_writer.write(encode_frame(frame))

    async def _read_control(self, events: LinkEvents) -> None:
        reason = "connection closed"
        try:
            while True:
                frame = await self.control_reader.next()
                self.last_heard = time.monotonic()
                await self._handle(frame, events)
        except FrameError as exc:
            self.broke_protocol = True
            reason = f"protocol error: {exc}"
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            reason = f"connection lost: {exc or type(exc).__name__}"
        self.close(reason)

    async def _handle(self, frame: wire_pb2.WireFrame, events: LinkEvents) -> None:
        kind = frame.WhichOneof("body")
        if kind == "ping":
            self.send(wire_pb2.WireFrame(pong=wire_pb2.Pong(seq=frame.ping.seq)))
        elif kind == "pong":
            sent = self._ping_sent.pop(frame.pong.seq, None)
            if sent is not None:
                sample = (time.monotonic() - sent) * 1000
                self.rtt_ms = (
                    sample if not self.rtt_ms else self.rtt_ms + RTT_SMOOTHING * (sample - self.rtt_ms)
                )
        elif kind == "goodbye":
            self.said_goodbye = True
            self.close(f"left: {frame.goodbye.reason}" if frame.goodbye.reason else "left")
        else:
            await events.on_frame(self, frame)

    async def _ping_and_watch(self) -> None:
        seq = 0
        next_ping = time.monotonic()
        while not self.closed.is_set():
            now = time.monotonic()
            if now >= next_ping:
                seq += 1
                self._ping_sent = {s: t for s, t in self._ping_sent.items() if s > seq - 10}
                self._ping_sent[seq] = now
                self.send(wire_pb2.WireFrame(ping=wire_pb2.Ping(seq=seq)))
                next_ping = now + PING_INTERVAL_S
            # Checked more often than pinged: a dead peer is called dead within SILENCE_CHECK_S of
            # the deadline, not up to a whole ping interval later.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.closed.wait(), SILENCE_CHECK_S)
            if time.monotonic() - self.last_heard > PEER_DEAD_AFTER_S:
                self.close(f"silent for {PEER_DEAD_AFTER_S:.1f}s")

    def goodbye(self, reason: str) -> None:
        self.send(wire_pb2.WireFrame(goodbye=wire_pb2.Goodbye(reason=reason)))

    def close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        with contextlib.suppress(Exception):
            self.control_writer.close()
        if self._close_connection is not None:
            self._close_connection()
        self._events.on_closed(self, reason)
