"""HostHalf -> WorkerHalf (services/mesh/rpc_zero_transfer.py) on streams built from a tiny GGUF."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.mesh.gguf_index import GgufIndex, parse_gguf_index
from services.mesh.rpc_messages import RpcTensor, SetTensor, SetTensorHeader
from services.mesh.rpc_protocol import (
    REQUEST_PREFIX,
    RPC_CONN_CAPS_BYTES,
    RpcCommand,
    RpcProtocolError,
    RpcRequest,
    RpcRequestParser,
    encode_request,
)
from services.mesh.rpc_zero_transfer import (
    FROM_FILE_PAYLOAD_BYTES,
    MESH_SET_TENSOR_FROM_FILE,
    HostHalf,
    WorkerHalf,
    ZeroTransferError,
    encode_from_file,
    open_gguf_image,
)
from tests.support.tiny_gguf import write_tiny_llama_gguf

HELLO = encode_request(RpcCommand.HELLO, bytes(RPC_CONN_CAPS_BYTES))
ALLOC = encode_request(RpcCommand.ALLOC_BUFFER, struct.pack("<IQ", 0, 1 << 20))
COMPUTE = encode_request(RpcCommand.GRAPH_COMPUTE, struct.pack("<III", 0, 0, 0) + bytes(range(200)))
# Small enough that the tiny model's bigger tensors arrive as head + chunks + end.
STREAM_ABOVE_BYTES = 4096
BUFFER_BASE = 0x1000


class Model(NamedTuple):
    image: bytes
    gguf_index: GgufIndex

    def __repr__(self) -> str:  # hypothesis prints its arguments on failure: not 500 kB of weights
        return f"Model({len(self.image)} bytes, {len(self.gguf_index.tensors)} tensors)"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    path = write_tiny_llama_gguf(tmp_path_factory.mktemp("zt") / "tiny.gguf", n_layers=2)
    image = path.read_bytes()
    return Model(image, parse_gguf_index(image))


def set_tensor(name: str, offset: int, data: bytes, cache_flag: bool = False) -> bytes:
    header = SetTensorHeader(
        RpcTensor(id=7, buffer=BUFFER_BASE, data=BUFFER_BASE, name=name), offset, cache_flag
    )
    return encode_request(RpcCommand.SET_TENSOR, SetTensor(header, data).encode())


def weight_uploads(image: bytes, index: GgufIndex) -> list[bytes]:
    """Every tensor as llama.cpp uploads it: whole, except every third one in two offset pieces."""
    uploads = []
    for number, (name, extent) in enumerate(sorted(index.tensors.items())):
        data = image[extent.offset : extent.offset + extent.size]
        if number % 3 == 0 and extent.size > 2:
            half = extent.size // 2
            uploads += [set_tensor(name, 0, data[:half]), set_tensor(name, half, data[half:], True)]
        else:
            uploads.append(set_tensor(name, 0, data))
    return uploads


def load_stream(image: bytes, index: GgufIndex) -> bytes:
    activations = set_tensor("inp_embd", 0, bytes(range(256)) * 40)
    return b"".join([HELLO, ALLOC, *weight_uploads(image, index), activations, COMPUTE])


def through(host: HostHalf, worker: WorkerHalf, pieces: Iterable[bytes]) -> tuple[bytes, bytes]:
    """(mesh bytes, rpc-server bytes) for `pieces` fed one by one."""
    mesh: list[bytes] = []
    local: list[bytes] = []
    for piece in pieces:
        for out in host.feed(piece):
            mesh.append(bytes(out))
            local += [bytes(expanded) for expanded in worker.feed(out)]
    return b"".join(mesh), b"".join(local)


def halves(model: Model, worker_image: bytes | None = None) -> tuple[HostHalf, WorkerHalf]:
    image, index = model
    return HostHalf(image, index, STREAM_ABOVE_BYTES), WorkerHalf(worker_image or image, index)


def applied(stream: bytes) -> tuple[dict[str, bytearray], list[RpcRequest]]:
    """What rpc-server ends up with: each tensor's written bytes, and every other request in order."""
    memory: dict[str, bytearray] = {}
    others = []
    for event in RpcRequestParser(len(stream) + 1).feed(stream):
        assert isinstance(event, RpcRequest)
        if event.command is not RpcCommand.SET_TENSOR:
            others.append(event)
            continue
        message = SetTensor.decode(event.payload)
        target = memory.setdefault(message.header.tensor.name, bytearray())
        end = message.header.offset + len(message.data)
        target.extend(bytes(max(0, end - len(target))))
        target[message.header.offset : end] = message.data
    return memory, others


