"""The llama.cpp RPC stream, sans-IO (h11-style): bytes in, typed events out, no sockets here.

Derived from the pinned build (llama.cpp/pin.toml; ggml/src/ggml-rpc/ggml-rpc.cpp, protocol 7.0.0):

- request  (client -> server): `cmd (u8) | payload_size (u64 LE) | payload`
- response (server -> client): `payload_size (u64 LE) | payload`, only for the commands in
  RESPONSE_PAYLOAD_BYTES, strictly in request order (one dispatcher thread per endpoint, one socket).

The server reads every fixed-size request with an exact-size `recv_msg` and drops the connection on
any mismatch, so the parser checks sizes just as strictly: what it rejects, the server would have
dropped too (payload contents are the server's to validate). `RpcRequestParser` streams bulk
SET_TENSOR payloads (weights, hundreds of MB) as chunks instead of buffering them; payload layouts
live in `rpc_messages`.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from enum import Enum, IntEnum

RPC_PROTO_MAJOR_VERSION = 7
RPC_PROTO_MINOR_VERSION = 0
# sizeof(rpc_tensor) in the pinned build (packed; see rpc_messages.RPC_TENSOR for the layout).
RPC_TENSOR_BYTES = 296
RPC_CONN_CAPS_BYTES = 24
GGML_MAX_SRC = 10
# rpc_tensor | cache_flag (u8) | offset (u64): what precedes the data of a SET_TENSOR.
SET_TENSOR_HEADER_BYTES = RPC_TENSOR_BYTES + 1 + 8
# device (u32) | n_nodes (u32) | n_tensors (u32) with no nodes: the smallest graph the server takes.
MIN_GRAPH_COMPUTE_PAYLOAD_BYTES = 12
# Largest single weight upload we accept: bigger than any tensor of any model we would split.
MAX_SET_TENSOR_PAYLOAD_BYTES = 64 * 1024**3
# A serialized graph is 296 B per tensor; this is ~900k tensors, far beyond any real graph.
MAX_GRAPH_COMPUTE_PAYLOAD_BYTES = 256 * 1024**2
# GET_TENSOR reads back logits/activations (~1 MB per token); a whole-tensor read stays under this.
MAX_GET_TENSOR_RESPONSE_BYTES = 4 * 1024**3
# SET_TENSOR payloads above this arrive as RpcRequestHead + RpcPayloadChunk* + RpcRequestEnd.
DEFAULT_STREAM_SET_TENSOR_ABOVE_BYTES = 1024**2

REQUEST_PREFIX = struct.Struct("<BQ")
RESPONSE_PREFIX = struct.Struct("<Q")
_U64 = struct.Struct("<Q")
# GET_TENSOR request: rpc_tensor | offset (u64) | size (u64); the response is exactly `size` bytes.
_GET_TENSOR_SIZE_AT = RPC_TENSOR_BYTES + 8


class RpcCommand(IntEnum):
    """`enum rpc_cmd`. RPC_CMD_NONE (18) and RPC_CMD_COUNT are client-internal, never on the wire."""

    ALLOC_BUFFER = 0
    GET_ALIGNMENT = 1
    GET_MAX_SIZE = 2
    BUFFER_GET_BASE = 3
    FREE_BUFFER = 4
    BUFFER_CLEAR = 5
    SET_TENSOR = 6
    SET_TENSOR_HASH = 7
    GET_TENSOR = 8
    COPY_TENSOR = 9
    GRAPH_COMPUTE = 10
    GET_DEVICE_MEMORY = 11
    INIT_TENSOR = 12
    GET_ALLOC_SIZE = 13
    HELLO = 14
    DEVICE_COUNT = 15
    GRAPH_RECOMPUTE = 16
    MEMSET_TENSOR = 17


# Exact request payload sizes (sizeof the packed rpc_msg_*_req); None = variable (bounds below).
REQUEST_PAYLOAD_BYTES: dict[RpcCommand, int | None] = {
    RpcCommand.ALLOC_BUFFER: 4 + 8,
    RpcCommand.GET_ALIGNMENT: 4,
    RpcCommand.GET_MAX_SIZE: 4,
    RpcCommand.BUFFER_GET_BASE: 8,
    RpcCommand.FREE_BUFFER: 8,
    RpcCommand.BUFFER_CLEAR: 8 + 1,
    RpcCommand.SET_TENSOR: None,
    RpcCommand.SET_TENSOR_HASH: RPC_TENSOR_BYTES + 8 + 8,
    RpcCommand.GET_TENSOR: RPC_TENSOR_BYTES + 8 + 8,
    RpcCommand.COPY_TENSOR: 2 * RPC_TENSOR_BYTES,
    RpcCommand.GRAPH_COMPUTE: None,
    RpcCommand.GET_DEVICE_MEMORY: 4,
    RpcCommand.INIT_TENSOR: RPC_TENSOR_BYTES,
    RpcCommand.GET_ALLOC_SIZE: 4 + (1 + GGML_MAX_SRC) * RPC_TENSOR_BYTES,
    RpcCommand.HELLO: RPC_CONN_CAPS_BYTES,
    RpcCommand.DEVICE_COUNT: 0,
    RpcCommand.GRAPH_RECOMPUTE: 4,
    RpcCommand.MEMSET_TENSOR: RPC_TENSOR_BYTES + 8 + 8 + 1,
}
_VARIABLE_REQUEST_BOUNDS: dict[RpcCommand, tuple[int, int]] = {
    RpcCommand.SET_TENSOR: (SET_TENSOR_HEADER_BYTES, MAX_SET_TENSOR_PAYLOAD_BYTES),
    RpcCommand.GRAPH_COMPUTE: (MIN_GRAPH_COMPUTE_PAYLOAD_BYTES, MAX_GRAPH_COMPUTE_PAYLOAD_BYTES),
}

# Commands the server answers, with the exact response size (None: GET_TENSOR answers `size` bytes).
# Everything else (SET_TENSOR, GRAPH_COMPUTE, FREE_BUFFER, ...) is fire-and-forget in this build.
RESPONSE_PAYLOAD_BYTES: dict[RpcCommand, int | None] = {
    RpcCommand.HELLO: 4 + RPC_CONN_CAPS_BYTES,
    RpcCommand.DEVICE_COUNT: 4,
    RpcCommand.ALLOC_BUFFER: 8 + 8,
    RpcCommand.GET_ALIGNMENT: 8,
    RpcCommand.GET_MAX_SIZE: 8,
    RpcCommand.BUFFER_GET_BASE: 8,
    RpcCommand.SET_TENSOR_HASH: 1,
    RpcCommand.GET_TENSOR: None,
    RpcCommand.COPY_TENSOR: 1,
    RpcCommand.GET_DEVICE_MEMORY: 8 + 8,
    RpcCommand.GET_ALLOC_SIZE: 8,
}


class RpcProtocolError(Exception):
    """The peer's bytes are not a valid llama.cpp RPC stream; close the connection with this reason."""


