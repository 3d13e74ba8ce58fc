"""The GGUF header facts the runner needs: architecture, chat template, what the model is for (chat,
embedding, rerank), its trained context and what its KV cache costs per token of context.

`gguf.GGUFReader` parses every tensor and token array into numpy (9 s for Gemma 270M); this walks the
key/value section only, skipping long arrays by size. The parser takes a buffer (sans-IO);
`read_model_traits` maps the file, so only the header pages are ever read. Key names and meanings
follow the pinned llama.cpp (src/llama-arch.cpp, src/llama-model.cpp, src/models/<arch>.cpp).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.runner.spec import ModelKind

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
ARCHITECTURE_KEY = "general.architecture"
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"
# A header claiming more than this is corrupt, not big (real models have tens to a few hundred keys).
MAX_KV_COUNT = 100_000
# Per-layer arrays (head counts, the SWA pattern) have at most LLAMA_MAX_LAYERS (512) items; token
# arrays (types, scores) run to 100k+ items and are skipped by size instead of decoded.
MAX_KEPT_ARRAY_ITEMS = 512
# llama-server's default KV cache type is f16 (-ctk/-ctv); K and V each hold one element per dimension.
KV_BYTES_PER_ELEMENT = 2
_STRING_TYPE = 8
_ARRAY_TYPE = 9
# GGUF value type -> struct format of one scalar.
_SCALAR_FORMATS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}

# enum llama_pooling_type (include/llama.h): > NONE pools token vectors into one, i.e. an embedding model.
POOLING_NONE = 0
POOLING_RANK = 4

# No KV cache (llama_model::create_memory returns nullptr) and no way to generate: encoders whose
# GGUFs are embedding models even without a pooling key. Their whole input must fit one ubatch.
ENCODER_ARCHITECTURES = frozenset(
    {
        "bert",
        "modern-bert",
        "nomic-bert",
        "nomic-bert-moe",
        "neo-bert",
        "jina-bert-v2",
        "jina-bert-v3",
        "eurobert",
        "gemma-embedding",
    }
)

# Which layers use the sliding window, where llama.cpp hard-codes it (load_swa_pattern(ml, n,
# dense_first) in src/models/<arch>.cpp; a GGUF `sliding_window_pattern` overrides n). Architectures
# not listed here or in SWA_ARRAY_ARCHITECTURES count every layer as full attention: an over-estimate
# of the KV cache (a smaller context than possible), never an under-estimate.
SWA_PATTERNS: Mapping[str, tuple[int, bool]] = {
    "afmoe": (4, False),
    "cohere2": (4, False),
    "cohere2moe": (4, True),
    "exaone-moe": (4, False),
    "exaone4": (4, False),
    "gemma2": (2, False),
    "gemma3": (6, False),
    "gemma3n": (5, False),
    "gpt-oss": (2, False),
    "laguna": (4, True),
    "llama4": (4, False),
    "mellum": (4, False),
    "muse-glimmer": (4, False),
    "olmo2": (4, False),
    "plamo3": (8, False),
    "smallthinker": (4, True),
}
# These read the per-layer pattern from the GGUF array only.
SWA_ARRAY_ARCHITECTURES = frozenset(
    {"gemma4", "granite_swa", "mimo2", "step35", "spark2_5", "maple", "dots3note"}
)

Scalar = int | float | bool | str
Number = int | float | bool


class GgufFormatError(ValueError):
    """The bytes are not a GGUF header we understand."""


@dataclass(frozen=True)
class GgufHeader:
    scalars: dict[str, Scalar] = field(default_factory=dict)
    # Numeric arrays of at most MAX_KEPT_ARRAY_ITEMS items (per-layer head counts, SWA pattern).
    arrays: dict[str, tuple[Number, ...]] = field(default_factory=dict)
    # Every array's length, kept or not (classifier labels, token lists).
    array_lengths: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelTraits:
    architecture: str = ""
    has_chat_template: bool = True
    layer_count: int = 0  # `<arch>.block_count`; 0 when the header does not say
    # Unknown (no header) is taken for chat: what every model was before kinds existed.
    kind: ModelKind = ModelKind.CHAT
    trained_context_tokens: int = 0  # `<arch>.context_length`; 0 when the header does not say
    # f16 K+V bytes one token of context costs in the full-attention layers (grows with -c) ...
    kv_bytes_per_token: int = 0
    # ... and in the sliding-window layers, which keep only about the window (sliding_window_tokens).
    swa_kv_bytes_per_token: int = 0
    sliding_window_tokens: int = 0
    # No KV cache: every input is computed in one ubatch, so -ub must cover the context.
    encoder_only: bool = False
    # The GGUF's own jinja chat template (`tokenizer.chat_template`), "" when it has none.
    chat_template: str = field(default="", repr=False)


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

    def array(self) -> tuple[int, tuple[Number, ...] | None]:
        """(item count, the items if numeric and short enough to keep, else None)."""
        element_type, count = self.u32(), self.u64()
        kept: tuple[Number, ...] | None = None
        if element_type == _STRING_TYPE:
            for _ in range(count):
                length = self.u64()  # not `offset += u64()`: u64() moves offset itself
                self.offset += length
        elif element_type in _SCALAR_FORMATS and count <= MAX_KEPT_ARRAY_ITEMS:
            kept = self.unpack(f"<{count}{_SCALAR_FORMATS[element_type]}")  # type: ignore[assignment]
        elif element_type in _SCALAR_FORMATS:
            self.offset += count * struct.calcsize(_SCALAR_FORMATS[element_type])
        else:
            raise GgufFormatError(f"unsupported array element type {element_type}")
        if self.offset > len(self.buffer):
            raise GgufFormatError("array runs past the end of the file")
        return count, kept

    def scalar(self, value_type: int) -> Scalar:
        if value_type == _STRING_TYPE:
            return self.string()
        if value_type in _SCALAR_FORMATS:
            return self.unpack(f"<{_SCALAR_FORMATS[value_type]}")[0]  # type: ignore[return-value]
        raise GgufFormatError(f"unknown value type {value_type}")


def parse_header(buffer: bytes | mmap.mmap) -> GgufHeader:
    """Every key/value of a GGUF header: scalars and strings, short numeric arrays, all array lengths."""
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
    scalars: dict[str, Scalar] = {}
    arrays: dict[str, tuple[Number, ...]] = {}
    array_lengths: dict[str, int] = {}
    for _ in range(kv_count):
        key = cursor.string()
        value_type = cursor.u32()
        if value_type == _ARRAY_TYPE:
            array_lengths[key], items = cursor.array()
            if items is not None:
                arrays[key] = items
        else:
            scalars[key] = cursor.scalar(value_type)
    return GgufHeader(scalars, arrays, array_lengths)


def parse_header_scalars(buffer: bytes | mmap.mmap) -> dict[str, Scalar]:
    """Every scalar and string key/value of a GGUF header (arrays are skipped)."""
    return parse_header(buffer).scalars


def _count(value: object) -> int:
    """A positive integer header value; anything else (missing, 0, negative, float, bool) is 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _per_layer(header: GgufHeader, key: str, layers: int, default: Sequence[int]) -> list[int]:
    """A `get_key_or_arr` value: one scalar for every layer, or one item per layer."""
    if key in header.arrays:
        items = [_count(item) for item in header.arrays[key]]
        return (items + [0] * layers)[:layers]
    if key in header.scalars:
        return [_count(header.scalars[key])] * layers
    return list(default)