def test_unmodified_weights_cross_as_references_and_come_out_byte_identical(
    model: Model,
) -> None:
    image, index = model
    stream = load_stream(image, index)
    host, worker = halves(model)
    mesh, local = through(host, worker, [stream])
    assert local == stream
    weights = sum(extent.size for extent in index.tensors.values())
    assert host.counters.weight_bytes_raw == 0
    assert host.counters.weight_bytes_by_reference == weights == worker.counters.file_bytes
    assert host.counters.request_bytes_in == len(stream) and host.counters.bytes_out == len(mesh)
    assert len(mesh) < len(stream) - weights + 400 * host.counters.references
    assert host.counters.requests == worker.counters.requests
    assert host.at_boundary and worker.at_boundary


def test_a_modified_middle_range_alone_goes_raw(model: Model) -> None:
    image, index = model
    name, extent = max(index.tensors.items(), key=lambda item: item[1].size)
    data = bytearray(image[extent.offset : extent.offset + extent.size])
    start, end = extent.size // 3, extent.size // 3 + 5000
    data[start:end] = bytes(b ^ 0xFF for b in data[start:end])
    stream = HELLO + set_tensor(name, 0, bytes(data))
    host, worker = halves(model)
    mesh, local = through(host, worker, [stream[i : i + 3000] for i in range(0, len(stream), 3000)])
    assert host.counters.weight_bytes_raw == end - start
    assert host.counters.weight_bytes_by_reference == extent.size - (end - start)
    assert len(mesh) < len(stream) - extent.size + (end - start) + 2000
    assert applied(local) == applied(stream)


def test_requests_without_gguf_weights_pass_through_untouched(model: Model) -> None:
    extent = model.gguf_index.tensors["output_norm.weight"]
    stream = b"".join(
        [
            HELLO,
            ALLOC,
            set_tensor("cache_k_l0", 0, bytes(range(256)) * 64),  # streamed, not a GGUF name
            set_tensor("inp_pos", 8, b"\1\2\3\4"),
            set_tensor("output_norm.weight", 0, b""),  # no data: nothing to reference
            COMPUTE,
            encode_request(RpcCommand.DEVICE_COUNT, b""),
        ]
    )
    host, worker = halves(model)
    mesh, local = through(host, worker, [stream])
    assert mesh == local == stream
    assert host.counters.references == 0 and host.counters.weight_bytes_raw == 0
    assert extent.size > 0


def test_data_past_the_tensor_extent_goes_raw(model: Model) -> None:
    image, index = model
    extent = index.tensors["output_norm.weight"]
    tail = image[extent.offset + extent.size - 16 : extent.offset + extent.size]
    stream = HELLO + set_tensor("output_norm.weight", extent.size - 16, tail + b"beyond")
    host, worker = halves(model)
    _, local = through(host, worker, [stream])
    assert host.counters.weight_bytes_by_reference == 16 and host.counters.weight_bytes_raw == 6
    assert applied(local) == applied(stream)


def test_the_worker_reads_its_own_file(model: Model) -> None:
    """The proof that weights did not travel: a worker whose copy differs writes its own bytes."""
    image, index = model
    extent = index.tensors["output_norm.weight"]
    theirs = bytearray(image)
    theirs[extent.offset : extent.offset + extent.size] = bytes(extent.size)
    stream = HELLO + set_tensor("output_norm.weight", 0, image[extent.offset : extent.offset + extent.size])
    host, worker = halves(model, bytes(theirs))
    _, local = through(host, worker, [stream])
    memory, _ = applied(local)
    assert memory["output_norm.weight"] == bytes(extent.size)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 10**7), max_size=40))
def test_feed_chunking_never_changes_the_output(model: Model, cuts: list[int]) -> None:
    image, index = model
    stream = load_stream(image, index)
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    host, worker = halves(model)
    chunked = through(host, worker, [stream[a:b] for a, b in itertools.pairwise(bounds)])
    assert chunked == through(*halves(model), [stream])
    assert chunked[1] == stream


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 3000)), max_size=6),
    st.integers(500, 20_000),
)
def test_any_modification_is_written_exactly(model: Model, edits: list[tuple[int, int]], chunk: int) -> None:
    image, index = model
    name, extent = max(index.tensors.items(), key=lambda item: item[1].size)
    original = np.frombuffer(image, np.uint8, extent.size, extent.offset)
    data = original.copy()
    for at, length in edits:
        data[at % extent.size : at % extent.size + length] ^= 0x5A
    differing = int((data != original).sum())
    stream = HELLO + set_tensor(name, 0, data.tobytes()) + COMPUTE
    host, worker = halves(model)
    _, local = through(host, worker, [stream[i : i + chunk] for i in range(0, len(stream), chunk)])
    assert applied(local) == applied(stream)
    counters = host.counters
    assert counters.weight_bytes_raw + counters.weight_bytes_by_reference == extent.size
    assert counters.weight_bytes_raw >= differing


