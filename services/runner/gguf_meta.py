"""The few GGUF header facts the runner needs (architecture, whether a chat template is embedded).

`gguf.GGUFReader` parses every tensor and token array into numpy (9 s for Gemma 270M); this walks the
key/value section only, skipping arrays by size. The parser takes a buffer (sans-IO); `read_model_traits`
maps the file, so only the header pages are ever read.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
ARCHITECTURE_KEY = "general.architecture"
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"
# A header claiming more than this is corrupt, not big (real models have tens to a few hundred keys).
MAX_KV_COUNT = 100_000
_STRING_TYPE = 8
_ARRAY_TYPE = 9
# GGUF value type -> struct format of one scalar.
_SCALAR_FORMATS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}

Scalar = int | float | bool | str


class GgufFormatError(ValueError):
    """The bytes are not a GGUF header we understand."""


@dataclass(frozen=True)
class ModelTraits:
    architecture: str = ""
    has_chat_template: bool = True
    layer_count: int = 0  # `<arch>.block_count`; 0 when the header does not say


class _Cursor:
    def __init__(self, buffer: bytes | mmap.mmap) -> None:
        self.buffer = buffer
        self.offset = 0

    def unpack(self, fmt: str) -> tuple[object, ...]:
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.buffer):
            raise GgufFormatError(f"truncated header at byte {self.offset}")
        values = struct.unpack_from(fmt, self.buffer, self.offset)
        self.offset += size
        return values

    def u32(self) -> int:
        return int(self.unpack("<I")[0])  # type: ignore[call-overload]

    def u64(self) -> int:
        return int(self.unpack("<Q")[0])  # type: ignore[call-overload]

    def string(self) -> str:
        length = self.u64()
        end = self.offset + length
        if end > len(self.buffer):
            raise GgufFormatError(f"string of {length} bytes runs past the end at byte {self.offset}")
        raw = bytes(self.buffer[self.offset : end])
        self.offset = end
        return raw.decode("utf-8", errors="replace")

    def skip_array(self) -> None:
        element_type, count = self.u32(), self.u64()
        if element_type == _STRING_TYPE:
            for _ in range(count):
                length = self.u64()  # not `offset += u64()`: u64() moves offset itself
                self.offset += length
        elif element_type in _SCALAR_FORMATS:
            self.offset += count * struct.calcsize(_SCALAR_FORMATS[element_type])
        else:
            raise GgufFormatError(f"unsupported array element type {element_type}")
        if self.offset > len(self.buffer):
            raise GgufFormatError("array runs past the end of the file")

    def value(self, value_type: int) -> Scalar | None:
        if value_type == _STRING_TYPE:
            return self.string()
        if value_type == _ARRAY_TYPE:
            self.skip_array()
            return None
        if value_type in _SCALAR_FORMATS:
            return self.unpack(_SCALAR_FORMATS[value_type])[0]  # type: ignore[return-value]
        raise GgufFormatError(f"unknown value type {value_type}")


def parse_header_scalars(buffer: bytes | mmap.mmap) -> dict[str, Scalar]:
    """Every scalar and string key/value of a GGUF header (arrays are skipped)."""
    cursor = _Cursor(buffer)
    if bytes(buffer[:4]) != GGUF_MAGIC:
        raise GgufFormatError("not a GGUF file (bad magic)")
    cursor.offset = 4
    version = cursor.u32()
    if version not in SUPPORTED_VERSIONS:
        raise GgufFormatError(f"unsupported GGUF version {version}")
    cursor.u64()  # tensor count
    kv_count = cursor.u64()
    if kv_count > MAX_KV_COUNT:
        raise GgufFormatError(f"implausible key count {kv_count}")
    values: dict[str, Scalar] = {}
    for _ in range(kv_count):
        key = cursor.string()
        value = cursor.value(cursor.u32())
        if value is not None:
            values[key] = value
    return values


def traits_from_header(values: dict[str, Scalar]) -> ModelTraits:
    architecture = str(values.get(ARCHITECTURE_KEY, ""))
    layers = values.get(f"{architecture}.block_count", 0)
    return ModelTraits(
        architecture=architecture,
        has_chat_template=bool(values.get(CHAT_TEMPLATE_KEY)),
        layer_count=layers if isinstance(layers, int) and not isinstance(layers, bool) and layers > 0 else 0,
    )


def read_model_traits(path: Path) -> ModelTraits:
    """Blocking (maps the file): call from a thread. Raises OSError or GgufFormatError."""
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        return traits_from_header(parse_header_scalars(mapped))