def _swa_layers(header: GgufHeader, arch: str, layers: int) -> list[bool]:
    """Which layers use the sliding window, as llama.cpp's set_swa_pattern decides it."""
    pattern_key = f"{arch}.attention.sliding_window_pattern"
    reads_pattern = arch in SWA_PATTERNS or arch in SWA_ARRAY_ARCHITECTURES
    if not reads_pattern or _count(header.scalars.get(f"{arch}.attention.sliding_window")) == 0:
        return [False] * layers
    if pattern_key in header.arrays:
        flags = [bool(item) for item in header.arrays[pattern_key]]
        return (flags + [False] * layers)[:layers]
    if arch not in SWA_PATTERNS:
        return [False] * layers
    period, dense_first = SWA_PATTERNS[arch]
    if pattern_key in header.scalars:
        period = _count(header.scalars[pattern_key])
    if dense_first:
        return [period == 0 or il % period != 0 for il in range(layers)]
    return [period == 0 or il % period < period - 1 for il in range(layers)]


def _kv_bytes_per_token(header: GgufHeader, arch: str, layers: int) -> tuple[int, int]:
    """(full-attention, sliding-window) f16 K+V bytes per token, summed over the layers with a cache."""
    heads = _per_layer(header, f"{arch}.attention.head_count", layers, [0] * layers)
    kv_heads = _per_layer(header, f"{arch}.attention.head_count_kv", layers, heads)
    embd = _count(header.scalars.get(f"{arch}.embedding_length"))
    head_dim = embd // heads[0] if heads and heads[0] else 0
    key_dim = _count(header.scalars.get(f"{arch}.attention.key_length")) or head_dim
    value_dim = _count(header.scalars.get(f"{arch}.attention.value_length")) or head_dim
    key_dim_swa = _count(header.scalars.get(f"{arch}.attention.key_length_swa")) or key_dim
    value_dim_swa = _count(header.scalars.get(f"{arch}.attention.value_length_swa")) or value_dim
    # Gemma 3n/4: the last shared_kv_layers layers reuse earlier layers' cache.
    cached = layers - min(layers, _count(header.scalars.get(f"{arch}.attention.shared_kv_layers")))
    full = swa = 0
    for il, is_swa in enumerate(_swa_layers(header, arch, layers)[:cached]):
        if is_swa:
            swa += kv_heads[il] * (key_dim_swa + value_dim_swa) * KV_BYTES_PER_ELEMENT
        else:
            full += kv_heads[il] * (key_dim + value_dim) * KV_BYTES_PER_ELEMENT
    return full, swa


