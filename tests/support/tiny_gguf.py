"""A tiny random-weight llama-architecture GGUF that real llama.cpp loads in milliseconds.

The output is gibberish but deterministic at temperature 0, which is all the process, routing and
split tests need. The tokenizer is byte-level BPE ("gpt2"): the 256 byte tokens make every string
tokenizable, a few merges exercise the BPE path, and ChatML special tokens back the chat template.
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
    writer: gguf.GGUFWriter, rng: np.random.Generator, n_layers: int, n_embd: int, n_ff: int, n_vocab: int
) -> None:
    # numpy shapes are (rows=out, cols=in); GGUFWriter reverses them into ggml's ne order.
    def weight(*shape: int) -> np.ndarray:
        return rng.normal(0.0, WEIGHT_STD, size=shape).astype(np.float32)

    def norm() -> np.ndarray:
        return np.ones(n_embd, dtype=np.float32)

    writer.add_tensor("token_embd.weight", weight(n_vocab, n_embd))
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
    writer.add_tensor("output.weight", weight(n_vocab, n_embd))


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
