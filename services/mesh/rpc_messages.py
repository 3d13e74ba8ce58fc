"""Payload layouts of the llama.cpp RPC requests a zero-transfer tunnel reads or rewrites.

Byte-exact with the packed structs of the pinned ggml-rpc.cpp (`#pragma pack(push, 1)`, little
endian). `decode` raises RpcProtocolError (the peer sent it); `encode` raises ValueError (we built
an impossible message).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from services.mesh.rpc_protocol import (
    GGML_MAX_SRC,
    RPC_CONN_CAPS_BYTES,
    RPC_PROTO_MAJOR_VERSION,
    RPC_PROTO_MINOR_VERSION,
    RPC_TENSOR_BYTES,
    SET_TENSOR_HEADER_BYTES,
    RpcProtocolError,
)

GGML_MAX_DIMS = 4
GGML_MAX_OP_PARAMS_BYTES = 64
OP_PARAM_COUNT = GGML_MAX_OP_PARAMS_BYTES // 4
GGML_MAX_NAME_BYTES = 64
# snprintf(name, GGML_MAX_NAME, ...) keeps room for the NUL, so 63 bytes of name at most.
MAX_TENSOR_NAME_BYTES = GGML_MAX_NAME_BYTES - 1

# struct rpc_tensor: id, type, buffer, ne[4] (u32), nb[4] (u32), op, op_params[16] (i32), flags (i32),
# src[10], view_src, view_offs, data, name[64], use_count (i32). ne/nb are u32 on the wire even
# though ggml uses 64-bit ones (upstream TODO).
RPC_TENSOR = struct.Struct(f"<QIQ{GGML_MAX_DIMS}I{GGML_MAX_DIMS}II{OP_PARAM_COUNT}ii{GGML_MAX_SRC}QQQQ64si")
assert RPC_TENSOR.size == RPC_TENSOR_BYTES
_SET_TENSOR_TAIL = struct.Struct("<BQ")  # cache_flag, offset
_OFFSET_AND_U64 = struct.Struct("<QQ")  # SET_TENSOR_HASH: offset, hash; GET_TENSOR: offset, size
_HELLO_RESPONSE_HEAD = struct.Struct("<BBBx")  # major, minor, patch, padding

FNV_OFFSET_BASIS = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
_U64_MASK = (1 << 64) - 1


def _zeros(count: int) -> tuple[int, ...]:
    return (0,) * count


@dataclass(frozen=True, slots=True)
class RpcTensor:
    """One serialized ggml_tensor. `id`, `buffer`, `data`, `src`, `view_src` are client or server
    pointers, meaningful only to the side that made them; `name` is the GGUF name for weights."""

    id: int = 0
    type: int = 0
    buffer: int = 0
    ne: tuple[int, ...] = field(default_factory=lambda: _zeros(GGML_MAX_DIMS))
    nb: tuple[int, ...] = field(default_factory=lambda: _zeros(GGML_MAX_DIMS))
    op: int = 0
    op_params: tuple[int, ...] = field(default_factory=lambda: _zeros(OP_PARAM_COUNT))
    flags: int = 0
    src: tuple[int, ...] = field(default_factory=lambda: _zeros(GGML_MAX_SRC))
    view_src: int = 0
    view_offs: int = 0
    data: int = 0
    name: str = ""
    use_count: int = 0

    def encode(self) -> bytes:
        name = self.name.encode("utf-8", "surrogateescape")
        if len(name) > MAX_TENSOR_NAME_BYTES:
            raise ValueError(f"tensor name of {len(name)} bytes exceeds {MAX_TENSOR_NAME_BYTES}")
        arrays = (self.ne, self.nb, self.op_params, self.src)
        if tuple(map(len, arrays)) != (GGML_MAX_DIMS, GGML_MAX_DIMS, OP_PARAM_COUNT, GGML_MAX_SRC):
            raise ValueError("ne/nb/op_params/src have the wrong number of elements")
        fields: list[int | bytes] = [self.id, self.type, self.buffer, *self.ne, *self.nb, self.op]
        fields += [*self.op_params, self.flags, *self.src, self.view_src, self.view_offs, self.data]
        fields += [name, self.use_count]
        try:
            return RPC_TENSOR.pack(*fields)
        except struct.error as exc:
            raise ValueError(f"rpc_tensor field out of range: {exc}") from exc

    @classmethod
    def decode(cls, raw: bytes | memoryview, offset: int = 0) -> RpcTensor:
        if len(raw) - offset < RPC_TENSOR_BYTES:
            raise RpcProtocolError(f"rpc_tensor needs {RPC_TENSOR_BYTES} bytes, got {len(raw) - offset}")
        values = RPC_TENSOR.unpack_from(raw, offset)
        dims, params, srcs = GGML_MAX_DIMS, OP_PARAM_COUNT, GGML_MAX_SRC
        at = 3 + 2 * dims + 1  # after id, type, buffer, ne, nb, op
        rest = values[at + params :]
        return cls(
            id=values[0],
            type=values[1],
            buffer=values[2],
            ne=tuple(values[3 : 3 + dims]),
            nb=tuple(values[3 + dims : 3 + 2 * dims]),
            op=values[at - 1],
            op_params=tuple(values[at : at + params]),
            flags=rest[0],
            src=tuple(rest[1 : 1 + srcs]),
            view_src=rest[1 + srcs],
            view_offs=rest[2 + srcs],
            data=rest[3 + srcs],
            name=rest[4 + srcs].split(b"\0", 1)[0].decode("utf-8", "surrogateescape"),
            use_count=rest[5 + srcs],
        )


def _require_length(what: str, raw: bytes | memoryview, expected: int) -> None:
    if len(raw) != expected:
        raise RpcProtocolError(f"{what} payload is {len(raw)} bytes, expected {expected}")


@dataclass(frozen=True, slots=True)
class SetTensorHeader:
    """What precedes a SET_TENSOR's data: the destination, the byte offset inside it, and whether
    the server should store the data in its hash cache (set after a SET_TENSOR_HASH miss)."""

    tensor: RpcTensor
    offset: int
    cache_flag: bool = False

    def encode(self) -> bytes:
        return self.tensor.encode() + _SET_TENSOR_TAIL.pack(int(self.cache_flag), self.offset)

    @classmethod
    def decode(cls, head: bytes | memoryview) -> SetTensorHeader:
        """Reads the first SET_TENSOR_HEADER_BYTES of a SET_TENSOR payload (the rest is data)."""
        if len(head) < SET_TENSOR_HEADER_BYTES:
            raise RpcProtocolError(f"SET_TENSOR header needs {SET_TENSOR_HEADER_BYTES} bytes")
        cache_flag, offset = _SET_TENSOR_TAIL.unpack_from(head, RPC_TENSOR_BYTES)
        return cls(RpcTensor.decode(head), offset, bool(cache_flag))


@dataclass(frozen=True, slots=True)
class SetTensor:
    """`rpc_tensor | cache_flag (u8) | offset (u64) | data`: writes data at tensor.data + offset."""

    header: SetTensorHeader
    data: bytes

    def encode(self) -> bytes:
        return self.header.encode() + self.data

    @classmethod
    def decode(cls, payload: bytes) -> SetTensor:
        return cls(SetTensorHeader.decode(payload), payload[SET_TENSOR_HEADER_BYTES:])


@dataclass(frozen=True, slots=True)
class SetTensorHash:
    """`rpc_tensor | offset (u64) | hash (u64)`: "write the data whose FNV-1a hash is this"; the
    client sends it instead of data above 10 MiB; the server answers 1 from its cache or 0."""

    tensor: RpcTensor
    offset: int
    hash: int

    def encode(self) -> bytes:
        return self.tensor.encode() + _pack_pair(self.offset, self.hash)

    @classmethod
    def decode(cls, payload: bytes) -> SetTensorHash:
        _require_length("SET_TENSOR_HASH", payload, RPC_TENSOR_BYTES + _OFFSET_AND_U64.size)
        offset, hash_value = _OFFSET_AND_U64.unpack_from(payload, RPC_TENSOR_BYTES)
        return cls(RpcTensor.decode(payload), offset, hash_value)


@dataclass(frozen=True, slots=True)
class GetTensor:
    """`rpc_tensor | offset (u64) | size (u64)`; answered with exactly `size` bytes."""

    tensor: RpcTensor
    offset: int
    size: int

    def encode(self) -> bytes:
        return self.tensor.encode() + _pack_pair(self.offset, self.size)

    @classmethod
    def decode(cls, payload: bytes) -> GetTensor:
        _require_length("GET_TENSOR", payload, RPC_TENSOR_BYTES + _OFFSET_AND_U64.size)
        offset, size = _OFFSET_AND_U64.unpack_from(payload, RPC_TENSOR_BYTES)
        return cls(RpcTensor.decode(payload), offset, size)


@dataclass(frozen=True, slots=True)
class HelloResponse:
    """The server's version and transport caps. All-zero caps keep the connection on plain TCP
    (non-zero ones would switch it to RDMA, which a byte relay cannot carry)."""

    major: int = RPC_PROTO_MAJOR_VERSION
    minor: int = RPC_PROTO_MINOR_VERSION
    patch: int = 0
    conn_caps: bytes = bytes(RPC_CONN_CAPS_BYTES)

    @property
    def compatible(self) -> bool:
        """The client's own check: same major, minor not newer than ours."""
        return self.major == RPC_PROTO_MAJOR_VERSION and self.minor <= RPC_PROTO_MINOR_VERSION

    def encode(self) -> bytes:
        if len(self.conn_caps) != RPC_CONN_CAPS_BYTES:
            raise ValueError(f"conn_caps must be {RPC_CONN_CAPS_BYTES} bytes")
        return _HELLO_RESPONSE_HEAD.pack(self.major, self.minor, self.patch) + self.conn_caps

    @classmethod
    def decode(cls, payload: bytes) -> HelloResponse:
        _require_length("HELLO response", payload, _HELLO_RESPONSE_HEAD.size + RPC_CONN_CAPS_BYTES)
        major, minor, patch = _HELLO_RESPONSE_HEAD.unpack_from(payload)
        return cls(major, minor, patch, bytes(payload[_HELLO_RESPONSE_HEAD.size :]))


def _pack_pair(first: int, second: int) -> bytes:
    try:
        return _OFFSET_AND_U64.pack(first, second)
    except struct.error as exc:
        raise ValueError(f"u64 field out of range: {exc}") from exc


def decode_bool_response(payload: bytes) -> bool:
    """SET_TENSOR_HASH and COPY_TENSOR answer one byte: 1 = done, 0 = not done."""
    _require_length("boolean response", payload, 1)
    return payload[0] != 0


def fnv1a_64(data: bytes, value: int = FNV_OFFSET_BASIS) -> int:
    """The client's `fnv_hash` (what SET_TENSOR_HASH carries). Pure Python, a few MB/s: fine for
    tests, far too slow for weights, which need a native implementation."""
    for byte in data:
        value = ((value ^ byte) * FNV_PRIME) & _U64_MASK
    return value
