"""The node's QUIC endpoint: listen, dial, admit, keep one link per peer, dispatch and relay streams."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aioquic.asyncio import connect, serve
from aioquic.asyncio.server import QuicServer

from services.mesh.admission import AdmissionRefused
from services.mesh.frames import FrameError, StreamOpenReader, stream_open_frame
from services.mesh.handshake import ControlReader, Credentials, admit_as_dialer, admit_as_listener
from services.mesh.link import LinkEvents, PeerLink
from services.mesh.quic import MeshQuicProtocol, peer_certificate_key, quic_configuration
from services.mesh.splice import splice
from services.proto.meshllm.mesh.v1 import wire_pb2

logger = logging.getLogger("mesh.endpoint")

DIAL_TIMEOUT_S = 2.0
STREAM_OPEN_TIMEOUT_S = 5.0
STREAM_OPEN_READ_BYTES = 64 * 1024

# (source node id, bytes already read after StreamOpen, reader, writer)
StreamHandler = Callable[[str, bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class MeshEndpoint:
    def __init__(
        self,
        credentials: Credentials,
        stream_handlers: dict[int, StreamHandler],
        on_frame: Callable[[PeerLink, wire_pb2.WireFrame], Awaitable[None]],
        on_peers_changed: Callable[[], None],
    ) -> None:
        self.credentials = credentials
        self.links: dict[str, PeerLink] = {}
        self.refused_count = 0
        self.dropped_streams = 0
        self._stream_handlers = stream_handlers
        self._on_frame = on_frame
        self._on_peers_changed = on_peers_changed
        self._link_of: dict[MeshQuicProtocol, PeerLink] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._dialing: set[str] = set()
        self._server: QuicServer | None = None

    @property
    def node_id(self) -> str:
        return self.credentials.identity.node_id

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _protocol_factory(self, *args, **kwargs) -> MeshQuicProtocol:  # type: ignore[no-untyped-def]
        return MeshQuicProtocol(*args, on_stream=self._on_stream, on_lost=self._on_connection_lost, **kwargs)

    async def listen(self, host: str, port: int) -> int:
        self._server = await serve(
            host,
            port,
            configuration=quic_configuration(self.credentials.identity, is_client=False),
            create_protocol=self._protocol_factory,
        )
        return int(self._server._transport.get_extra_info("sockname")[1])  # type: ignore[union-attr]

    async def close(self) -> None:
        for link in list(self.links.values()):
            link.goodbye("shutting down")
        await asyncio.sleep(0.05)  # let the goodbyes leave before the connections close
        for link in list(self.links.values()):
            link.close("shutting down")
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()

    # ---- dialing

    async def dial(self, address: str) -> PeerLink:
        """Connect to `address` and pass admission; raises AdmissionRefused or OSError."""
        try:
            host, port = split_address(address)
        except ValueError as exc:
            # Addresses come from peers (Admitted, announces): untrusted input.
            raise ConnectionError(f"unusable address {address!r}") from exc
        ready: asyncio.Future[PeerLink] = asyncio.get_running_loop().create_future()
        self._spawn(self._hold_connection(host, port, address, ready))
        return await ready

    async def _hold_connection(
        self, host: str, port: int, address: str, ready: asyncio.Future[PeerLink]
    ) -> None:
        configuration = quic_configuration(self.credentials.identity, is_client=True)
        try:
            async with asyncio.timeout(DIAL_TIMEOUT_S):
                connection = connect(
                    host, port, configuration=configuration, create_protocol=self._protocol_factory
                )
                protocol = await connection.__aenter__()
        except (TimeoutError, OSError, ConnectionError) as exc:
            if not ready.done():
                ready.set_exception(ConnectionError(f"cannot reach {address}: {exc or 'timeout'}"))
            return
        try:
            reader, writer = await protocol.create_stream()
            writer.write(stream_open_frame(wire_pb2.STREAM_KIND_CONTROL, self.node_id))
            control = ControlReader(reader)
            peer, admitted = await admit_as_dialer(
                self.credentials, control, writer, peer_certificate_key(protocol)
            )
            link = PeerLink(
                peer,
                self.node_id,
                control,
                writer,
                protocol.create_stream,
                dialed_by=self.node_id,
                address=address,
            )
            self._add_link(link, protocol)  # type: ignore[arg-type]  # built by _protocol_factory
            ready.set_result(link)
            self._learn_peers(admitted.peers, via=link)
            await link.closed.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            if not isinstance(exc, AdmissionRefused | ConnectionError):
                raise
        finally:
            protocol.close()
            with contextlib.suppress(Exception):
                await connection.__aexit__(None, None, None)

    async def dial_relayed(self, peer_id: str, via: PeerLink) -> PeerLink:
        reader, writer = await via.open_raw()
        writer.write(
            stream_open_frame(wire_pb2.STREAM_KIND_RELAY, self.node_id, peer_id, wire_pb2.STREAM_KIND_CONTROL)
        )
        control = ControlReader(reader)
        peer, _ = await admit_as_dialer(self.credentials, control, writer, None)
        link = PeerLink(peer, self.node_id, control, writer, None, via=via, dialed_by=self.node_id)
        self._add_link(link, None)
        return link

    async def connect_peer(self, node_id: str, addresses: list[str], via: PeerLink | None) -> None:
        """Direct if any address answers, else through `via` (a peer that reaches it)."""
        if node_id == self.node_id or node_id in self.links or node_id in self._dialing:
            return
        self._dialing.add(node_id)
        try:
            for address in addresses:
                if address in self.credentials.addresses:
                    continue  # an announce pointing back at us: never dial ourselves
                try:
                    link = await self.dial(address)
                except (ConnectionError, AdmissionRefused, OSError) as exc:
                    logger.debug(
                        "direct dial failed",
                        extra={"peer": node_id[:8], "address": address, "error": str(exc)},
                    )
                    continue
                if link.node_id == node_id:
                    return
            if via is not None and not via.closed.is_set() and node_id not in self.links:
                with contextlib.suppress(AdmissionRefused, ConnectionError, OSError, TimeoutError):
                    await self.dial_relayed(node_id, via)
                    logger.info(
                        "peer reached through relay", extra={"peer": node_id[:8], "via": via.node_id[:8]}
                    )
        finally:
            self._dialing.discard(node_id)

    def _learn_peers(self, peers: list[wire_pb2.PeerAddress], via: PeerLink) -> None:
        for peer in peers:
            if peer.node_id != self.node_id and peer.node_id not in self.links:
                self._spawn(self.connect_peer(peer.node_id, list(peer.addresses), via))

    # ---- the link registry

    def _add_link(self, link: PeerLink, protocol: MeshQuicProtocol | None) -> None:
        existing = self.links.get(link.node_id)
        if existing is not None and not existing.closed.is_set():
            if self._keep_existing(existing, link):
                link.start(
                    LinkEvents(self._on_frame, self._on_link_closed), protocol.close if protocol else None
                )
                link.close("duplicate connection")
                return
            existing.close("replaced by a better connection")
        self.links[link.node_id] = link
        if protocol is not None:
            self._link_of[protocol] = link
        link.start(LinkEvents(self._on_frame, self._on_link_closed), protocol.close if protocol else None)
        logger.info(
            "peer joined",
            extra={
                "peer": link.node_id[:8],
                "peer_name": link.peer.name,
                "path": "relayed" if link.is_relayed else "direct",
            },
        )
        self._announce(link)
        self._on_peers_changed()

    def _keep_existing(self, existing: PeerLink, new: PeerLink) -> bool:
        """Both ends must pick the same connection: direct beats relayed, then the lower dialer id."""
        if existing.is_relayed != new.is_relayed:
            return not existing.is_relayed
        return existing.dialed_by <= new.dialed_by

    def _announce(self, link: PeerLink) -> None:
        if link.is_relayed:
            return
        announce = wire_pb2.WireFrame(
            peer_announce=wire_pb2.PeerAddress(node_id=link.node_id, addresses=list(link.peer.addresses))
        )
        for other in self.links.values():
            if other is not link and not other.is_relayed:
                other.send(announce)

    def admitted_frame(self) -> wire_pb2.Admitted:
        return wire_pb2.Admitted(
            peers=[
                wire_pb2.PeerAddress(node_id=link.node_id, addresses=list(link.peer.addresses))
                for link in self.links.values()
                if not link.is_relayed and not link.closed.is_set()
            ]
        )

    def _on_link_closed(self, link: PeerLink, reason: str) -> None:
        for protocol, known in list(self._link_of.items()):
            if known is link:
                del self._link_of[protocol]
        if self.links.get(link.node_id) is link:
            del self.links[link.node_id]
            logger.info("peer gone", extra={"peer": link.node_id[:8], "reason": reason})
            for relayed in [other for other in self.links.values() if other.via is link]:
                relayed.close(f"relay {link.node_id[:8]} gone")
            self._on_peers_changed()

    def _on_connection_lost(self, protocol: MeshQuicProtocol) -> None:
        link = self._link_of.get(protocol)
        if link is not None:
            link.close("connection lost")

    def learn_from_announce(self, link: PeerLink, announce: wire_pb2.PeerAddress) -> None:
        self._learn_peers([announce], via=link)

    # ---- incoming streams

    def _drop_stream(
        self, writer: asyncio.StreamWriter, reason: str, carrier: PeerLink | None = None
    ) -> None:
        """Malformed, oversized or unknown: reset that stream only (not its connection), count it, say why."""
        self.dropped_streams += 1
        extra = {"reason": reason, "dropped_total": self.dropped_streams}
        if carrier is not None:
            extra["peer"] = carrier.node_id[:8]
        logger.warning("dropped a stream", extra=extra)
        _abort(writer)

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
            peer = await admit_as_listener(self.credentials, control, writer, self.admitted_frame)
        except (AdmissionRefused, FrameError) as exc:
            self.refused_count += 1
            logger.warning("refused a node", extra={"reason": str(exc)})
            await asyncio.sleep(0.05)  # let the Refused frame leave
            if protocol is not None:
                protocol.close()
            else:
                _abort(writer)
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
        try:
            far_reader, far_writer = await target.open_raw()
        except ConnectionError:
            _abort(writer)
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


def _abort(writer: asyncio.StreamWriter) -> None:
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
        return f"{host}:{port}"
    return ""
