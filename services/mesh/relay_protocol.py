"""The data phase of an RPC tunnel connection as transport callbacks instead of stream coroutines.

Split decode sends about a dozen RPC requests per token through two mesh processes, one of them
a blocking round trip, so what each message costs there is paid on every token. With StreamReader/StreamWriter
every chunk wakes a task: a future per read, a loop iteration to resume the pump, a copy out of the
reader's buffer, a drain. Here the bytes go from one transport's data_received, through the
per-chunk transform, straight into the other transport's write buffer, in the same callback.

Only for transports that can change protocol and have a socket under them (TCP and TLS, on uvloop
or asyncio); aioquic's stream adapter on the QUIC fallback cannot, and keeps the stream pump.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from services.mesh.rpc_zero_transfer import COALESCE_BELOW_BYTES, Output

Transform = Callable[[bytes], Output]
StreamPair = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _Direction(asyncio.Protocol):
    """Installed on one transport: what arrives on it goes through `transform` into `sink`. It also
    hears its own transport's write-buffer state, filled by the other direction, whose source is
    `sink`: a full buffer pauses reading `sink`, as drain() paused the pump reading it."""

    def __init__(self, splice: Splice, sink: asyncio.Transport, transform: Transform) -> None:
        self._splice = splice
        self._sink = sink
        self._transform = transform

    def data_received(self, data: bytes) -> None:
        if self._splice.over:
            return  # both transports are closing; a late chunk has nowhere to go
        try:
            pieces = self._transform(data)
            if len(pieces) == 1:
                self._sink.write(pieces[0])
            elif pieces:
                self._write_many(pieces)
        except Exception as exc:  # RpcProtocolError, a sink already gone, or a bug: the stream is lost
            self._splice.finish(exc)

    def _write_many(self, pieces: Output) -> None:
        if sum(len(piece) for piece in pieces) < COALESCE_BELOW_BYTES:
            # Several small requests in one chunk: one TLS record (under half the CPU of one
            # per piece, on both ends) and one send. Large pieces are views into the model file.
            self._sink.write(b"".join(pieces))
        else:
            # One call: one writev on TCP, all the TLS records in one send on TLS.
            self._sink.writelines(pieces)

    def eof_received(self) -> bool:
        # llama.cpp RPC never half-closes: an EOF either way ends the connection.
        self._splice.finish(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._splice.finish(exc)

    def pause_writing(self) -> None:
        self._sink.pause_reading()

    def resume_writing(self) -> None:
        self._sink.resume_reading()


class Splice:
    """Two transports relaying into each other; `ended` resolves with the first cause (an exception
    from a transform or a transport, or None for a clean close), and both are then closed
    (buffered bytes still flush)."""

    def __init__(self, ends: tuple[asyncio.Transport, asyncio.Transport]) -> None:
        self._ends = ends
        self.over = False
        self.ended: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def finish(self, cause: BaseException | None) -> None:
        if self.over:
            return
        self.over = True
        if not self.ended.done():  # the waiter may have been cancelled
            self.ended.set_result(cause)
        for transport in self._ends:
            transport.close()


def splice(local: StreamPair, remote: StreamPair, outbound: Transform, inbound: Transform) -> Splice | None:
    """Relay local → remote through `outbound` and remote → local through `inbound` on the
    transports themselves, or None (nothing changed) where a transport cannot be taken over."""
    (local_reader, local_writer), (remote_reader, remote_writer) = local, remote
    local_transport, remote_transport = _transport(local_writer), _transport(remote_writer)
    if local_transport is None or remote_transport is None:
        return None
    joined = Splice((local_transport, remote_transport))
    to_remote = _Direction(joined, remote_transport, outbound)
    to_local = _Direction(joined, local_transport, inbound)
    previous, remote_previous = local_transport.get_protocol(), remote_transport.get_protocol()
    try:
        local_transport.set_protocol(to_remote)
        remote_transport.set_protocol(to_local)
    except (NotImplementedError, AttributeError):
        local_transport.set_protocol(previous)
        return None
    # From here on the readers get nothing more: pass on what they already hold, in order, before
    # the transports deliver anything new (nothing runs between these lines and the next read).
    for reader, transport, direction in (
        (local_reader, local_transport, to_remote),
        (remote_reader, remote_transport, to_local),
    ):
        _hand_over(reader, transport, direction)
    # A write buffer the streams had already filled up keeps its source paused until it drains
    # (the transport tells the new protocol when it does).
    if _writing_paused(previous):
        remote_transport.pause_reading()
    if _writing_paused(remote_previous):
        local_transport.pause_reading()
    return joined


def _transport(writer: asyncio.StreamWriter) -> asyncio.Transport | None:
    """The writer's transport if it is a socket's (TCP or TLS) and still open, else None. Duck-typed:
    uvloop's transports do not derive from asyncio's classes."""
    transport = writer.transport
    if transport.get_extra_info("socket") is None or transport.is_closing():
        return None
    return cast(asyncio.Transport, transport)


def _writing_paused(stream_protocol: asyncio.BaseProtocol) -> bool:
    """Whether the transport had told the stream protocol to stop writing (FlowControlMixin)."""
    return bool(getattr(stream_protocol, "_paused", False))


def _hand_over(reader: asyncio.StreamReader, transport: asyncio.Transport, direction: _Direction) -> None:
    """What `reader` holds goes to `direction`: reading it had paused for a full buffer resumes
    (first, so a pause the handed-over bytes cause sticks), then its unread bytes, then its end."""
    if getattr(reader, "_paused", False):
        transport.resume_reading()
    buffered: bytearray = getattr(reader, "_buffer", bytearray())
    if buffered:
        data = bytes(buffered)
        buffered.clear()
        direction.data_received(data)
    if reader.at_eof() or reader.exception() is not None:
        direction.connection_lost(reader.exception())