def model_kind(header: GgufHeader, arch: str) -> ModelKind:
    """Rank pooling or a classifier head: a reranker; any other pooling, or an encoder: embeddings."""
    pooling = header.scalars.get(f"{arch}.pooling_type")
    pooling = pooling if isinstance(pooling, int) and not isinstance(pooling, bool) else POOLING_NONE
    if pooling == POOLING_RANK or header.array_lengths.get(f"{arch}.classifier.output_labels", 0) > 0:
        return ModelKind.RERANK
    if pooling > POOLING_NONE or arch in ENCODER_ARCHITECTURES:
        return ModelKind.EMBEDDING
    return ModelKind.CHAT


def traits_from_header(header: GgufHeader) -> ModelTraits:
    values = header.scalars
    architecture = str(values.get(ARCHITECTURE_KEY, ""))
    layers = _count(values.get(f"{architecture}.block_count"))
    encoder = architecture in ENCODER_ARCHITECTURES
    full, swa = (0, 0) if encoder else _kv_bytes_per_token(header, architecture, layers)
    return ModelTraits(
        architecture=architecture,
        has_chat_template=bool(values.get(CHAT_TEMPLATE_KEY)),
        layer_count=layers,
        kind=model_kind(header, architecture),
        trained_context_tokens=_count(values.get(f"{architecture}.context_length")),
        kv_bytes_per_token=full,
        swa_kv_bytes_per_token=swa,
        sliding_window_tokens=_count(values.get(f"{architecture}.attention.sliding_window")) if swa else 0,
        encoder_only=encoder,
        chat_template=str(values.get(CHAT_TEMPLATE_KEY) or ""),
    )


def read_model_traits(path: Path) -> ModelTraits:
    """Blocking (maps the file): call from a thread. Raises OSError or GgufFormatError."""
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        return traits_from_header(parse_header(mapped))
