"""GGUF header facts (services/runner/gguf_meta.py), driven by bytes and by the tiny model."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from services.runner.gguf_meta import (
    MAX_KEPT_ARRAY_ITEMS,
    GgufFormatError,
    ModelTraits,
    parse_header,
    parse_header_scalars,
    read_model_traits,
    traits_from_header,
)
from services.runner.spec import ModelKind
from tests.support.tiny_gguf import write_tiny_embedding_gguf, write_tiny_rerank_gguf


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


def kv_u32_array(key: str, values: list[int]) -> bytes:
    return gguf_string(key) + struct.pack(f"<IIQ{len(values)}I", 9, 4, len(values), *values)


def kv_bool_array(key: str, values: list[bool]) -> bytes:
    return gguf_string(key) + struct.pack(f"<IIQ{len(values)}?", 9, 7, len(values), *values)


def traits_of(*kvs: bytes) -> ModelTraits:
    return traits_from_header(parse_header(header(*kvs)))


def llm(arch: str, layers: int, heads: int, kv_heads: int, embd: int, context: int) -> list[bytes]:
    """The keys a decoder's KV cache size depends on."""
    return [
        kv_string("general.architecture", arch),
        kv_u32(f"{arch}.block_count", layers),
        kv_u32(f"{arch}.attention.head_count", heads),
        kv_u32(f"{arch}.attention.head_count_kv", kv_heads),
        kv_u32(f"{arch}.embedding_length", embd),
        kv_u32(f"{arch}.context_length", context),
    ]


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


def test_short_numeric_arrays_are_kept_long_ones_only_counted() -> None:
    long = list(range(MAX_KEPT_ARRAY_ITEMS + 1))
    parsed = parse_header(
        header(
            kv_u32_array("llama.attention.head_count_kv", [8, 0, 8]),
            kv_u32_array("tokenizer.ggml.token_type", long),
            kv_string_array("bert.classifier.output_labels", ["yes", "no"]),
            kv_u32("llama.block_count", 3),
        )
    )
    assert parsed.arrays == {"llama.attention.head_count_kv": (8, 0, 8)}
    assert parsed.array_lengths == {
        "llama.attention.head_count_kv": 3,
        "tokenizer.ggml.token_type": len(long),
        "bert.classifier.output_labels": 2,
    }
    assert parsed.scalars == {"llama.block_count": 3}


def test_tiny_model_is_a_chat_model_with_its_layer_count_and_cache_size(tiny_gguf: Path) -> None:
    traits = read_model_traits(tiny_gguf)
    # 4 layers x 4 KV heads x (16 + 16) dims x 2 bytes (f16)
    assert traits == ModelTraits(
        architecture="llama",
        has_chat_template=True,
        layer_count=4,
        kind=ModelKind.CHAT,
        trained_context_tokens=4096,
        kv_bytes_per_token=4 * 4 * 32 * 2,
        chat_template=traits.chat_template,
    )
    assert traits.chat_template.startswith("{% for message in messages %}")


def test_smollm2_135m_cache_per_token() -> None:
    """30 layers x 3 KV heads x (64 + 64) x 2 bytes: llama.cpp logs 180 MiB for 8192 cells."""
    traits = traits_of(*llm("llama", layers=30, heads=9, kv_heads=3, embd=576, context=8192))
    assert traits.kv_bytes_per_token == 23040
    assert traits.kv_bytes_per_token * 8192 == 180 * 1024**2
    assert traits.trained_context_tokens == 8192 and traits.swa_kv_bytes_per_token == 0


def test_gemma3_270m_real_header(gemma_path: Path) -> None:
    """llama.cpp logs 12 MiB for 4096 cells of its 3 full-attention layers, and 37.5 MiB for the
    2560 cells of its 15 sliding-window ones (one KV head of 256 + 256 dims)."""
    traits = read_model_traits(gemma_path)
    assert (traits.architecture, traits.kind, traits.layer_count) == ("gemma3", ModelKind.CHAT, 18)
    assert traits.trained_context_tokens == 32768
    assert traits.kv_bytes_per_token * 4096 == 12 * 1024**2
    assert traits.swa_kv_bytes_per_token * 2560 == 37.5 * 1024**2
    assert traits.sliding_window_tokens == 512 and not traits.encoder_only


def test_per_layer_kv_heads_skip_layers_without_attention() -> None:
    """A hybrid (Jamba, Granite 4): head_count_kv per layer, 0 for the recurrent layers."""
    keys = llm("jamba", layers=4, heads=8, kv_heads=2, embd=512, context=4096)
    keys[3] = kv_u32_array("jamba.attention.head_count_kv", [0, 2, 0, 2])
    assert traits_of(*keys).kv_bytes_per_token == 2 * 2 * (64 + 64) * 2


