"""A split host answers llama.cpp's static RPC queries itself, sans-IO: no round trip to the worker.

llama-server opens about a dozen RPC connections per model load, one after another, and all but
one of them only ask questions whose answers a given rpc-server process never changes: HELLO
(version, transport caps), DEVICE_COUNT, GET_ALIGNMENT and GET_MAX_SIZE per device, and
GET_ALLOC_SIZE per tensor shape (llama.cpp itself caches those for the life of its process, keyed
by device, type, op, op params and shape). At 20 ms RTT each such connection cost two round trips.

`AnswerBook` holds the answers one worker's rpc-server process gave (one book per rpc-server
instance, named by the worker in its RpcOffer), learned from connections that passed through.
`FrontDesk` is one llama-server connection: while it only asks what the book knows, it is answered
here and the worker never sees it. The first request the book cannot answer is forwarded, with the
connection's HELLO in front of it (rpc-server wants HELLO first on every connection); that HELLO's
answer is dropped on the way back (llama-server already has it) after checking it is the book's.
From the first forwarded request on, nothing more is answered here: answers never overtake the
worker's. Until a request other than these queries goes by, the worker's answers are parsed and
learned; after it, both directions are passed through untouched.

GET_DEVICE_MEMORY is the one dynamic answer: free memory. It is learned only before any buffer is
allocated on that connection (so it is what a load starts from: an rpc-server frees a client's
buffers when its connection ends) and used for MEMORY_ANSWER_MAX_AGE_S after.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from services.mesh.rpc_messages import RpcTensor
from services.mesh.rpc_protocol import (
    REQUEST_PAYLOAD_BYTES,
    REQUEST_PREFIX,
    RESPONSE_PAYLOAD_BYTES,
    RESPONSE_PREFIX,
    RPC_TENSOR_BYTES,
    RpcCommand,
    RpcProtocolError,
    encode_response,
)
from services.mesh.rpc_zero_transfer import Output

# A worker's free memory as a load starts changes little from one load to the next (the rpc-server
# frees a client's buffers when it goes); a runner restarting a crashed llama-server is seconds.
MEMORY_ANSWER_MAX_AGE_S = 120.0
# A load asks a few dozen distinct questions; the bound only keeps a misbehaving client from
# growing the book without end (past it, questions go to the worker as before).
MAX_ANSWERS = 4096

ANSWERABLE = frozenset(
    {
        RpcCommand.HELLO,
        RpcCommand.DEVICE_COUNT,
        RpcCommand.GET_ALIGNMENT,
        RpcCommand.GET_MAX_SIZE,
        RpcCommand.GET_ALLOC_SIZE,
        RpcCommand.GET_DEVICE_MEMORY,
    }
)


def _shape_only(tensor: RpcTensor) -> RpcTensor:
    """The tensor without the client's and server's pointers (they differ on every load), keeping
    whether it has a buffer (which decides the server's buffer type) and a view source."""
    return dataclasses.replace(
        tensor,
        id=0,
        buffer=int(tensor.buffer != 0),
        src=tuple(int(s != 0) for s in tensor.src),
        view_src=int(tensor.view_src != 0),
        data=0,
        name="",
    )


def answer_key(command: RpcCommand, payload: bytes) -> bytes:
    """What an answer depends on: the request itself, for GET_ALLOC_SIZE without its pointers."""
    if command is not RpcCommand.GET_ALLOC_SIZE:
        return bytes([command]) + payload
    key = bytearray([command]) + payload[:4]  # the device
    for at in range(4, len(payload), RPC_TENSOR_BYTES):
        tensor = RpcTensor.decode(payload, at)
        key += _shape_only(tensor).encode() if tensor.id else bytes(RPC_TENSOR_BYTES)
    return bytes(key)


@dataclass
class AnswerBook:
    """The answers of one rpc-server process (`instance`, as its worker names it)."""

    instance: str
    _answers: dict[bytes, bytes] = field(default_factory=dict)
    _memory: dict[bytes, tuple[bytes, float]] = field(default_factory=dict)

    def answer(self, command: RpcCommand, payload: bytes, now: float) -> bytes | None:
        key = answer_key(command, payload)
        if command is RpcCommand.GET_DEVICE_MEMORY:
            known = self._memory.get(key)
            return known[0] if known and now - known[1] <= MEMORY_ANSWER_MAX_AGE_S else None
        return self._answers.get(key)

    def learn(self, command: RpcCommand, payload: bytes, response: bytes, now: float) -> None:
        key = answer_key(command, payload)
        if len(self) >= MAX_ANSWERS and key not in self._answers and key not in self._memory:
            return
        if command is RpcCommand.GET_DEVICE_MEMORY:
            self._memory[key] = (response, now)
        else:
            self._answers[key] = response

    def __len__(self) -> int:
        return len(self._answers) + len(self._memory)


@dataclass(frozen=True, slots=True)
class _Owed:
    """A forwarded query whose answer comes back: learned, and passed on unless `drop`."""

    command: RpcCommand
    payload: bytes
    drop: bool = False


class FrontDesk:
    """One llama-server connection at the split host. `from_llama_server` says what to answer
    llama-server now and what to send the worker; `from_worker` what to pass back. Raises
    RpcProtocolError where the worker's answers do not fit what was asked (drop the connection)."""

    def __init__(self, book: AnswerBook | None, clock: Callable[[], float]) -> None:
        self.book = book
        self._clock = clock
        self._buffer = bytearray()
        self._held_hello: bytes | None = None  # the request, answered here, not yet sent
        self._owed: deque[_Owed] = deque()
        self._reply = bytearray()
        self.forwarding = False  # something was (or is to be) sent to the worker
        self._querying = True  # every request so far was one of ANSWERABLE
        self.answered_here = 0

    @property
    def transparent(self) -> bool:
        """Nothing more is answered, learned or dropped here in either direction."""
        return not self._querying and not self._owed

    def from_llama_server(self, data: bytes) -> tuple[bytes, Output]:
        """(bytes to answer llama-server with, pieces to send the worker, in order)."""
        if not self._querying:
            return b"", [data]
        self._buffer += data
        answers = bytearray()
        to_worker: Output = []
        while self._querying:
            request = self._next_request()
            if request is None:
                break
            command, payload, raw = request
            known = (
                None
                if self.forwarding or self.book is None
                else self.book.answer(command, payload, self._clock())
            )
            if known is not None:
                if command is RpcCommand.HELLO:
                    self._held_hello = raw
                answers += encode_response(known)
                self.answered_here += 1
            else:
                self._start_forwarding(to_worker)
                to_worker.append(raw)
                self._owed.append(_Owed(command, payload))
        if not self._querying:
            self._start_forwarding(to_worker)
            if self._buffer:
                to_worker.append(bytes(self._buffer))
            self._buffer = bytearray()
        return bytes(answers), to_worker

    def from_worker(self, data: bytes) -> Output:
        if not self._owed:
            if self._querying:
                raise RpcProtocolError("the worker answered a request nobody sent it")
            return [data]
        self._reply += data
        out: Output = []
        while self._owed:
            owed = self._owed[0]
            size = RESPONSE_PAYLOAD_BYTES[owed.command] or 0
            if len(self._reply) < RESPONSE_PREFIX.size + size:
                break
            (announced,) = RESPONSE_PREFIX.unpack_from(self._reply)
            if announced != size:
                raise RpcProtocolError(f"{owed.command.name} answer is {announced} bytes, expected {size}")
            end = RESPONSE_PREFIX.size + size
            reply = bytes(self._reply[RESPONSE_PREFIX.size : end])
            del self._reply[:end]
            self._owed.popleft()
            self._settle(owed, reply, out)
        if not self._owed and self._reply:
            if self._querying:
                raise RpcProtocolError("the worker answered a request nobody sent it")
            out.append(bytes(self._reply))
            self._reply = bytearray()
        return out

    def _settle(self, owed: _Owed, reply: bytes, out: Output) -> None:
        known = self.book.answer(owed.command, owed.payload, self._clock()) if self.book else None
        if owed.drop and known is not None and known != reply:
            raise RpcProtocolError("the worker's rpc-server is not the one whose answers were given")
        if self.book is not None:  # every owed query was sent before any other request
            self.book.learn(owed.command, owed.payload, reply, self._clock())
        if not owed.drop:
            out.append(encode_response(reply))

    def _start_forwarding(self, to_worker: Output) -> None:
        if self.forwarding:
            return
        self.forwarding = True
        if self._held_hello is not None:
            to_worker.append(self._held_hello)
            self._owed.append(_Owed(RpcCommand.HELLO, self._held_hello[REQUEST_PREFIX.size :], drop=True))
            self._held_hello = None

    def _next_request(self) -> tuple[RpcCommand, bytes, bytes] | None:
        """The next whole query in the buffer; None if incomplete, or (setting `_querying` off)
        if the next request is anything else."""
        if len(self._buffer) < REQUEST_PREFIX.size:
            return None
        command_byte, size = REQUEST_PREFIX.unpack_from(self._buffer)
        if command_byte not in RpcCommand._value2member_map_:
            self._querying = False
            return None
        command = RpcCommand(command_byte)
        if command not in ANSWERABLE or size != REQUEST_PAYLOAD_BYTES[command]:
            self._querying = False  # the worker's rpc-server is the judge of anything else
            return None
        end = REQUEST_PREFIX.size + size
        if len(self._buffer) < end:
            return None
        raw = bytes(self._buffer[:end])
        del self._buffer[:end]
        return command, raw[REQUEST_PREFIX.size :], raw
