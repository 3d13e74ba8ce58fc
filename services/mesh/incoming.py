"""Streams peers open to us: the first (control) stream runs admission, the rest are dispatched by kind
or relayed one hop to another peer. Malformed, unknown or unadmitted streams are reset, counted and
logged; the connection and the node carry on (DESIGN §3)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

from services.mesh.addresses import join_address
from services.mesh.admission import AdmissionRefused
from services.mesh.frames import FrameError, StreamOpenReader, stream_open_frame
from services.mesh.handshake import ControlReader, Credentials, admit_as_listener
from services.mesh.link import PeerLink
from services.mesh.quic import MeshQuicProtocol
from services.mesh.splice import splice
from services.proto.meshllm.mesh.v1 import wire_pb2

logger = logging.getLogger("mesh.endpoint")

STREAM_OPEN_TIMEOUT_S = 5.0
STREAM_OPEN_READ_BYTES = 64 * 1024
# A relay carries streams only to a peer it heard from this recently: one silent longer is probably
# dead, and relaying to it would delay everyone else's verdict (pings go every PING_INTERVAL_S).
RELAY_TARGET_SILENT_MAX_S = 2.0
STREAM_REFUSED_ERROR = 0x10

# (source node id, bytes already read after StreamOpen, reader, writer)
StreamHandler = Callable[[str, bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class IncomingStreams(ABC):
    """The accepting half of MeshEndpoint (which provides the state declared here)."""

    credentials: Credentials
    links: dict[str, PeerLink]
    refused_count: int
    dropped_streams: int
    _stream_handlers: dict[int, StreamHandler]
    _link_of: dict[MeshQuicProtocol, PeerLink]

    @property
    @abstractmethod
    def node_id(self) -> str: ...

    @abstractmethod
    def _spawn(self, coroutine: Awaitable[None]) -> None: ...

    @abstractmethod
    def _add_link(self, link: PeerLink, protocol: MeshQuicProtocol | None) -> None: ...

    @abstractmethod
    def admitted_frame(self, observed_address: str = "") -> wire_pb2.Admitted: ...

    def _drop_stream(
        self, writer: asyncio.StreamWriter, reason: str, carrier: PeerLink | None = None
    ) -> None:
        """Malformed, oversized or unknown: reset that stream only (not its connection), count it, say why."""
        self.dropped_streams += 1
        extra = {"reason": reason, "dropped_total": self.dropped_streams}
        if carrier is not None:
            extra["peer"] = carrier.node_id[:8]
        logger.warning("dropped a stream", extra=extra)
        reset_stream(writer)

    def _on_stream(
        self, protocol: MeshQuicProtocol, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._spawn(self._handle_stream(protocol, reader, writer))

    async def _handle_stream(
        self, protocol: MeshQuicProtocol, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            opened, initial = await asyncio.wait_for(_read_stream_open(reader), STREAM_OPEN_TIMEOUT_S)
        except (FrameError, ConnectionError, TimeoutError) as exc:
            self._drop_stream(writer, f"malformed stream start: {str(exc) or 'timed out'}")
            return
        carrier = self._link_of.get(protocol)
        if carrier is None:
            if opened.kind != wire_pb2.STREAM_KIND_CONTROL:
                self._drop_stream(writer, "data stream before admission")
                # An unadmitted node gets nothing more from us: not even the connection.
                protocol.close()
                return
            await self._accept_control(reader, writer, initial, protocol, None)
            return
        await self._dispatch(carrier, opened, initial, reader, writer)

    async def _accept_control(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        initial: bytes,
        protocol: MeshQuicProtocol | None,
        via: PeerLink | None,
    ) -> None:
        control = ControlReader(reader, initial)
        try:
            observed = _remote_address(protocol)
            peer = await admit_as_listener(
                self.credentials, control, writer, lambda: self.admitted_frame(observed)
            )
        except (AdmissionRefused, FrameError) as exc:
            self.refused_count += 1
            logger.warning("refused a node", extra={"reason": str(exc)})
            await asyncio.sleep(0.05)  # let the Refused frame leave
            if protocol is not None:
                protocol.close()
            else:
                reset_stream(writer)
            return
        dialer_id = peer.node_id
        link = PeerLink(
            peer,
            self.node_id,
            control,
            writer,
            protocol.create_stream if protocol else None,
            via=via,
            dialed_by=dialer_id,
            address=_remote_address(protocol),
        )
        self._add_link(link, protocol)

    async def _dispatch(
        self,
        carrier: PeerLink,
        opened: wire_pb2.StreamOpen,
        initial: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        source = opened.source_node_id or carrier.node_id
        if opened.kind == wire_pb2.STREAM_KIND_RELAY:
            # Relays are one hop: the carrier is the true source, whatever the frame claims.
            await self._relay(carrier.node_id, opened, initial, reader, writer)
            return
        if (
            source != carrier.node_id
            and source not in self.links
            and opened.kind != wire_pb2.STREAM_KIND_CONTROL
        ):
            self._drop_stream(writer, f"stream from unknown source {source[:8]!r}", carrier)
            return
        if opened.kind == wire_pb2.STREAM_KIND_CONTROL:
            await self._accept_control(reader, writer, initial, None, carrier)
            return
        handler = self._stream_handlers.get(opened.kind)
        if handler is None:
            self._drop_stream(writer, f"unknown stream kind {opened.kind}", carrier)
            return
        await handler(source, initial, reader, writer)

    async def _relay(
        self,
        source: str,
        opened: wire_pb2.StreamOpen,
        initial: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        target = self.links.get(opened.target_node_id)
        if target is None or target.is_relayed or opened.relayed_kind == wire_pb2.STREAM_KIND_RELAY:
            self._drop_stream(writer, f"cannot relay to {opened.target_node_id[:8]!r}")
            return
        if time.monotonic() - target.last_heard > RELAY_TARGET_SILENT_MAX_S:
            self._drop_stream(writer, f"not relaying to silent peer {opened.target_node_id[:8]!r}")
            return
        try:
            far_reader, far_writer = await target.open_raw()
        except ConnectionError:
            reset_stream(writer)
            return
        far_writer.write(stream_open_frame(opened.relayed_kind, source))
        if initial:
            far_writer.write(initial)
        await splice((reader, writer), (far_reader, far_writer))


async def _read_stream_open(reader: asyncio.StreamReader) -> tuple[wire_pb2.StreamOpen, bytes]:
    opener = StreamOpenReader()
    while True:
        data = await reader.read(STREAM_OPEN_READ_BYTES)
        if not data:
            raise ConnectionError("stream ended before StreamOpen")
        result = opener.feed(data)
        if result is not None:
            return result


STREAM_REFUSED_ERROR = 0x10


def reset_stream(writer: asyncio.StreamWriter) -> None:
    """Reset the QUIC stream (not a clean FIN): the other side must see it was refused."""
    adapter = writer.transport
    with contextlib.suppress(Exception):
        quic = adapter.protocol._quic  # type: ignore[attr-defined]
        stream_id = adapter.stream_id  # type: ignore[attr-defined]
        quic.reset_stream(stream_id, STREAM_REFUSED_ERROR)
        adapter.protocol.transmit()  # type: ignore[attr-defined]
        # A reset stream takes no FIN: without this, StreamWriter.__del__ tries to send one and
        # aioquic raises (logged as "Exception ignored") for every dropped stream.
        adapter._closing = True  # type: ignore[attr-defined]
        return
    with contextlib.suppress(Exception):
        writer.close()


def _remote_address(protocol: MeshQuicProtocol | None) -> str:
    if protocol is None:
        return ""
    with contextlib.suppress(AttributeError, IndexError):
        host, port = protocol._quic._network_paths[0].addr[:2]
        host = str(host).removeprefix("::ffff:")  # an IPv4 peer seen through a dual-stack socket
        return join_address(host, int(port))
    return ""
