"""RPC tunnels: a split host's llama-server → this mesh → the worker's mesh → the worker's rpc-server.

One llama-server connection is one tunnel connection. It starts on a QUIC stream of the admitted
link (RpcOpen → RpcOffer → RpcPath, see wire.proto), then its bytes take the TLS fast path
(fast_path.py) or, when that cannot connect, stay on the QUIC stream. Requests pass through the
zero-transfer halves (rpc_zero_transfer.py): weight uploads that equal the host's own copy of the
GGUF cross as references and the worker reads the bytes from its own copy. Responses go back raw.
On TCP and TLS the data phase runs in the transports' callbacks (relay_protocol.py).

Before any of that, the host answers llama-server's static queries itself from what the same
rpc-server answered before (rpc_answers.py): a connection that asks nothing else never takes a path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.mesh.fast_path import FastPathError, FastPathListener, connect, fast_path_target, no_delay
from services.mesh.frames import FrameError, OneFrameReader, encode_frame
from services.mesh.gguf_index import GgufIndex
from services.mesh.link import PeerLink
from services.mesh.relay_protocol import Transform, splice
from services.mesh.rpc_answers import AnswerBook, FrontDesk
from services.mesh.rpc_armed import ArmedPaths, first_request
from services.mesh.rpc_protocol import RpcProtocolError
from services.mesh.rpc_zero_transfer import HostHalf, Output, WorkerHalf, open_gguf_image
from services.proto.meshllm.mesh.v1 import mesh_pb2, wire_pb2

logger = logging.getLogger("mesh.rpc")

READ_BYTES = 256 * 1024
HANDSHAKE_TIMEOUT_S = 10.0
LOCAL_CONNECT_TIMEOUT_S = 5.0
DRAIN_ABOVE_BYTES = 4 * 1024 * 1024

StreamPair = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True)
class LocalRpcServer:
    port: int
    model_path: str
    host_node_id: str  # the split host it works for: no other node may reach it
    pid: int = 0

    @property
    def instance(self) -> str:
        """Names this rpc-server process to the host (RpcOffer.server_instance)."""
        return f"{self.pid}:{self.port}"


@dataclass
class TunnelCounters:
    """One (peer, model, side)'s traffic. The zero-transfer halves count requests and weight bytes
    themselves; a half's counts are added here when its connection ends (`live` until then)."""

    connections: int = 0
    fast_path_connections: int = 0
    bytes_to_peer: int = 0
    bytes_from_peer: int = 0
    weight_bytes_by_reference: int = 0
    weight_bytes_raw: int = 0
    requests: int = 0
    requests_answered_here: int = 0
    connections_answered_here: int = 0
    live: set[HostHalf | WorkerHalf] = field(default_factory=set)

    def retire(self, half: HostHalf | WorkerHalf) -> None:
        self.live.discard(half)
        self.requests += half.counters.requests
        if isinstance(half, HostHalf):
            self.weight_bytes_by_reference += half.counters.weight_bytes_by_reference
            self.weight_bytes_raw += half.counters.weight_bytes_raw

    def totals(self) -> tuple[int, int, int]:
        """(requests, weight bytes by reference, weight bytes raw), live connections included."""
        requests, by_reference, raw = self.requests, self.weight_bytes_by_reference, self.weight_bytes_raw
        for half in self.live:
            requests += half.counters.requests
            if isinstance(half, HostHalf):
                by_reference += half.counters.weight_bytes_by_reference
                raw += half.counters.weight_bytes_raw
        return requests, by_reference, raw


class GgufImages:
    """Each model file mapped and indexed once (indexing Gemma's header takes ~0.1 s, and
    llama-server opens about a dozen RPC connections per load), off the event loop. A file that
    changed on disk is mapped again; old maps stay valid for connections still using them."""

    def __init__(self) -> None:
        self._images: dict[tuple[Path, int, int], tuple[mmap.mmap, GgufIndex]] = {}
        self._lock = asyncio.Lock()

    async def get(self, path: Path) -> tuple[mmap.mmap, GgufIndex]:
        stat = await asyncio.to_thread(path.stat)
        key = (path, stat.st_mtime_ns, stat.st_size)
        async with self._lock:
            image = self._images.get(key)
            if image is None:
                image = await asyncio.to_thread(open_gguf_image, path)
                self._images = {k: v for k, v in self._images.items() if k[0] != path}
                self._images[key] = image
            return image