@dataclass(frozen=True, slots=True)
class RpcRequest:
    """A whole request (every command, and SET_TENSOR payloads up to the streaming threshold)."""

    command: RpcCommand
    payload: bytes


@dataclass(frozen=True, slots=True)
class RpcRequestHead:
    """Start of a streamed SET_TENSOR: `head` is its SET_TENSOR_HEADER_BYTES header, data follows."""

    command: RpcCommand
    payload_bytes: int
    head: bytes


@dataclass(frozen=True, slots=True)
class RpcPayloadChunk:
    """The next bytes of a streamed request's data (after its head)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class RpcRequestEnd:
    command: RpcCommand


@dataclass(frozen=True, slots=True)
class RpcResponse:
    command: RpcCommand
    payload: bytes


RpcRequestEvent = RpcRequest | RpcRequestHead | RpcPayloadChunk | RpcRequestEnd


def expects_response(command: RpcCommand) -> bool:
    return command in RESPONSE_PAYLOAD_BYTES


def encode_request(command: RpcCommand, payload: bytes) -> bytes:
    return REQUEST_PREFIX.pack(command, len(payload)) + payload


def encode_response(payload: bytes) -> bytes:
    return RESPONSE_PREFIX.pack(len(payload)) + payload


def check_request_size(command: RpcCommand, payload_bytes: int) -> None:
    """Raise RpcProtocolError unless the pinned server would accept this payload size."""
    exact = REQUEST_PAYLOAD_BYTES[command]
    if exact is not None:
        if payload_bytes != exact:
            raise RpcProtocolError(f"{command.name} payload is {payload_bytes} bytes, expected {exact}")
        return
    low, high = _VARIABLE_REQUEST_BOUNDS[command]
    if not low <= payload_bytes <= high:
        raise RpcProtocolError(f"{command.name} payload of {payload_bytes} bytes is outside [{low}, {high}]")


def _command_from_byte(value: int) -> RpcCommand:
    try:
        return RpcCommand(value)
    except ValueError:
        raise RpcProtocolError(f"unknown RPC command {value}") from None


class _Phase(Enum):
    PREFIX = "prefix"  # collecting the 9-byte request prefix
    BODY = "body"  # collecting a buffered payload (or a streamed request's head)
    STREAM = "stream"  # passing a streamed request's data through as chunks
    BROKEN = "broken"  # after an RpcProtocolError: the stream cannot be resynchronised


class RpcRequestParser:
    """Client -> server. Feed bytes as they arrive in any chunking; get events in stream order.

    The first request must be HELLO and no later one may be (the server reads HELLO once, then
    treats another as a reason to hang up). Every input byte is copied at most twice, so large
    uploads cost linear time.
    """

    def __init__(self, stream_set_tensor_above_bytes: int = DEFAULT_STREAM_SET_TENSOR_ABOVE_BYTES) -> None:
        self._stream_above = stream_set_tensor_above_bytes
        self._phase = _Phase.PREFIX
        self._buffer = bytearray()
        self._want = REQUEST_PREFIX.size
        self._command = RpcCommand.HELLO
        self._payload_bytes = 0
        self._stream_left = 0
        self._seen_hello = False

    @property
    def at_boundary(self) -> bool:
        """True between requests: an EOF here is a clean close, anywhere else a truncation."""
        return self._phase is _Phase.PREFIX and not self._buffer

    def feed(self, data: bytes | bytearray | memoryview) -> list[RpcRequestEvent]:
        if self._phase is _Phase.BROKEN:
            raise RpcProtocolError("the stream already failed to parse")
        view = memoryview(data).cast("B")
        events: list[RpcRequestEvent] = []
        pos = 0
        try:
            while pos < len(view) or self._ready():
                if self._phase is _Phase.STREAM:
                    pos = self._pass_through(view, pos, events)
                else:
                    pos = self._collect(view, pos, events)
        except RpcProtocolError:
            self._phase = _Phase.BROKEN
            raise
        return events

    def _ready(self) -> bool:
        # A zero-length payload, or a stream with no data bytes left, completes without more input.
        if self._phase is _Phase.STREAM:
            return self._stream_left == 0
        return self._phase is _Phase.BODY and len(self._buffer) == self._want

    def _collect(self, view: memoryview, pos: int, events: list[RpcRequestEvent]) -> int:
        take = min(self._want - len(self._buffer), len(view) - pos)
        self._buffer += view[pos : pos + take]
        if len(self._buffer) == self._want:
            if self._phase is _Phase.PREFIX:
                self._start_request()
            else:
                self._finish_body(events)
        return pos + take

    def _start_request(self) -> None:
        command_byte, size = REQUEST_PREFIX.unpack(self._buffer)
        command = _command_from_byte(command_byte)
        if (command is RpcCommand.HELLO) == self._seen_hello:
            problem = "a second HELLO" if self._seen_hello else f"{command.name} before HELLO"
            raise RpcProtocolError(f"handshake violated: {problem}")
        self._seen_hello = True
        check_request_size(command, size)
        self._command, self._payload_bytes = command, size
        streamed = command is RpcCommand.SET_TENSOR and size > self._stream_above
        self._want = SET_TENSOR_HEADER_BYTES if streamed else size
        self._stream_left = size - SET_TENSOR_HEADER_BYTES if streamed else 0
        self._buffer = bytearray()
        self._phase = _Phase.BODY

    def _finish_body(self, events: list[RpcRequestEvent]) -> None:
        body = bytes(self._buffer)
        if self._payload_bytes == len(body):
            events.append(RpcRequest(self._command, body))
            self._reset()
            return
        events.append(RpcRequestHead(self._command, self._payload_bytes, body))
        self._buffer = bytearray()
        self._want = 0
        self._phase = _Phase.STREAM

    def _pass_through(self, view: memoryview, pos: int, events: list[RpcRequestEvent]) -> int:
        take = min(self._stream_left, len(view) - pos)
        if take:
            events.append(RpcPayloadChunk(bytes(view[pos : pos + take])))
            self._stream_left -= take
        if self._stream_left == 0:
            events.append(RpcRequestEnd(self._command))
            self._reset()
        return pos + take

    def _reset(self) -> None:
        self._phase = _Phase.PREFIX
        self._buffer = bytearray()
        self._want = REQUEST_PREFIX.size


@dataclass(frozen=True, slots=True)
class _Pending:
    command: RpcCommand
    payload_bytes: int


class RpcResponseParser:
    """Server -> client. Register each request with `expect_reply_to` before its answer can arrive
    (a relay does so when it parses the request, before forwarding it), then feed server bytes."""

    def __init__(self) -> None:
        self._pending: deque[_Pending] = deque()
        self._buffer = bytearray()
        self._want = RESPONSE_PREFIX.size
        self._in_body = False
        self._broken = False

    @property
    def pending(self) -> int:
        """Requests still waiting for their response (each one a blocking round trip)."""
        return len(self._pending)

    @property
    def at_boundary(self) -> bool:
        return not self._in_body and not self._buffer

    def expect_reply_to(self, event: RpcRequestEvent) -> None:
        """Note a request that will be answered; events of unanswered commands are ignored."""
        if not isinstance(event, RpcRequest) or not expects_response(event.command):
            return  # streamed requests are SET_TENSOR, which gets no answer
        size = RESPONSE_PAYLOAD_BYTES[event.command]
        if size is None:
            (size,) = _U64.unpack_from(event.payload, _GET_TENSOR_SIZE_AT)
            if size > MAX_GET_TENSOR_RESPONSE_BYTES:
                raise RpcProtocolError(f"GET_TENSOR of {size} bytes exceeds the response cap")
        self._pending.append(_Pending(event.command, size))

    def feed(self, data: bytes | bytearray | memoryview) -> list[RpcResponse]:
        if self._broken:
            raise RpcProtocolError("the stream already failed to parse")
        view = memoryview(data).cast("B")
        responses: list[RpcResponse] = []
        pos = 0
        try:
            while pos < len(view) or (self._in_body and len(self._buffer) == self._want):
                take = min(self._want - len(self._buffer), len(view) - pos)
                self._buffer += view[pos : pos + take]
                pos += take
                if len(self._buffer) == self._want:
                    self._advance(responses)
        except RpcProtocolError:
            self._broken = True
            raise
        return responses

    def _advance(self, responses: list[RpcResponse]) -> None:
        if self._in_body:
            responses.append(RpcResponse(self._pending.popleft().command, bytes(self._buffer)))
            self._in_body, self._want = False, RESPONSE_PREFIX.size
        else:
            if not self._pending:
                raise RpcProtocolError("the server sent a response nobody asked for")
            (size,) = RESPONSE_PREFIX.unpack(self._buffer)
            expected = self._pending[0]
            if size != expected.payload_bytes:
                raise RpcProtocolError(
                    f"{expected.command.name} response is {size} bytes, expected {expected.payload_bytes}"
                )
            self._in_body, self._want = True, size
        self._buffer = bytearray()
