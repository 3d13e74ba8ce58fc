"""Zero-transfer loading for the llama.cpp RPC tunnel, sans-IO: weight bytes never cross the mesh.

DESIGN §2: every weight upload of the pinned build is a SET_TENSOR whose `rpc_tensor.name` is a GGUF
tensor name and whose data equals the file bytes at that tensor's data offset + the request offset.
Host and worker hold provably identical copies of the GGUF (same content hash), so:

- `HostHalf` (llama-server -> mesh) compares each GGUF-named SET_TENSOR's data with its own file and
  replaces every run of equal bytes with a MESH_SET_TENSOR_FROM_FILE reference; bytes that differ
  still go as an ordinary SET_TENSOR for just that sub-range. Everything else passes unchanged.
- `WorkerHalf` (mesh -> rpc-server) validates each reference against its own index and expands it
  into the SET_TENSOR it stands for, data read from its own file as mmap slices.

The mesh-private request, framed like every llama.cpp request (`cmd u8 | payload_size u64 LE`):

    cmd = 0xE0 | payload_size = 321 | set_tensor_header (305 B) | file_offset (u64 LE) | length (u64 LE)

where set_tensor_header is the original's `rpc_tensor (296 B) | cache_flag (u8) | offset (u64 LE)`
with `offset` = the run's offset inside the tensor, and `file_offset` = the tensor's absolute data
offset in the GGUF + `offset`. It expands to `cmd 6 | 305 + length | set_tensor_header | file bytes`.

Why splitting is safe (pinned ggml-rpc.cpp, protocol 7): `rpc_server::set_tensor` writes
`input.size() - 305` bytes at `tensor->data + offset` through `ggml_backend_tensor_set` after a bounds
check against the buffer, and the dispatcher sends no response for RPC_CMD_SET_TENSOR. So one write
equals several writes of its sub-ranges, and adding or removing SET_TENSORs shifts no reply. The one
side effect is `cache_flag`: an rpc-server started with `-c` would cache each piece under its own hash;
a full match (the normal case) stays one piece, and mesh workers run rpc-server without `-c`.
SET_TENSOR_HASH (sent first above 10 MiB) passes through: without `-c` the worker answers "miss" and
the client follows with the SET_TENSOR this module rewrites.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.mesh.gguf_index import GgufIndex, TensorExtent, parse_gguf_index
from services.mesh.rpc_messages import GGML_MAX_NAME_BYTES
from services.mesh.rpc_protocol import (
    DEFAULT_STREAM_SET_TENSOR_ABOVE_BYTES,
    MAX_SET_TENSOR_PAYLOAD_BYTES,
    REQUEST_PREFIX,
    RPC_TENSOR_BYTES,
    SET_TENSOR_HEADER_BYTES,
    RpcCommand,
    RpcPayloadChunk,
    RpcProtocolError,
    RpcRequest,
    RpcRequestEnd,
    RpcRequestHead,
    RpcRequestParser,
    check_request_size,
)

MESH_SET_TENSOR_FROM_FILE = 0xE0  # far above llama.cpp's commands (0..17); never reaches rpc-server
_FILE_RANGE = struct.Struct("<QQ")  # file_offset, length
FROM_FILE_PAYLOAD_BYTES = SET_TENSOR_HEADER_BYTES + _FILE_RANGE.size  # 321
# Largest run one reference may stand for: what the expanded SET_TENSOR may carry.
MAX_REFERENCE_BYTES = MAX_SET_TENSOR_PAYLOAD_BYTES - SET_TENSOR_HEADER_BYTES
# An equal run inside a chunk, between differing bytes, shorter than this goes raw: a reference costs
# 330 B on the wire and splits the write in two more requests.
MIN_INTERIOR_REFERENCE_BYTES = 1024
# The worker hands file bytes to the I/O layer in slices of this size (views, never copies).
FILE_SLICE_BYTES = 1024**2
# Small pass-through requests go out as one buffer (one send) rather than prefix + payload.
COALESCE_BELOW_BYTES = 64 * 1024
# rpc_tensor ends with name[64] then use_count (i32): the name sits at a fixed offset.
_NAME_AT = RPC_TENSOR_BYTES - 4 - GGML_MAX_NAME_BYTES
_TENSOR_AND_FLAG_BYTES = RPC_TENSOR_BYTES + 1
_U64 = struct.Struct("<Q")

Output = list[bytes | memoryview]


class ZeroTransferError(RpcProtocolError):
    """A MESH_SET_TENSOR_FROM_FILE the worker must not honour (unknown tensor, range outside it,
    inconsistent offsets, bad size): the peer broke the protocol; drop the connection."""


def open_gguf_image(path: Path) -> tuple[mmap.mmap, GgufIndex]:
    """Map a model file read-only and index it, for either half. Blocking: call from a thread. The
    caller closes the mmap after the halves using it are closed. Raises OSError or GgufFormatError."""
    with path.open("rb") as handle:
        image = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return image, parse_gguf_index(image)
    except BaseException:
        image.close()
        raise


def tensor_name(header: bytes | memoryview) -> str:
    """The rpc_tensor name of a SET_TENSOR header, without decoding the other 40 fields."""
    raw = bytes(header[_NAME_AT : _NAME_AT + GGML_MAX_NAME_BYTES])
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def encode_from_file(header: bytes | memoryview, file_offset: int, length: int) -> bytes:
    """A whole MESH_SET_TENSOR_FROM_FILE request; `header` is the 305-byte SET_TENSOR header."""
    prefix = REQUEST_PREFIX.pack(MESH_SET_TENSOR_FROM_FILE, FROM_FILE_PAYLOAD_BYTES)
    return prefix + bytes(header[:SET_TENSOR_HEADER_BYTES]) + _FILE_RANGE.pack(file_offset, length)


@dataclass(slots=True)
class HostCounters:
    request_bytes_in: int = 0  # llama-server's bytes as fed
    bytes_out: int = 0  # what crossed (or would cross) the mesh
    requests: int = 0  # llama.cpp requests seen
    references: int = 0  # MESH_SET_TENSOR_FROM_FILE requests sent
    weight_bytes_by_reference: int = 0
    weight_bytes_raw: int = 0  # data of GGUF-named SET_TENSORs that still went as bytes


@dataclass(slots=True)
class _Upload:
    """A GGUF-named SET_TENSOR in flight and the reference run it is accumulating."""

    tensor_and_flag: bytes
    offset: int  # the request's offset inside the tensor
    extent: TensorExtent
    position: int = 0  # data bytes consumed so far
    run_start: int = 0  # data position where the pending reference run starts
    run_bytes: int = 0


def _mismatch_runs(differs: np.ndarray) -> list[tuple[int, int, bool]]:
    """(start, end, equal) runs of a chunk. Short equal runs between differing bytes are folded into
    raw ones, so there are at most ~2 * len / MIN_INTERIOR_REFERENCE_BYTES runs: the Python loop over
    them never degrades to one iteration per byte, whatever the data."""
    size = len(differs)
    change = np.flatnonzero(differs[1:] != differs[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [size]))
    raw = differs[starts]
    short_interior = (ends - starts < MIN_INTERIOR_REFERENCE_BYTES) & (starts > 0) & (ends < size)
    raw = raw | short_interior
    keep = np.concatenate(([True], raw[1:] != raw[:-1]))
    starts, raw = starts[keep], raw[keep]
    ends = np.concatenate((starts[1:], [size]))
    return [(int(s), int(e), not bool(r)) for s, e, r in zip(starts, ends, raw, strict=True)]


class HostHalf:
    """llama-server -> worker. Feed request bytes in any chunking; send what `feed` returns, in order.
    Returned memoryviews may point into the fed data; they are valid as long as it is unchanged."""

    def __init__(
        self,
        file_buffer: bytes | mmap.mmap,
        index: GgufIndex,
        stream_set_tensor_above_bytes: int = DEFAULT_STREAM_SET_TENSOR_ABOVE_BYTES,
    ) -> None:
        self._file = memoryview(file_buffer)
        self._index = index
        self._parser = RpcRequestParser(stream_set_tensor_above_bytes)
        self._upload: _Upload | None = None
        self.counters = HostCounters()

    @property
    def at_boundary(self) -> bool:
        """True between requests: an EOF here is a clean close, anywhere else a truncation."""
        return self._parser.at_boundary

    def close(self) -> None:
        """Release the file view so the caller can close its mmap."""
        self._file.release()

    def feed(self, data: bytes | bytearray | memoryview) -> Output:
        self.counters.request_bytes_in += len(data)
        out: Output = []
        for event in self._parser.feed(data):
            if isinstance(event, RpcPayloadChunk):
                if self._upload is None:
                    out.append(event.data)
                else:
                    self._compare(self._upload, memoryview(event.data), out)
            elif isinstance(event, RpcRequestHead):
                self.counters.requests += 1
                self._upload = self._start(event.head, event.payload_bytes)
                if self._upload is None:
                    out.append(REQUEST_PREFIX.pack(event.command, event.payload_bytes) + event.head)
            elif isinstance(event, RpcRequestEnd):
                if self._upload is not None:
                    self._flush_reference(self._upload, out)
                self._upload = None
            else:
                self.counters.requests += 1
                self._whole(event, out)
        self.counters.bytes_out += sum(len(piece) for piece in out)
        return out

    def _whole(self, request: RpcRequest, out: Output) -> None:
        payload = request.payload
        upload = None
        if request.command is RpcCommand.SET_TENSOR:
            upload = self._start(payload, len(payload))
        if upload is None:
            prefix = REQUEST_PREFIX.pack(request.command, len(payload))
            out.extend([prefix + payload] if len(payload) < COALESCE_BELOW_BYTES else [prefix, payload])
            return
        self._compare(upload, memoryview(payload)[SET_TENSOR_HEADER_BYTES:], out)
        self._flush_reference(upload, out)

    def _start(self, head: bytes, payload_bytes: int) -> _Upload | None:
        """An upload to compare with the file, or None to pass the request through unchanged."""
        if payload_bytes == SET_TENSOR_HEADER_BYTES:
            return None  # no data: nothing to save, and rpc-server's bounds check stays its own
        extent = self._index.extent(tensor_name(head))
        if extent is None:
            return None
        (offset,) = _U64.unpack_from(head, _TENSOR_AND_FLAG_BYTES)
        return _Upload(head[:_TENSOR_AND_FLAG_BYTES], offset, extent)

    def _compare(self, upload: _Upload, data: memoryview, out: Output) -> None:
        position = upload.position
        # Bytes past the tensor's extent have no file counterpart (rpc-server will reject them anyway).
        comparable = max(0, min(len(data), upload.extent.size - upload.offset - position))
        if comparable:
            file_at = upload.extent.offset + upload.offset + position
            ours = np.frombuffer(self._file[file_at : file_at + comparable], dtype=np.uint8)
            differs = np.frombuffer(data[:comparable], dtype=np.uint8) != ours
            if not differs.any():
                self._extend_reference(upload, position, comparable, out)
            else:
                for start, end, equal in _mismatch_runs(differs):
                    if equal:
                        self._extend_reference(upload, position + start, end - start, out)
                    else:
                        self._send_raw(upload, position + start, data[start:end], out)
        if comparable < len(data):
            self._send_raw(upload, position + comparable, data[comparable:], out)
        upload.position = position + len(data)

    def _extend_reference(self, upload: _Upload, start: int, length: int, out: Output) -> None:
        contiguous = upload.run_start + upload.run_bytes == start
        if upload.run_bytes and (not contiguous or upload.run_bytes + length > MAX_REFERENCE_BYTES):
            self._flush_reference(upload, out)
        if not upload.run_bytes:
            upload.run_start = start
        upload.run_bytes += length

    def _flush_reference(self, upload: _Upload, out: Output) -> None:
        if not upload.run_bytes:
            return
        offset = upload.offset + upload.run_start
        header = upload.tensor_and_flag + _U64.pack(offset)
        out.append(encode_from_file(header, upload.extent.offset + offset, upload.run_bytes))
        self.counters.references += 1
        self.counters.weight_bytes_by_reference += upload.run_bytes
        upload.run_bytes = 0

    def _send_raw(self, upload: _Upload, start: int, data: memoryview, out: Output) -> None:
        self._flush_reference(upload, out)
        header = upload.tensor_and_flag + _U64.pack(upload.offset + start)
        out.append(REQUEST_PREFIX.pack(RpcCommand.SET_TENSOR, len(header) + len(data)) + header)
        out.append(data)
        self.counters.weight_bytes_raw += len(data)


@dataclass(slots=True)
class WorkerCounters:
    bytes_in: int = 0  # what came over the mesh
    bytes_out: int = 0  # what rpc-server gets
    requests: int = 0  # requests seen, references included
    references: int = 0  # MESH_SET_TENSOR_FROM_FILE expanded
    file_bytes: int = 0  # weight bytes read from this worker's own file


class WorkerHalf:
    """Host -> local rpc-server. Frames requests itself (no payload copies): llama.cpp requests are
    checked the way RpcRequestParser checks them and forwarded as views of the fed data; each
    reference is validated against this worker's index and expanded from its own file."""

    def __init__(self, file_buffer: bytes | mmap.mmap, index: GgufIndex) -> None:
        self._file = memoryview(file_buffer)
        self._index = index
        self._buffer = bytearray()  # a request prefix, or a reference's payload, being collected
        self._want = REQUEST_PREFIX.size
        self._in_reference = False
        self._forward_left = 0  # payload bytes of a llama.cpp request still to forward
        self._seen_hello = False
        self._broken = False
        self.counters = WorkerCounters()

    @property
    def at_boundary(self) -> bool:
        return not (self._forward_left or self._in_reference or self._buffer)

    def close(self) -> None:
        self._file.release()

    def feed(self, data: bytes | bytearray | memoryview) -> Output:
        """Raises ZeroTransferError for a bad reference, RpcProtocolError for a bad llama.cpp frame;
        either way the stream cannot continue."""
        if self._broken:
            raise RpcProtocolError("the stream already failed to parse")
        view = memoryview(data).cast("B")
        self.counters.bytes_in += len(view)
        out: Output = []
        pos = 0
        try:
            while pos < len(view):
                if self._forward_left:
                    take = min(self._forward_left, len(view) - pos)
                    out.append(view[pos : pos + take])
                    self._forward_left -= take
                    pos += take
                    continue
                take = min(self._want - len(self._buffer), len(view) - pos)
                self._buffer += view[pos : pos + take]
                pos += take
                if len(self._buffer) == self._want:
                    self._complete(out)
        except RpcProtocolError:
            self._broken = True
            raise
        self.counters.bytes_out += sum(len(piece) for piece in out)
        return out

    def _complete(self, out: Output) -> None:
        collected, self._buffer = bytes(self._buffer), bytearray()
        if self._in_reference:
            self._in_reference, self._want = False, REQUEST_PREFIX.size
            self._expand(collected, out)
            return
        command_byte, size = REQUEST_PREFIX.unpack(collected)
        self.counters.requests += 1
        if command_byte == MESH_SET_TENSOR_FROM_FILE:
            if not self._seen_hello:
                raise ZeroTransferError("a file reference before HELLO")
            if size != FROM_FILE_PAYLOAD_BYTES:
                raise ZeroTransferError(
                    f"file reference payload is {size} bytes, not {FROM_FILE_PAYLOAD_BYTES}"
                )
            self._in_reference, self._want = True, size
            return
        self._check_llama_request(command_byte, size)
        out.append(collected)
        self._forward_left = size

    def _check_llama_request(self, command_byte: int, size: int) -> None:
        """What RpcRequestParser enforces on a prefix: known command, HELLO first and only once,
        a payload size the pinned server would accept."""
        try:
            command = RpcCommand(command_byte)
        except ValueError:
            raise RpcProtocolError(f"unknown RPC command {command_byte}") from None
        if (command is RpcCommand.HELLO) == self._seen_hello:
            problem = "a second HELLO" if self._seen_hello else f"{command.name} before HELLO"
            raise RpcProtocolError(f"handshake violated: {problem}")
        self._seen_hello = True
        check_request_size(command, size)

    def _expand(self, payload: bytes, out: Output) -> None:
        header = payload[:SET_TENSOR_HEADER_BYTES]
        file_offset, length = _FILE_RANGE.unpack_from(payload, SET_TENSOR_HEADER_BYTES)
        name = tensor_name(header)
        extent = self._index.extent(name)
        if extent is None:
            raise ZeroTransferError(f"file reference to {name!r}, which is not in this worker's GGUF")
        if not 0 < length <= MAX_REFERENCE_BYTES:
            raise ZeroTransferError(f"file reference of {length} bytes to {name!r}")
        end = extent.offset + extent.size
        if not extent.offset <= file_offset <= file_offset + length <= end:
            raise ZeroTransferError(
                f"file reference [{file_offset}, +{length}) lies outside {name!r} [{extent.offset}, {end})"
            )
        (offset,) = _U64.unpack_from(header, _TENSOR_AND_FLAG_BYTES)
        if offset != file_offset - extent.offset:
            raise ZeroTransferError(
                f"file reference to {name!r}: tensor offset {offset} != file offset "
                f"{file_offset} - data offset {extent.offset}"
            )
        out.append(REQUEST_PREFIX.pack(RpcCommand.SET_TENSOR, SET_TENSOR_HEADER_BYTES + length) + header)
        for at in range(file_offset, file_offset + length, FILE_SLICE_BYTES):
            out.append(self._file[at : min(at + FILE_SLICE_BYTES, file_offset + length)])
        self.counters.references += 1
        self.counters.file_bytes += length