class RpcTunnelError(ConnectionError):
    """The tunnel could not be set up; the llama-server connection is closed."""


class RpcTunnels:
    """Both sides of every RPC tunnel of this node, and their counters."""

    def __init__(self, fast_path: FastPathListener | None, dial_from: str = "") -> None:
        self.fast_path = fast_path
        self.dial_from = dial_from  # the mesh's --bind-ip: fast-path connections leave from it
        # model → the local rpc-server that serves it (from the runner's status)
        self._local_servers: dict[str, LocalRpcServer] = {}
        # model → set when that rpc-server goes: paths offered for it close unused
        self._server_gone: dict[str, asyncio.Event] = {}
        self.counters: dict[tuple[str, str, bool], TunnelCounters] = {}
        self.images = GgufImages()
        # Host side: paths to each worker set up before llama-server connects (rpc_armed.py), and
        # what each worker's current rpc-server answered (rpc_answers.py).
        self.armed = ArmedPaths(self._open_to_worker)
        self._books: dict[tuple[str, str], AnswerBook] = {}

    @property
    def local_servers(self) -> dict[str, LocalRpcServer]:
        return self._local_servers

    @local_servers.setter
    def local_servers(self, servers: dict[str, LocalRpcServer]) -> None:
        for model in self._local_servers.keys() | servers.keys():
            old, new = self._local_servers.get(model), servers.get(model)
            if old is not None and (new is None or new.instance != old.instance):
                gone = self._server_gone.pop(model, None)
                if gone is not None:
                    gone.set()
        self._local_servers = servers

    def _counters(self, peer: str, model: str, host_side: bool) -> TunnelCounters:
        return self.counters.setdefault((peer, model, host_side), TunnelCounters())

    def stats(self) -> list[mesh_pb2.TunnelStats]:
        stats = []
        for (peer, model, host_side), c in sorted(self.counters.items()):
            requests, by_reference, raw = c.totals()
            stats.append(
                mesh_pb2.TunnelStats(
                    peer_node_id=peer,
                    model=model,
                    host_side=host_side,
                    connections=c.connections,
                    fast_path_connections=c.fast_path_connections,
                    bytes_to_peer=c.bytes_to_peer,
                    bytes_from_peer=c.bytes_from_peer,
                    weight_bytes_by_reference=by_reference,
                    weight_bytes_raw=raw,
                    requests=requests,
                    requests_answered_here=c.requests_answered_here,
                    connections_answered_here=c.connections_answered_here,
                )
            )
        return stats

    # ---- host side -------------------------------------------------------------------------

    def arm(self, link: PeerLink, model: str) -> None:
        """A split host's tunnel to `link`'s worker exists: get its first connections ready."""
        self.armed.arm(link, model)

    def peer_gone(self, peer_id: str) -> None:
        self.armed.peer_gone(peer_id)
        for key in [key for key in self._books if key[0] == peer_id]:
            del self._books[key]

    def _book(self, peer_id: str, model: str, instance: str | None = None) -> AnswerBook | None:
        """The answers of the worker's rpc-server `instance` (None: the latest one offered)."""
        book = self._books.get((peer_id, model))
        if instance is not None and (book is None or book.instance != instance):
            book = self._books[(peer_id, model)] = AnswerBook(instance)
        return book

    async def carry_from_llama_server(
        self, link: PeerLink, model: str, model_path: str, local: StreamPair
    ) -> None:
        """One llama-server connection to the worker behind `link`."""
        no_delay(local[1])
        counters = self._counters(link.node_id, model, True)
        counters.connections += 1
        desk = FrontDesk(self._book(link.node_id, model), time.monotonic)
        first = await _answer_here(desk, local, counters)
        if first is None:
            counters.connections_answered_here += 1
            _close(local[1])
            return
        armed = self.armed.take(link, model)
        try:
            remote, fast, instance = (
                (armed.pair, armed.fast, armed.instance) if armed else await self._open_to_worker(link, model)
            )
        except (RpcTunnelError, ConnectionError, OSError) as exc:
            logger.warning("RPC tunnel to %s failed: %s", link.node_id[:8], exc, extra={"model": model})
            _close(local[1])
            return
        if desk.book is None or desk.book.instance != instance:
            if desk.answered_here > 1:  # more than the HELLO, which the worker's answer still checks
                logger.warning("the worker's rpc-server changed during a connection", extra={"model": model})
                _close(remote[1])
                _close(local[1])
                return
            desk.book = self._book(link.node_id, model, instance)
        counters.fast_path_connections += int(fast)
        try:
            image = await self.images.get(Path(model_path))
        except (OSError, ValueError) as exc:
            # Correct but slow: every weight byte crosses the network.
            logger.warning("cannot map %s (%s): weights go over the wire", model_path, exc)
            image = None
        half = HostHalf(*image) if image else None
        if half is not None:
            counters.live.add(half)

        to_peer: Callable[[bytes | memoryview], Output] = half.feed if half else _unchanged

        def outbound(data: bytes) -> Output:
            if desk.transparent:
                return to_peer(data)
            _, pieces = desk.from_llama_server(data)  # forwarding: nothing is answered here now
            return [out for piece in pieces for out in to_peer(piece)]

        def inbound(data: bytes) -> Output:
            return [data] if desk.transparent else desk.from_worker(data)

        try:
            to_worker = [out for piece in first for out in to_peer(piece)]
            counters.bytes_to_peer += sum(len(piece) for piece in to_worker)
            for piece in to_worker:
                remote[1].write(piece)
            await _both_ways(local, remote, outbound, counters, inbound=inbound)
        except RpcProtocolError as exc:
            _report(exc)
            _close(remote[1])
            _close(local[1])
        finally:
            if half is not None:
                counters.retire(half)
                half.close()

    async def _open_to_worker(self, link: PeerLink, model: str) -> tuple[StreamPair, bool, str]:
        reader, writer = await link.open_stream(wire_pb2.STREAM_KIND_RPC)
        writer.write(encode_frame(wire_pb2.WireFrame(rpc_open=wire_pb2.RpcOpen(model=model))))
        try:
            reply, early = await asyncio.wait_for(_read_frame(reader), HANDSHAKE_TIMEOUT_S)
        except (FrameError, ConnectionError, TimeoutError) as exc:
            _close(writer)
            raise RpcTunnelError(f"no RPC offer: {exc or 'timed out'}") from exc
        offer = reply.rpc_offer
        if early:  # a worker speaks only after the path is chosen
            _close(writer)
            raise RpcTunnelError("the worker sent bytes before the RPC path was chosen")
        if offer.error:
            _close(writer)
            raise RpcTunnelError(offer.error)
        self._book(link.node_id, model, offer.server_instance)
        target = fast_path_target(link, offer.tls_port, offer.ticket)
        if target is not None:
            try:
                fast = await connect(*target, link.peer.public_key, offer.ticket, self.dial_from)
            except FastPathError as exc:
                logger.info("RPC fast path to %s unavailable, using QUIC: %s", link.node_id[:8], exc)
            else:
                writer.write(encode_frame(wire_pb2.WireFrame(rpc_path=wire_pb2.RpcPath())))
                writer.write_eof()
                return fast, True, offer.server_instance
        writer.write(encode_frame(wire_pb2.WireFrame(rpc_path=wire_pb2.RpcPath(on_this_stream=True))))
        return (reader, writer), False, offer.server_instance

    # ---- worker side -----------------------------------------------------------------------

    async def serve_stream(
        self, source: str, initial: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """An RPC stream from a split host: offer the fast path, then splice to the local rpc-server."""
        try:
            opened, early = await asyncio.wait_for(_read_frame(reader, initial), HANDSHAKE_TIMEOUT_S)
        except (FrameError, ConnectionError, TimeoutError):
            _close(writer)
            return
        model = opened.rpc_open.model
        server = self.local_servers.get(model) if opened.HasField("rpc_open") and not early else None
        if server is None or source != server.host_node_id:
            error = f"this node runs no rpc-server for {model!r}"
            if server is not None:
                error = f"this node's rpc-server for {model!r} works for another split host"
                logger.warning(
                    "refused an RPC tunnel from a node that is not the split host", extra={"peer": source[:8]}
                )
            writer.write(encode_frame(wire_pb2.WireFrame(rpc_offer=wire_pb2.RpcOffer(error=error))))
            _close(writer, graceful=True)
            return
        offered = server.instance
        gone = self._server_gone.setdefault(model, asyncio.Event())
        accepted = await self._accept_path(reader, writer, offered)
        if accepted is None:
            return
        remote, first_bytes = accepted
        if not first_bytes:
            # Maybe a path the host armed ahead: only its first request takes the rpc-server, which
            # serves one client at a time; the host may also have stopped working with us since.
            first_bytes = await first_request(remote[0], gone)
        server = self.local_servers.get(model)
        if not first_bytes or server is None or source != server.host_node_id or server.instance != offered:
            # The host may have answered llama-server for the offered rpc-server: never another one.
            _close(remote[1])
            return
        counters = self._counters(source, model, False)
        counters.connections += 1
        counters.fast_path_connections += int(remote[0] is not reader)
        await self._carry_to_rpc_server(remote, first_bytes, server, counters)

    async def _accept_path(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, instance: str
    ) -> tuple[StreamPair, bytes] | None:
        """The connection the host's bytes will come on, and any that already came on the stream."""
        ticket, fast, port = b"", None, 0
        if self.fast_path is not None:
            ticket, fast = self.fast_path.offer()
            port = self.fast_path.port
        offer = wire_pb2.RpcOffer(tls_port=port, ticket=ticket, server_instance=instance)
        writer.write(encode_frame(wire_pb2.WireFrame(rpc_offer=offer)))
        try:
            chosen, early = await asyncio.wait_for(_read_frame(reader), HANDSHAKE_TIMEOUT_S)
        except (FrameError, ConnectionError, TimeoutError):
            self._withdraw(ticket)
            _close(writer)
            return None
        if chosen.rpc_path.on_this_stream or fast is None:
            self._withdraw(ticket)
            return (reader, writer), early
        try:
            pair = await asyncio.wait_for(fast, HANDSHAKE_TIMEOUT_S)
        except (TimeoutError, asyncio.CancelledError):
            self._withdraw(ticket)
            return None
        finally:
            _close(writer, graceful=True)
        return pair, b""

    def _withdraw(self, ticket: bytes) -> None:
        if self.fast_path is not None and ticket:
            self.fast_path.withdraw(ticket)

    async def _carry_to_rpc_server(
        self, remote: StreamPair, first_bytes: bytes, server: LocalRpcServer, counters: TunnelCounters
    ) -> None:
        try:
            local = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", server.port), LOCAL_CONNECT_TIMEOUT_S
            )
            image = await self.images.get(Path(server.model_path))
        except (OSError, TimeoutError, ValueError) as exc:
            logger.warning("cannot serve an RPC tunnel: %s", exc)
            _close(remote[1])
            return
        no_delay(local[1])
        half = WorkerHalf(*image)
        counters.live.add(half)
        try:
            if first_bytes:
                counters.bytes_from_peer += len(first_bytes)
                for piece in half.feed(first_bytes):
                    local[1].write(piece)
            await _both_ways(local, remote, None, counters, inbound=half.feed)
        finally:
            counters.retire(half)
            half.close()


