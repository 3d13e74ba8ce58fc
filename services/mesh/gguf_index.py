"""Where each tensor's bytes live in a GGUF file: name -> (absolute data offset, byte size).

A zero-transfer tunnel uses it twice: the host side checks that a SET_TENSOR names a tensor of the
shared file and carries the file's bytes, and the worker side reads those bytes from its own copy.
`gguf.GGUFReader` would build numpy views of every tensor and token array (seconds for a real
model); this walks the header only, and `read_gguf_index` maps the file so only header pages are
read. It is still blocking file IO: services call it through `asyncio.to_thread`.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import gguf

from services.runner.gguf_meta import GGUF_MAGIC, SUPPORTED_VERSIONS, GgufFormatError

ALIGNMENT_KEY = "general.alignment"
# A header claiming more than these is corrupt, not big (real models: < 2k tensors, < 1k keys).
MAX_TENSOR_COUNT = 1_000_000
MAX_KV_COUNT = 100_000
MAX_TENSOR_DIMS = 4  # GGML_MAX_DIMS
_STRING_TYPE = 8
_ARRAY_TYPE = 9
_UINT32_TYPE = 4
# GGUF value type -> bytes of one scalar (uint8, int8, uint16, int16, uint32, int32, float32,
# bool, uint64, int64, float64).
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class TensorExtent:
    """A tensor's data: `size` bytes starting at absolute file offset `offset`."""

    offset: int
    size: int
    ggml_type: int


@dataclass(frozen=True, slots=True)
class GgufIndex:
    tensors: dict[str, TensorExtent]
    data_offset: int  # absolute offset of the tensor data section
    alignment: int

    def extent(self, name: str) -> TensorExtent | None:
        return self.tensors.get(name)


class _HeaderCursor:
    def __init__(self, buffer: bytes | mmap.mmap) -> None:
        self.buffer = buffer
        self.offset = 0

    def _take(self, size: int) -> int:
        start = self.offset
        if size < 0 or start + size > len(self.buffer):
            raise GgufFormatError(f"truncated header at byte {start}")
        self.offset = start + size
        return start

    def u32(self) -> int:
        return int(_U32.unpack_from(self.buffer, self._take(_U32.size))[0])

    def u64(self) -> int:
        return int(_U64.unpack_from(self.buffer, self._take(_U64.size))[0])

    def string(self) -> str:
        length = self.u64()
        start = self._take(length)
        return bytes(self.buffer[start : start + length]).decode("utf-8", errors="replace")

    def skip_value(self, value_type: int) -> None:
        if value_type == _STRING_TYPE:
            self._take(self.u64())
        elif value_type == _ARRAY_TYPE:
            element_type, count = self.u32(), self.u64()
            if element_type == _STRING_TYPE:
                for _ in range(count):
                    self._take(self.u64())
            elif element_type in _SCALAR_BYTES:
                self._take(count * _SCALAR_BYTES[element_type])
            else:
                raise GgufFormatError(f"unsupported array element type {element_type}")
        elif value_type in _SCALAR_BYTES:
            self._take(_SCALAR_BYTES[value_type])
        else:
            raise GgufFormatError(f"unknown value type {value_type}")


def _read_alignment(cursor: _HeaderCursor, kv_count: int) -> int:
    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    for _ in range(kv_count):
        key, value_type = cursor.string(), cursor.u32()
        if key == ALIGNMENT_KEY and value_type == _UINT32_TYPE:
            alignment = cursor.u32()
        else:
            cursor.skip_value(value_type)
    if alignment <= 0 or alignment & (alignment - 1):
        raise GgufFormatError(f"alignment {alignment} is not a power of two")
    return alignment


def _tensor_bytes(name: str, dims: list[int], ggml_type: int) -> int:
    try:
        block_elements, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise GgufFormatError(f"tensor {name!r} has unknown ggml type {ggml_type}") from None
    elements = math.prod(dims)
    if elements % block_elements:
        raise GgufFormatError(f"tensor {name!r}: {elements} elements is not whole blocks")
    return elements // block_elements * block_bytes


def parse_gguf_index(buffer: bytes | mmap.mmap) -> GgufIndex:
    """Sans-IO: index a GGUF image (only its header is read). Raises GgufFormatError."""
    if bytes(buffer[:4]) != GGUF_MAGIC:
        raise GgufFormatError("not a GGUF file (bad magic)")
    cursor = _HeaderCursor(buffer)
    cursor.offset = len(GGUF_MAGIC)
    if (version := cursor.u32()) not in SUPPORTED_VERSIONS:
        raise GgufFormatError(f"unsupported GGUF version {version}")
    tensor_count, kv_count = cursor.u64(), cursor.u64()
    if tensor_count > MAX_TENSOR_COUNT or kv_count > MAX_KV_COUNT:
        raise GgufFormatError(f"implausible counts: {tensor_count} tensors, {kv_count} keys")
    alignment = _read_alignment(cursor, kv_count)
    infos: list[tuple[str, int, int, int]] = []  # name, relative offset, size, type
    for _ in range(tensor_count):
        name, n_dims = cursor.string(), cursor.u32()
        if n_dims > MAX_TENSOR_DIMS:
            raise GgufFormatError(f"tensor {name!r} has {n_dims} dimensions")
        dims = [cursor.u64() for _ in range(n_dims)]
        ggml_type, relative = cursor.u32(), cursor.u64()
        infos.append((name, relative, _tensor_bytes(name, dims, ggml_type), ggml_type))
    data_offset = -(-cursor.offset // alignment) * alignment  # the data section starts aligned
    tensors: dict[str, TensorExtent] = {}
    for name, relative, size, ggml_type in infos:
        if name in tensors:
            raise GgufFormatError(f"tensor {name!r} appears twice")
        if data_offset + relative + size > len(buffer):
            raise GgufFormatError(f"tensor {name!r} runs past the end of the file")
        tensors[name] = TensorExtent(data_offset + relative, size, ggml_type)
    return GgufIndex(tensors, data_offset, alignment)


def read_gguf_index(path: Path) -> GgufIndex:
    """Blocking (maps the file): call from a thread. Raises OSError or GgufFormatError."""
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        return parse_gguf_index(mapped)
