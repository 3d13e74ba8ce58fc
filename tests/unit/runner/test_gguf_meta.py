"""GGUF header facts (services/runner/gguf_meta.py), driven by bytes and by the tiny model."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from services.runner.gguf_meta import (
    GgufFormatError,
    ModelTraits,
    parse_header_scalars,
    read_model_traits,
)


def gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def header(*kvs: bytes) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)


def kv_string(key: str, value: str) -> bytes:
    return gguf_string(key) + struct.pack("<I", 8) + gguf_string(value)


def kv_u32(key: str, value: int) -> bytes:
    return gguf_string(key) + struct.pack("<II", 4, value)


def kv_string_array(key: str, values: list[str]) -> bytes:
    body = b"".join(gguf_string(v) for v in values)
    return gguf_string(key) + struct.pack("<IIQ", 9, 8, len(values)) + body


def test_scalars_are_read_and_arrays_skipped() -> None:
    data = header(
        kv_string("general.architecture", "gemma3"),
        kv_string_array("tokenizer.ggml.tokens", ["a", "bb", "ccc"]),
        kv_u32("gemma3.block_count", 18),
    )
    assert parse_header_scalars(data) == {"general.architecture": "gemma3", "gemma3.block_count": 18}


def test_bad_magic() -> None:
    with pytest.raises(GgufFormatError, match="magic"):
        parse_header_scalars(b"JUNK" + bytes(100))


def test_truncated_header() -> None:
    data = header(kv_string("general.architecture", "llama"))
    with pytest.raises(GgufFormatError):
        parse_header_scalars(data[:-3])


def test_implausible_key_count() -> None:
    with pytest.raises(GgufFormatError, match="key count"):
        parse_header_scalars(b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 40))


def test_tiny_model_has_a_chat_template_and_its_layer_count(tiny_gguf: Path) -> None:
    traits = read_model_traits(tiny_gguf)
    assert traits == ModelTraits(architecture="llama", has_chat_template=True, layer_count=4)