def _unchanged(data: bytes | memoryview) -> Output:
    return [data]


async def _answer_here(desk: FrontDesk, local: StreamPair, counters: TunnelCounters) -> Output | None:
    """Answer llama-server here until it asks what only the worker can answer: what to send the
    worker then, or None if llama-server closed the connection first."""
    reader, writer = local
    to_worker: Output = []
    while not desk.forwarding:
        try:
            data = await reader.read(READ_BYTES)
        except (ConnectionError, OSError):
            return None
        if not data:
            return None
        before = desk.answered_here
        answers, pieces = desk.from_llama_server(data)
        counters.requests_answered_here += desk.answered_here - before
        if answers:
            writer.write(answers)
        to_worker += pieces
    return to_worker


async def _read_frame(reader: asyncio.StreamReader, initial: bytes = b"") -> tuple[wire_pb2.WireFrame, bytes]:
    """One handshake frame, and whatever arrived after it (the first payload bytes)."""
    one = OneFrameReader()
    data = initial
    while True:
        read = one.feed(data) if data else None
        if read is not None:
            return read
        data = await reader.read(4096)
        if not data:
            raise ConnectionError("stream ended during the RPC handshake")


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, transform: Transform) -> None:
    try:
        while True:
            data = await reader.read(READ_BYTES)
            if not data:
                break
            for piece in transform(data):
                writer.write(piece)
                if _buffered(writer) > DRAIN_ABOVE_BYTES:
                    await writer.drain()
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def _both_ways(
    local: StreamPair,
    remote: StreamPair,
    outbound: Transform | None,
    counters: TunnelCounters,
    inbound: Transform | None = None,
) -> None:
    """local → remote through `outbound`, remote → local through `inbound`; either failing ends both.

    Host side: local is llama-server, outbound the HostHalf. Worker side: local is rpc-server, and
    `inbound` (the WorkerHalf) expands what arrives from the host.

    Either end closing ends the connection: llama.cpp RPC never half-closes, and TLS cannot pass
    a half-close on, so waiting for the other direction would hold the worker's single-client
    rpc-server forever.
    """

    def to_peer(data: bytes) -> Output:
        pieces: Output = outbound(data) if outbound else [data]
        counters.bytes_to_peer += sum(len(piece) for piece in pieces)
        return pieces

    def from_peer(data: bytes) -> Output:
        # counted as it arrives, before the worker half expands references
        counters.bytes_from_peer += len(data)
        return inbound(data) if inbound else [data]

    # TCP and TLS: relay in the transports' callbacks (relay_protocol.py); the QUIC fallback stream
    # cannot, and keeps a pump task per direction.
    joined = splice(local, remote, to_peer, from_peer)
    try:
        if joined is not None:
            _report(await joined.ended)
        else:
            await _pump_both_ways(local, remote, to_peer, from_peer)
    finally:
        if joined is not None:
            joined.finish(None)  # when cancelled: relay nothing more once the halves are closed
        for _, writer in (local, remote):
            _close(writer)


async def _pump_both_ways(
    local: StreamPair, remote: StreamPair, to_peer: Transform, from_peer: Transform
) -> None:
    forward = asyncio.ensure_future(_pump(local[0], remote[1], to_peer))
    backward = asyncio.ensure_future(_pump(remote[0], local[1], from_peer))
    try:
        done, _ = await asyncio.wait([forward, backward], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            _report(task.exception())
    finally:
        for task in (forward, backward):
            task.cancel()


def _report(cause: BaseException | None) -> None:
    if isinstance(cause, RpcProtocolError):
        logger.warning("dropped an RPC tunnel connection: %s", cause)


def _buffered(writer: asyncio.StreamWriter) -> int:
    """Bytes waiting in the transport; a stream that cannot say (aioquic's) drains per piece."""
    try:
        return int(writer.transport.get_write_buffer_size())
    except NotImplementedError:
        return DRAIN_ABOVE_BYTES + 1


def _close(writer: asyncio.StreamWriter, graceful: bool = False) -> None:
    with contextlib.suppress(Exception):
        if graceful and writer.can_write_eof():
            writer.write_eof()
        writer.close()
