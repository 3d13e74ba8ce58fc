"""The split host's answers to llama.cpp's static RPC queries (services/mesh/rpc_answers.py).

Bytes are built with the protocol's own encoders, byte-exact with the pinned ggml-rpc.cpp; a real
rpc-server behind a real tunnel is in tests/integration/mesh/test_rpc_tunnel.py.
"""

from __future__ import annotations

import struct

import pytest

from services.mesh.rpc_answers import MEMORY_ANSWER_MAX_AGE_S, AnswerBook, FrontDesk
from services.mesh.rpc_messages import HelloResponse, RpcTensor
from services.mesh.rpc_protocol import (
    GGML_MAX_SRC,
    RPC_CONN_CAPS_BYTES,
    RPC_TENSOR_BYTES,
    RpcCommand,
    RpcProtocolError,
    encode_request,
    encode_response,
)

HELLO = encode_request(RpcCommand.HELLO, bytes(RPC_CONN_CAPS_BYTES))
HELLO_ANSWER = HelloResponse(patch=3).encode()
DEVICE_COUNT = encode_request(RpcCommand.DEVICE_COUNT, b"")
ALIGNMENT = encode_request(RpcCommand.GET_ALIGNMENT, struct.pack("<I", 0))
MEMORY = encode_request(RpcCommand.GET_DEVICE_MEMORY, struct.pack("<I", 0))
ALLOC_BUFFER = encode_request(RpcCommand.ALLOC_BUFFER, struct.pack("<IQ", 0, 4096))


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def alloc_size_request(tensor: RpcTensor, first_src: RpcTensor | None = None) -> bytes:
    srcs = [first_src.encode() if first_src else bytes(RPC_TENSOR_BYTES)]
    srcs += [bytes(RPC_TENSOR_BYTES)] * (GGML_MAX_SRC - 1)
    return encode_request(RpcCommand.GET_ALLOC_SIZE, u32(0) + tensor.encode() + b"".join(srcs))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def learned_book(clock: Clock) -> AnswerBook:
    """A book that saw one connection ask HELLO, DEVICE_COUNT, alignment and memory."""
    book = AnswerBook("rpc-server 1")
    desk = FrontDesk(book, clock)
    answers, to_worker = desk.from_llama_server(HELLO + DEVICE_COUNT + ALIGNMENT + MEMORY)
    assert answers == b"" and b"".join(to_worker) == HELLO + DEVICE_COUNT + ALIGNMENT + MEMORY
    replies = [encode_response(HELLO_ANSWER), encode_response(u32(1)), encode_response(u64(32))]
    replies.append(encode_response(u64(5 << 30) + u64(8 << 30)))
    assert b"".join(desk.from_worker(b"".join(replies))) == b"".join(replies)
    assert len(book) == 4 and desk.answered_here == 0
    return book


def test_a_cold_connection_passes_through_and_its_answers_are_learned() -> None:
    learned_book(Clock())


def test_a_connection_that_only_asks_what_the_book_knows_never_reaches_the_worker() -> None:
    clock = Clock()
    desk = FrontDesk(learned_book(clock), clock)
    answers, to_worker = desk.from_llama_server(HELLO + DEVICE_COUNT)
    assert to_worker == [] and not desk.forwarding
    assert answers == encode_response(HELLO_ANSWER) + encode_response(u32(1))
    answers, to_worker = desk.from_llama_server(MEMORY)
    assert answers == encode_response(u64(5 << 30) + u64(8 << 30)) and to_worker == []
    assert desk.answered_here == 3


def test_the_first_other_request_goes_with_the_held_hello_whose_answer_is_dropped() -> None:
    clock = Clock()
    desk = FrontDesk(learned_book(clock), clock)
    answers, to_worker = desk.from_llama_server(HELLO + ALIGNMENT)
    assert answers == encode_response(HELLO_ANSWER) + encode_response(u64(32)) and to_worker == []
    set_tensor = encode_request(RpcCommand.SET_TENSOR, bytes(RPC_TENSOR_BYTES + 9) + b"weights")
    answers, to_worker = desk.from_llama_server(ALLOC_BUFFER + set_tensor)
    assert answers == b"" and b"".join(to_worker) == HELLO + ALLOC_BUFFER + set_tensor
    assert desk.forwarding and not desk.transparent  # the HELLO answer is still owed
    alloc_answer = encode_response(u64(0x7F00) + u64(4096))
    later = encode_response(u64(0x8F00) + u64(4096))
    # Split anywhere, the worker's HELLO answer is dropped and everything after it passes unchanged.
    back = encode_response(HELLO_ANSWER) + alloc_answer + later
    out = [desk.from_worker(back[i : i + 1]) for i in range(len(back))]
    assert b"".join(b"".join(piece) for piece in out) == alloc_answer + later
    assert desk.transparent
    assert desk.from_llama_server(b"anything") == (b"", [b"anything"])
    assert desk.from_worker(b"raw") == [b"raw"]


