import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.mesh.rpc_messages import (
    GGML_MAX_DIMS,
    GGML_MAX_SRC,
    MAX_TENSOR_NAME_BYTES,
    OP_PARAM_COUNT,
    GetTensor,
    HelloResponse,
    RpcTensor,
    SetTensor,
    SetTensorHash,
    SetTensorHeader,
    decode_bool_response,
    fnv1a_64,
)
from services.mesh.rpc_protocol import (
    MAX_GET_TENSOR_RESPONSE_BYTES,
    MAX_GRAPH_COMPUTE_PAYLOAD_BYTES,
    MAX_SET_TENSOR_PAYLOAD_BYTES,
    REQUEST_PAYLOAD_BYTES,
    REQUEST_PREFIX,
    RESPONSE_PAYLOAD_BYTES,
    RPC_CONN_CAPS_BYTES,
    RPC_TENSOR_BYTES,
    SET_TENSOR_HEADER_BYTES,
    RpcCommand,
    RpcPayloadChunk,
    RpcProtocolError,
    RpcRequest,
    RpcRequestEnd,
    RpcRequestEvent,
    RpcRequestHead,
    RpcRequestParser,
    RpcResponse,
    RpcResponseParser,
    encode_request,
    encode_response,
    expects_response,
)

u8 = st.integers(0, 2**8 - 1)
u32 = st.integers(0, 2**32 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
u64 = st.integers(0, 2**64 - 1)
names = st.text(max_size=20).filter(lambda s: "\0" not in s and len(s.encode()) <= MAX_TENSOR_NAME_BYTES)

tensors = st.builds(
    RpcTensor,
    id=u64,
    type=u32,
    buffer=u64,
    ne=st.tuples(*[u32] * GGML_MAX_DIMS),
    nb=st.tuples(*[u32] * GGML_MAX_DIMS),
    op=u32,
    op_params=st.tuples(*[i32] * OP_PARAM_COUNT),
    flags=i32,
    src=st.tuples(*[u64] * GGML_MAX_SRC),
    view_src=u64,
    view_offs=u64,
    data=u64,
    name=names,
    use_count=i32,
)
HELLO = encode_request(RpcCommand.HELLO, bytes(RPC_CONN_CAPS_BYTES))
SMALL_STREAM_THRESHOLD_BYTES = 64


def _payload_for(command: RpcCommand, data_bytes: int, tensor: RpcTensor) -> bytes:
    size = REQUEST_PAYLOAD_BYTES[command]
    if command is RpcCommand.SET_TENSOR:
        return SetTensor(SetTensorHeader(tensor, 7), bytes(range(256)) * (data_bytes // 256) + b"x").encode()
    if command is RpcCommand.GRAPH_COMPUTE:
        return struct.pack("<III", 0, 0, 0) + b"\x01" * data_bytes
    if command is RpcCommand.GET_TENSOR:
        return GetTensor(tensor, 0, data_bytes).encode()
    assert size is not None
    return bytes((command + i) % 256 for i in range(size))


non_hello = st.sampled_from([c for c in RpcCommand if c is not RpcCommand.HELLO])
requests = st.lists(st.tuples(non_hello, st.integers(0, 1500), tensors), max_size=12).map(
    lambda items: (
        [(RpcCommand.HELLO, bytes(RPC_CONN_CAPS_BYTES))]
        + [(command, _payload_for(command, size, tensor)) for command, size, tensor in items]
    )
)


def _normalise(events: list[RpcRequestEvent]) -> list[object]:
    """Merge streamed chunks: how a stream is chunked on the way in may not change its meaning."""
    merged: list[object] = []
    for event in events:
        if isinstance(event, RpcPayloadChunk) and merged and isinstance(merged[-1], RpcPayloadChunk):
            merged[-1] = RpcPayloadChunk(merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


def _feed_in_pieces(parser: RpcRequestParser, data: bytes, cuts: list[int]) -> list[RpcRequestEvent]:
    events: list[RpcRequestEvent] = []
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for start, end in itertools.pairwise(bounds):
        events += parser.feed(data[start:end])
    return events


@given(tensors)
def test_rpc_tensor_round_trips(tensor: RpcTensor) -> None:
    raw = tensor.encode()
    assert len(raw) == RPC_TENSOR_BYTES
    assert RpcTensor.decode(raw) == tensor


@given(tensors, u64, st.booleans(), st.binary(max_size=300))
def test_set_tensor_round_trips(tensor: RpcTensor, offset: int, cache: bool, data: bytes) -> None:
    message = SetTensor(SetTensorHeader(tensor, offset, cache), data)
    raw = message.encode()
    assert len(raw) == SET_TENSOR_HEADER_BYTES + len(data)
    assert SetTensor.decode(raw) == message
    assert SetTensorHeader.decode(raw[:SET_TENSOR_HEADER_BYTES]) == message.header


@given(tensors, u64, u64)
def test_hash_and_get_round_trip(tensor: RpcTensor, offset: int, value: int) -> None:
    hashed = SetTensorHash(tensor, offset, value)
    assert SetTensorHash.decode(hashed.encode()) == hashed
    assert len(hashed.encode()) == REQUEST_PAYLOAD_BYTES[RpcCommand.SET_TENSOR_HASH]
    get = GetTensor(tensor, offset, value)
    assert GetTensor.decode(get.encode()) == get


def test_hello_response_round_trips_and_checks_version() -> None:
    hello = HelloResponse(7, 0, 3, bytes(range(RPC_CONN_CAPS_BYTES)))
    assert HelloResponse.decode(hello.encode()) == hello
    assert len(hello.encode()) == RESPONSE_PAYLOAD_BYTES[RpcCommand.HELLO]
    assert hello.compatible
    assert not HelloResponse(6).compatible and not HelloResponse(7, 1).compatible


def test_encoders_reject_what_the_wire_cannot_carry() -> None:
    with pytest.raises(ValueError):
        RpcTensor(name="x" * (MAX_TENSOR_NAME_BYTES + 1)).encode()
    with pytest.raises(ValueError):
        RpcTensor(id=2**64).encode()
    with pytest.raises(ValueError):
        RpcTensor(ne=(1, 2)).encode()
    with pytest.raises(ValueError):
        GetTensor(RpcTensor(), -1, 0).encode()


def test_fnv_matches_the_reference_vectors() -> None:
    assert fnv1a_64(b"") == 0xCBF29CE484222325
    assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a_64(b"foobar") == 0x85944171F73967E8


@settings(max_examples=60)
@given(requests, st.lists(st.integers(0, 10**6), max_size=30), st.sampled_from([0, 64, 10**6]))
def test_chunking_never_changes_the_events(
    reqs: list[tuple[RpcCommand, bytes]], cuts: list[int], threshold: int
) -> None:
    stream = b"".join(encode_request(command, payload) for command, payload in reqs)
    whole = RpcRequestParser(threshold).feed(stream)
    pieces = _feed_in_pieces(RpcRequestParser(threshold), stream, cuts)
    assert _normalise(pieces) == _normalise(whole)
    buffered = [e for e in whole if isinstance(e, RpcRequest)]
    heads = [e for e in whole if isinstance(e, RpcRequestHead)]
    assert len(buffered) + len(heads) == len(reqs)


@settings(max_examples=15)
@given(requests)
def test_byte_by_byte_equals_all_at_once(reqs: list[tuple[RpcCommand, bytes]]) -> None:
    stream = b"".join(encode_request(command, payload) for command, payload in reqs)
    parser = RpcRequestParser(SMALL_STREAM_THRESHOLD_BYTES)
    one_by_one = [e for i in range(len(stream)) for e in parser.feed(stream[i : i + 1])]
    assert _normalise(one_by_one) == _normalise(RpcRequestParser(SMALL_STREAM_THRESHOLD_BYTES).feed(stream))
    assert parser.at_boundary


def test_big_set_tensor_streams_as_head_chunks_end() -> None:
    tensor = RpcTensor(id=1, name="blk.0.attn_q.weight", data=4096)
    data = bytes(range(256)) * 4096  # 1 MiB
    payload = SetTensor(SetTensorHeader(tensor, 512), data).encode()
    parser = RpcRequestParser(stream_set_tensor_above_bytes=1024)
    stream = HELLO + encode_request(RpcCommand.SET_TENSOR, payload)
    events = [e for i in range(0, len(stream), 65536) for e in parser.feed(stream[i : i + 65536])]
    head = events[1]
    assert isinstance(head, RpcRequestHead) and head.payload_bytes == len(payload)
    assert SetTensorHeader.decode(head.head) == SetTensorHeader(tensor, 512)
    chunks = [e.data for e in events if isinstance(e, RpcPayloadChunk)]
    assert b"".join(chunks) == data and len(chunks) > 1
    assert events[-1] == RpcRequestEnd(RpcCommand.SET_TENSOR)


def test_small_set_tensor_and_empty_payload_arrive_whole() -> None:
    payload = SetTensor(SetTensorHeader(RpcTensor(name="n"), 0), b"abc").encode()
    stream = (
        HELLO + encode_request(RpcCommand.SET_TENSOR, payload) + encode_request(RpcCommand.DEVICE_COUNT, b"")
    )
    events = RpcRequestParser().feed(stream)
    assert events[1:] == [
        RpcRequest(RpcCommand.SET_TENSOR, payload),
        RpcRequest(RpcCommand.DEVICE_COUNT, b""),
    ]


@pytest.mark.parametrize(
    "stream",
    [
        encode_request(RpcCommand.DEVICE_COUNT, b""),  # before HELLO
        HELLO + HELLO,
        HELLO + bytes([18]) + bytes(8),  # RPC_CMD_NONE never goes on the wire
        HELLO + bytes([255]) + bytes(8),
        HELLO + REQUEST_PREFIX.pack(RpcCommand.GET_ALIGNMENT, 5),
        HELLO + REQUEST_PREFIX.pack(RpcCommand.SET_TENSOR, SET_TENSOR_HEADER_BYTES - 1),
        HELLO + REQUEST_PREFIX.pack(RpcCommand.SET_TENSOR, MAX_SET_TENSOR_PAYLOAD_BYTES + 1),
        HELLO + REQUEST_PREFIX.pack(RpcCommand.GRAPH_COMPUTE, MAX_GRAPH_COMPUTE_PAYLOAD_BYTES + 1),
        HELLO + REQUEST_PREFIX.pack(RpcCommand.GRAPH_COMPUTE, 2**64 - 1),
    ],
)
def test_impossible_requests_are_rejected(stream: bytes) -> None:
    parser = RpcRequestParser()
    with pytest.raises(RpcProtocolError):
        parser.feed(stream)
    with pytest.raises(RpcProtocolError):  # a broken stream cannot resynchronise
        parser.feed(HELLO)


@given(st.binary(max_size=600), st.booleans())
def test_garbage_raises_only_protocol_errors(garbage: bytes, after_hello: bool) -> None:
    requests = RpcRequestParser(SMALL_STREAM_THRESHOLD_BYTES)
    responses = RpcResponseParser()
    prefix = HELLO if after_hello else b""
    try:
        for event in requests.feed(prefix + garbage):
            responses.expect_reply_to(event)
    except RpcProtocolError:
        pass
    try:
        responses.feed(garbage)
    except RpcProtocolError:
        pass


@given(st.binary(min_size=RPC_TENSOR_BYTES, max_size=RPC_TENSOR_BYTES + 400))
def test_decoders_accept_any_bytes_or_raise_protocol_errors(raw: bytes) -> None:
    RpcTensor.decode(raw)
    if len(raw) >= SET_TENSOR_HEADER_BYTES:
        SetTensor.decode(raw)
    for decoder in (SetTensorHash.decode, GetTensor.decode, HelloResponse.decode, decode_bool_response):
        try:
            decoder(raw)
        except RpcProtocolError:
            pass


def _answer(command: RpcCommand, request_payload: bytes) -> bytes:
    size = RESPONSE_PAYLOAD_BYTES[command]
    if size is None:
        size = GetTensor.decode(request_payload).size
    return bytes((command + i) % 256 for i in range(size))


@settings(max_examples=60)
@given(requests, st.lists(st.integers(0, 10**5), max_size=20))
def test_responses_pair_with_their_requests_in_order(
    reqs: list[tuple[RpcCommand, bytes]], cuts: list[int]
) -> None:
    parser = RpcResponseParser()
    expected = []
    for command, payload in reqs:
        parser.expect_reply_to(RpcRequest(command, payload))
        if expects_response(command):
            expected.append(RpcResponse(command, _answer(command, payload)))
    stream = b"".join(encode_response(r.payload) for r in expected)
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    got = [r for a, b in itertools.pairwise(bounds) for r in parser.feed(stream[a:b])]
    assert got == expected
    assert parser.pending == 0 and parser.at_boundary


def test_unasked_or_missized_responses_are_rejected() -> None:
    with pytest.raises(RpcProtocolError, match="nobody asked"):
        RpcResponseParser().feed(encode_response(b"\0"))
    parser = RpcResponseParser()
    parser.expect_reply_to(RpcRequest(RpcCommand.GET_ALIGNMENT, bytes(4)))
    with pytest.raises(RpcProtocolError, match="expected 8"):
        parser.feed(encode_response(bytes(9)))
    get = GetTensor(RpcTensor(), 0, MAX_GET_TENSOR_RESPONSE_BYTES + 1).encode()
    with pytest.raises(RpcProtocolError, match="cap"):
        RpcResponseParser().expect_reply_to(RpcRequest(RpcCommand.GET_TENSOR, get))


def test_fire_and_forget_commands_expect_nothing() -> None:
    parser = RpcResponseParser()
    for command in (RpcCommand.SET_TENSOR, RpcCommand.GRAPH_COMPUTE, RpcCommand.FREE_BUFFER):
        parser.expect_reply_to(RpcRequest(command, b""))
    parser.expect_reply_to(RpcRequestHead(RpcCommand.SET_TENSOR, 10**9, b""))
    assert parser.pending == 0
    assert not expects_response(RpcCommand.GRAPH_RECOMPUTE)
