"""Tiny random-weight GGUFs that real llama.cpp loads in milliseconds.

The llama-architecture chat model's output is gibberish but deterministic at temperature 0, which
is all the process, routing and split tests need. Its tokenizer is byte-level BPE ("gpt2"): the 256
byte tokens make every string tokenizable, a few merges exercise the BPE path, and ChatML special
tokens back the chat template.

The BERT encoders (an embedding model with mean pooling, and a reranker with rank pooling and a
classification head) carry the tensors llama.cpp's src/models/bert.cpp requires and a WordPiece
("bert") vocabulary of single characters, so any ASCII text tokenizes.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import gguf
import numpy as np

ARCH = "llama"
BYTE_TOKEN_COUNT = 256
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CONTEXT_LENGTH_TOKENS = 4096
WEIGHT_STD = 0.02
RMS_NORM_EPS = 1e-5
# Letters for merges: frequent English ones so ordinary prompts hit a few merges.
MERGE_LETTERS = "etaoinshrdlucmfwyp"
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class TinyModelError(ValueError):
    """The requested dimensions cannot make a valid model."""


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (what byte-level BPE vocabularies store)."""
    ranges = ((ord("!"), ord("~")), (ord("¡"), ord("¬")), (ord("®"), ord("ÿ")))
    printable = [b for first, last in ranges for b in range(first, last + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(BYTE_TOKEN_COUNT):
        if b not in mapping:
            mapping[b] = chr(BYTE_TOKEN_COUNT + extra)
            extra += 1
    return mapping


def _merges(count: int) -> list[tuple[str, str]]:
    space = _byte_to_unicode()[ord(" ")]
    pairs = [(space, letter) for letter in MERGE_LETTERS]
    pairs += [(left, right) for left, right in itertools.product(MERGE_LETTERS, repeat=2)]
    if count > len(pairs):
        raise TinyModelError(f"at most {len(pairs)} merges available, asked for {count}")
    return pairs[:count]


def _vocabulary(n_vocab: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges: bytes first, then merge results, then special tokens."""
    merge_count = n_vocab - BYTE_TOKEN_COUNT - len(SPECIAL_TOKENS)
    if merge_count < 0:
        raise TinyModelError(f"n_vocab must be >= {BYTE_TOKEN_COUNT + len(SPECIAL_TOKENS)}")
    byte_map = _byte_to_unicode()
    tokens = [byte_map[b] for b in range(BYTE_TOKEN_COUNT)]
    merges = _merges(merge_count)
    tokens += [left + right for left, right in merges]
    types = [gguf.TokenType.NORMAL] * len(tokens)
    tokens += list(SPECIAL_TOKENS)
    types += [gguf.TokenType.CONTROL] * len(SPECIAL_TOKENS)
    return tokens, [int(t) for t in types], [f"{left} {right}" for left, right in merges]


def _add_metadata(writer: gguf.GGUFWriter, n_layers: int, n_embd: int, n_head: int, n_ff: int) -> None:
    writer.add_name("tiny-random-llama")
    writer.add_context_length(CONTEXT_LENGTH_TOKENS)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_layer_norm_rms_eps(RMS_NORM_EPS)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)


def _add_tokenizer(writer: gguf.GGUFWriter, n_vocab: int) -> None:
    tokens, types, merges = _vocabulary(n_vocab)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)


def _add_tensors(
    writer: gguf.GGUFWriter,
    rng: np.random.Generator,
    n_layers: int,
    n_embd: int,
    n_ff: int,
    n_vocab: int,
    vocab_dtype: type[np.floating] = np.float32,  # of the two n_vocab x n_embd matrices
) -> None:
    # numpy shapes are (rows=out, cols=in); GGUFWriter reverses them into ggml's ne order.
    def weight(*shape: int) -> np.ndarray:
        return rng.normal(0.0, WEIGHT_STD, size=shape).astype(np.float32)

    def norm() -> np.ndarray:
        return np.ones(n_embd, dtype=np.float32)

    writer.add_tensor("token_embd.weight", weight(n_vocab, n_embd).astype(vocab_dtype))
    for layer in range(n_layers):
        prefix = f"blk.{layer}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", norm())
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{prefix}.{name}.weight", weight(n_embd, n_embd))
        writer.add_tensor(f"{prefix}.ffn_norm.weight", norm())
        writer.add_tensor(f"{prefix}.ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"{prefix}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"{prefix}.ffn_down.weight", weight(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", norm())
    writer.add_tensor("output.weight", weight(n_vocab, n_embd).astype(vocab_dtype))


def write_tiny_llama_gguf(
    path: Path | str,
    n_layers: int = 4,
    n_embd: int = 64,
    n_vocab: int = 300,
    seed: int = 0,
    n_head: int = 4,
) -> Path:
    """Write a random-weight llama model to `path` (same arguments -> byte-identical file)."""
    if n_embd % n_head:
        raise TinyModelError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_ff = 2 * n_embd
    writer = gguf.GGUFWriter(path, ARCH)
    _add_metadata(writer, n_layers, n_embd, n_head, n_ff)
    _add_tokenizer(writer, n_vocab)
    _add_tensors(writer, rng, n_layers, n_embd, n_ff, n_vocab)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


BERT_ARCH = "bert"
ENCODER_CONTEXT_LENGTH_TOKENS = 512  # BERT's; position_embd holds one row per position
LAYER_NORM_EPS = 1e-12
BERT_TOKEN_TYPE_COUNT = 2  # sentence A / sentence B
# WordPiece specials, their ids written out: llama.cpp's defaults (100-103) are BERT's own vocabulary's.
WPM_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
WPM_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-:;()"
# llama.cpp's WPM tokenizer looks words up with this phantom-space prefix ("##x" pieces lose it).
WPM_WORD_START = "\u2581"


def _add_wpm_tokenizer(writer: gguf.GGUFWriter) -> None:
    """Specials, then every character as a word start ("▁a") and as a continuation ("a")."""
    tokens = list(WPM_SPECIALS)
    tokens += [WPM_WORD_START + c for c in WPM_CHARACTERS] + list(WPM_CHARACTERS)
    types = [gguf.TokenType.CONTROL] * len(WPM_SPECIALS) + [gguf.TokenType.NORMAL] * (
        len(tokens) - len(WPM_SPECIALS)
    )
    types[WPM_SPECIALS.index("[UNK]")] = gguf.TokenType.UNKNOWN
    writer.add_tokenizer_model("bert")
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    writer.add_token_type_count(BERT_TOKEN_TYPE_COUNT)
    for add, special in (
        (writer.add_pad_token_id, "[PAD]"),
        (writer.add_unk_token_id, "[UNK]"),
        (writer.add_bos_token_id, "[CLS]"),
        (writer.add_sep_token_id, "[SEP]"),
        (writer.add_mask_token_id, "[MASK]"),
    ):
        add(WPM_SPECIALS.index(special))
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)


def _add_bert_tensors(
    writer: gguf.GGUFWriter, rng: np.random.Generator, n_layers: int, n_embd: int, n_vocab: int
) -> None:
    def weight(*shape: int) -> np.ndarray:
        return rng.normal(0.0, WEIGHT_STD, size=shape).astype(np.float32)

    def norm(prefix: str, size: int = n_embd) -> None:
        writer.add_tensor(f"{prefix}.weight", np.ones(size, dtype=np.float32))
        writer.add_tensor(f"{prefix}.bias", np.zeros(size, dtype=np.float32))

    n_ff = 2 * n_embd
    writer.add_tensor("token_embd.weight", weight(n_vocab, n_embd))
    writer.add_tensor("token_types.weight", weight(BERT_TOKEN_TYPE_COUNT, n_embd))
    writer.add_tensor("position_embd.weight", weight(ENCODER_CONTEXT_LENGTH_TOKENS, n_embd))
    norm("token_embd_norm")
    for layer in range(n_layers):
        prefix = f"blk.{layer}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{prefix}.{name}.weight", weight(n_embd, n_embd))
            writer.add_tensor(f"{prefix}.{name}.bias", weight(n_embd))
        norm(f"{prefix}.attn_output_norm")
        writer.add_tensor(f"{prefix}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"{prefix}.ffn_up.bias", weight(n_ff))
        writer.add_tensor(f"{prefix}.ffn_down.weight", weight(n_embd, n_ff))
        writer.add_tensor(f"{prefix}.ffn_down.bias", weight(n_embd))
        norm(f"{prefix}.layer_output_norm")


def _write_tiny_bert(
    path: Path | str, name: str, pooling: gguf.PoolingType, n_layers: int, n_embd: int, n_head: int, seed: int
) -> tuple[gguf.GGUFWriter, np.random.Generator, Path]:
    """The shared part of both encoders; the caller adds its head tensors and closes the file."""
    if n_embd % n_head:
        raise TinyModelError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, BERT_ARCH)
    writer.add_name(name)
    writer.add_context_length(ENCODER_CONTEXT_LENGTH_TOKENS)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(2 * n_embd)
    writer.add_head_count(n_head)
    writer.add_layer_norm_eps(LAYER_NORM_EPS)
    writer.add_causal_attention(False)
    writer.add_pooling_type(pooling)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _add_wpm_tokenizer(writer)
    n_vocab = len(WPM_SPECIALS) + 2 * len(WPM_CHARACTERS)
    _add_bert_tensors(writer, rng, n_layers, n_embd, n_vocab)
    return writer, rng, path


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_tiny_embedding_gguf(
    path: Path | str, n_layers: int = 2, n_embd: int = 32, n_head: int = 2, seed: int = 0
) -> Path:
    """A random-weight BERT with mean pooling: llama-server --embeddings answers n_embd floats."""
    writer, _, path = _write_tiny_bert(
        path, "tiny-random-bert-embedding", gguf.PoolingType.MEAN, n_layers, n_embd, n_head, seed
    )
    _finish(writer)
    return path


def write_tiny_rerank_gguf(
    path: Path | str, n_layers: int = 2, n_embd: int = 32, n_head: int = 2, seed: int = 0
) -> Path:
    """A random-weight BERT cross-encoder (rank pooling of [CLS], then a one-score classification
    head, as bge-reranker's GGUFs have it): llama-server --reranking scores query/document pairs."""
    writer, rng, path = _write_tiny_bert(
        path, "tiny-random-bert-reranker", gguf.PoolingType.RANK, n_layers, n_embd, n_head, seed
    )
    # The score spread matters to tests: a larger std than the body's keeps scores apart.
    writer.add_tensor("cls.weight", rng.normal(0.0, 0.5, size=(n_embd, n_embd)).astype(np.float32))
    writer.add_tensor("cls.bias", np.zeros(n_embd, dtype=np.float32))
    writer.add_tensor("cls.output.weight", rng.normal(0.0, 0.5, size=(1, n_embd)).astype(np.float32))
    writer.add_tensor("cls.output.bias", np.zeros(1, dtype=np.float32))
    _finish(writer)
    return path


# What a draft needs from its target to pass the runner's vocabulary check (services/runner/vocab.py)
# and llama-server's own: every tokenizer.ggml.* key, copied value for value.
TOKENIZER_PREFIX = "tokenizer.ggml."


def _copy_tokenizer(writer: gguf.GGUFWriter, source: gguf.GGUFReader) -> int:
    """Copy the source's tokenizer keys; returns its vocabulary size."""
    n_vocab = 0
    for name, value in source.fields.items():
        if not name.startswith(TOKENIZER_PREFIX):
            continue
        types = value.types
        sub_type = types[1] if types[0] is gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, value.contents(), types[0], sub_type=sub_type)
        if name == "tokenizer.ggml.tokens":
            n_vocab = len(value.data)
    if not n_vocab:
        raise TinyModelError("the source GGUF has no tokenizer.ggml.tokens")
    return n_vocab


def write_tiny_draft_gguf(
    path: Path | str, vocabulary_from: Path | str, n_layers: int = 2, n_embd: int = 32, seed: int = 0
) -> Path:
    """A random-weight llama that tokenizes exactly like `vocabulary_from` (its tokenizer copied): a
    draft model llama-server accepts for that target. Its drafts are ~never accepted (random
    weights); the embedding and output matrices are f16 to keep it far smaller than the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_head, n_ff = 2, 2 * n_embd
    writer = gguf.GGUFWriter(path, ARCH)
    _add_metadata(writer, n_layers, n_embd, n_head, n_ff)
    n_vocab = _copy_tokenizer(writer, gguf.GGUFReader(vocabulary_from))
    writer.add_vocab_size(n_vocab)
    _add_tensors(writer, rng, n_layers, n_embd, n_ff, n_vocab, vocab_dtype=np.float16)
    _finish(writer)
    return path