def test_after_the_first_forwarded_query_nothing_is_answered_here() -> None:
    """An answer given here must never overtake one the worker still owes."""
    clock = Clock()
    book = learned_book(clock)
    desk = FrontDesk(book, clock)
    max_size = encode_request(RpcCommand.GET_MAX_SIZE, u32(0))
    answers, to_worker = desk.from_llama_server(HELLO + max_size)
    assert answers == encode_response(HELLO_ANSWER) and b"".join(to_worker) == HELLO + max_size
    answers, to_worker = desk.from_llama_server(DEVICE_COUNT)
    assert answers == b"" and to_worker == [DEVICE_COUNT]
    back = desk.from_worker(encode_response(HELLO_ANSWER) + encode_response(u64(1 << 40)))
    assert b"".join(back) == encode_response(u64(1 << 40))
    assert book.answer(RpcCommand.GET_MAX_SIZE, u32(0), clock()) == u64(1 << 40)  # learned on the way


def test_a_different_rpc_server_behind_the_held_hello_drops_the_connection() -> None:
    clock = Clock()
    desk = FrontDesk(learned_book(clock), clock)
    desk.from_llama_server(HELLO)
    desk.from_llama_server(ALLOC_BUFFER)
    with pytest.raises(RpcProtocolError, match="not the one"):
        desk.from_worker(encode_response(HelloResponse(patch=4).encode()))


def test_alloc_sizes_are_known_by_shape_not_by_the_pointers_of_one_load() -> None:
    clock = Clock()
    book = AnswerBook("rpc-server 1")
    weight = RpcTensor(id=0x5500, type=12, ne=(640, 2048, 1, 1), nb=(144, 360, 737280, 737280), name="blk.0")
    source = RpcTensor(id=0x5600, type=0, ne=(640, 7, 1, 1), data=0x9000)
    desk = FrontDesk(book, clock)
    desk.from_llama_server(HELLO + alloc_size_request(weight, source))
    desk.from_worker(encode_response(HELLO_ANSWER) + encode_response(u64(737792)))
    next_load = RpcTensor(id=0x7700, type=12, ne=weight.ne, nb=weight.nb, name="blk.0")
    again = FrontDesk(book, clock)
    answers, to_worker = again.from_llama_server(
        HELLO + alloc_size_request(next_load, RpcTensor(id=0x1, type=0, ne=source.ne, data=0x42))
    )
    assert to_worker == [] and answers.endswith(encode_response(u64(737792)))
    other_shape = RpcTensor(id=0x7700, type=12, ne=(640, 1024, 1, 1), nb=weight.nb)
    answers, to_worker = FrontDesk(book, clock).from_llama_server(HELLO + alloc_size_request(other_shape))
    assert answers == encode_response(HELLO_ANSWER)
    assert b"".join(to_worker) == HELLO + alloc_size_request(other_shape)


def test_free_memory_is_asked_again_once_the_answer_is_old() -> None:
    clock = Clock()
    book = learned_book(clock)
    clock.now += MEMORY_ANSWER_MAX_AGE_S + 1
    answers, to_worker = FrontDesk(book, clock).from_llama_server(HELLO + DEVICE_COUNT + MEMORY)
    assert answers == encode_response(HELLO_ANSWER) + encode_response(u32(1))
    assert b"".join(to_worker) == HELLO + MEMORY  # the static ones still come from the book


def test_without_a_book_everything_goes_to_the_worker_unchanged() -> None:
    desk = FrontDesk(None, Clock())
    answers, to_worker = desk.from_llama_server(HELLO[:5])
    assert answers == b"" and to_worker == []  # a partial request waits for the rest
    answers, to_worker = desk.from_llama_server(HELLO[5:] + DEVICE_COUNT)
    assert b"".join(to_worker) == HELLO + DEVICE_COUNT
    assert b"".join(desk.from_worker(encode_response(HELLO_ANSWER))) == encode_response(HELLO_ANSWER)


def test_a_query_of_the_wrong_size_is_the_worker_s_to_refuse() -> None:
    clock = Clock()
    desk = FrontDesk(learned_book(clock), clock)
    bad = encode_request(RpcCommand.DEVICE_COUNT, b"\x00")
    answers, to_worker = desk.from_llama_server(HELLO + bad)
    assert answers == encode_response(HELLO_ANSWER) and b"".join(to_worker) == HELLO + bad
    unknown = FrontDesk(learned_book(clock), clock)
    assert b"".join(unknown.from_llama_server(bytes([99]) + u64(0))[1]) == bytes([99]) + u64(0)


@pytest.mark.parametrize(
    "reply, match",
    [(encode_response(u64(7)), "expected 4"), (encode_response(u32(1)) + b"extra", "nobody sent")],
)
def test_answers_that_do_not_fit_the_questions_drop_the_connection(reply: bytes, match: str) -> None:
    desk = FrontDesk(AnswerBook("rpc-server 1"), Clock())
    desk.from_llama_server(DEVICE_COUNT)
    with pytest.raises(RpcProtocolError, match=match):
        desk.from_worker(reply)


def test_an_answer_with_no_question_drops_the_connection() -> None:
    desk = FrontDesk(AnswerBook("rpc-server 1"), Clock())
    with pytest.raises(RpcProtocolError, match="nobody sent"):
        desk.from_worker(encode_response(u32(1)))