def reference(name: str, offset: int, file_offset: int, length: int) -> bytes:
    header = SetTensorHeader(RpcTensor(buffer=BUFFER_BASE, data=BUFFER_BASE, name=name), offset).encode()
    return encode_from_file(header, file_offset, length)


def hostile_references(index: GgufIndex) -> dict[str, bytes]:
    extent = index.tensors["output.weight"]
    start, end = extent.offset, extent.offset + extent.size
    good = reference("output.weight", 0, start, 16)
    return {
        "unknown name": reference("no.such.weight", 0, start, 16),
        "before the extent": reference("output.weight", 0, start - 4, 16),
        "past the extent": reference("output.weight", extent.size - 8, end - 8, 16),
        "past the end of the file": reference("output.weight", 0, start, 2**63),
        "wrapping around u64": reference("output.weight", 0, 2**64 - 8, 16),
        "zero length": reference("output.weight", 0, start, 0),
        "inconsistent offset": reference("output.weight", 4, start, 16),
        "truncated payload": REQUEST_PREFIX.pack(MESH_SET_TENSOR_FROM_FILE, FROM_FILE_PAYLOAD_BYTES - 1)
        + good[REQUEST_PREFIX.size : -1]
        + HELLO,
        "oversized payload": REQUEST_PREFIX.pack(MESH_SET_TENSOR_FROM_FILE, FROM_FILE_PAYLOAD_BYTES + 1)
        + good[REQUEST_PREFIX.size :]
        + b"x",
    }


@pytest.mark.parametrize(
    "case",
    [
        "unknown name",
        "before the extent",
        "past the extent",
        "past the end of the file",
        "wrapping around u64",
        "zero length",
        "inconsistent offset",
        "truncated payload",
        "oversized payload",
    ],
)
def test_hostile_references_are_refused(model: Model, case: str) -> None:
    image, index = model
    worker = WorkerHalf(image, index)
    worker.feed(HELLO)
    with pytest.raises(ZeroTransferError):
        worker.feed(hostile_references(index)[case])
    with pytest.raises(RpcProtocolError):
        worker.feed(COMPUTE)  # the stream cannot be resynchronised


def test_a_good_reference_expands_to_the_file_bytes(model: Model) -> None:
    image, index = model
    extent = index.tensors["output.weight"]
    worker = WorkerHalf(image, index)
    ref = reference("output.weight", 8, extent.offset + 8, 100)
    out = b"".join(bytes(piece) for piece in worker.feed(HELLO + ref[:-1]))
    assert not worker.at_boundary  # an EOF here would be a truncated reference
    out += b"".join(bytes(piece) for piece in worker.feed(ref[-1:]))
    tensor = RpcTensor(buffer=BUFFER_BASE, data=BUFFER_BASE, name="output.weight")
    data = image[extent.offset + 8 : extent.offset + 108]
    assert out == HELLO + encode_request(
        RpcCommand.SET_TENSOR, SetTensor(SetTensorHeader(tensor, 8), data).encode()
    )
    assert worker.at_boundary and worker.counters.file_bytes == 100


@pytest.mark.parametrize(
    "stream",
    [
        reference("output.weight", 0, 0, 16),  # a reference before HELLO
        HELLO + bytes([0x99]) + struct.pack("<Q", 0),  # unknown command
        HELLO + HELLO,  # a second HELLO
        HELLO + REQUEST_PREFIX.pack(RpcCommand.GET_ALIGNMENT, 5) + bytes(5),  # wrong fixed size
        HELLO + REQUEST_PREFIX.pack(RpcCommand.SET_TENSOR, 3) + bytes(3),  # shorter than its header
    ],
)
def test_the_worker_refuses_what_the_parser_refuses(model: Model, stream: bytes) -> None:
    image, index = model
    with pytest.raises(RpcProtocolError):
        WorkerHalf(image, index).feed(stream)


def test_the_host_refuses_what_the_parser_refuses(model: Model) -> None:
    image, index = model
    with pytest.raises(RpcProtocolError):
        HostHalf(image, index).feed(HELLO + reference("output.weight", 0, 0, 16))


def test_open_gguf_image_maps_and_indexes(tmp_path: Path) -> None:
    path = write_tiny_llama_gguf(tmp_path / "tiny.gguf", n_layers=1)
    image, index = open_gguf_image(path)
    try:
        host = HostHalf(image, index)
        extent = index.tensors["output_norm.weight"]
        data = bytes(image[extent.offset : extent.offset + extent.size])
        host.feed(HELLO + set_tensor("output_norm.weight", 0, data))
        assert host.counters.weight_bytes_by_reference == extent.size
        host.close()
    finally:
        image.close()