def test_explicit_key_and_value_lengths_win_over_embd_per_head() -> None:
    keys = llm("qwen3", layers=2, heads=16, kv_heads=8, embd=1024, context=40960)
    keys += [kv_u32("qwen3.attention.key_length", 128), kv_u32("qwen3.attention.value_length", 96)]
    assert traits_of(*keys).kv_bytes_per_token == 2 * 8 * (128 + 96) * 2


def test_sliding_window_only_where_llama_cpp_applies_it() -> None:
    gemma2 = llm("gemma2", layers=4, heads=8, kv_heads=4, embd=2048, context=8192)
    per_layer = 4 * (256 + 256) * 2
    windowed = traits_of(*gemma2, kv_u32("gemma2.attention.sliding_window", 4096))
    # Gemma 2 alternates: layers 0 and 2 slide, 1 and 3 are full.
    assert (windowed.kv_bytes_per_token, windowed.swa_kv_bytes_per_token) == (2 * per_layer, 2 * per_layer)
    assert windowed.sliding_window_tokens == 4096
    # An architecture llama.cpp has no pattern for: every layer counts as full (over, never under).
    mystery = llm("mystery", layers=4, heads=8, kv_heads=4, embd=2048, context=8192)
    unknown = traits_of(*mystery, kv_u32("mystery.attention.sliding_window", 4096))
    assert (unknown.kv_bytes_per_token, unknown.swa_kv_bytes_per_token) == (4 * per_layer, 0)


def test_a_per_layer_sliding_window_pattern_and_shared_kv_layers() -> None:
    keys = llm("gemma4", layers=6, heads=8, kv_heads=1, embd=1024, context=131072)
    keys += [
        kv_u32("gemma4.attention.sliding_window", 512),
        kv_bool_array("gemma4.attention.sliding_window_pattern", [True, True, False, True, True, False]),
        kv_u32("gemma4.attention.key_length", 256),
        kv_u32("gemma4.attention.value_length", 256),
        kv_u32("gemma4.attention.key_length_swa", 128),
        kv_u32("gemma4.attention.value_length_swa", 128),
        kv_u32("gemma4.attention.shared_kv_layers", 3),  # layers 3-5 reuse earlier caches
    ]
    traits = traits_of(*keys)
    assert traits.kv_bytes_per_token == 1 * 512 * 2  # layer 2 only
    assert traits.swa_kv_bytes_per_token == 2 * 256 * 2  # layers 0 and 1


@pytest.mark.parametrize(
    ("arch", "pooling", "labels", "kind"),
    [
        ("llama", None, False, ModelKind.CHAT),
        ("llama", 0, False, ModelKind.CHAT),
        ("qwen3", 3, False, ModelKind.EMBEDDING),  # Qwen3-Embedding: last-token pooling
        ("llama-embed", 1, False, ModelKind.EMBEDDING),
        ("bert", None, False, ModelKind.EMBEDDING),  # an encoder cannot generate
        ("nomic-bert", 0, False, ModelKind.EMBEDDING),
        ("bert", 4, False, ModelKind.RERANK),  # bge-reranker: rank pooling
        ("qwen3", None, True, ModelKind.RERANK),  # a classifier head
    ],
)
def test_kind_from_pooling_classifier_and_architecture(
    arch: str, pooling: int | None, labels: bool, kind: ModelKind
) -> None:
    keys = [kv_string("general.architecture", arch)]
    if pooling is not None:
        keys.append(kv_u32(f"{arch}.pooling_type", pooling))
    if labels:
        keys.append(kv_string_array(f"{arch}.classifier.output_labels", ["yes"]))
    assert traits_of(*keys).kind is kind


def test_encoders_have_no_kv_cache() -> None:
    traits = traits_of(*llm("nomic-bert", layers=12, heads=12, kv_heads=12, embd=768, context=8192))
    assert traits.encoder_only and traits.kv_bytes_per_token == 0 and traits.kind is ModelKind.EMBEDDING


def test_tiny_encoders(tmp_path: Path) -> None:
    embedding = read_model_traits(write_tiny_embedding_gguf(tmp_path / "e.gguf"))
    rerank = read_model_traits(write_tiny_rerank_gguf(tmp_path / "r.gguf"))
    assert (embedding.architecture, embedding.kind, embedding.encoder_only) == (
        "bert",
        ModelKind.EMBEDDING,
        True,
    )
    assert (rerank.kind, rerank.trained_context_tokens, rerank.layer_count) == (ModelKind.RERANK, 512, 2)


def test_nonsense_values_count_as_unknown() -> None:
    traits = traits_of(
        kv_string("general.architecture", "llama"),
        kv_string("llama.block_count", "many"),
        kv_u32("llama.context_length", 0),
    )
    assert (traits.layer_count, traits.trained_context_tokens, traits.kv_bytes_per_token) == (0, 0, 0)
