"""The tiny random-weight GGUF generator (tests/support/tiny_gguf.py)."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from tests.support.tiny_gguf import TinyModelError, write_tiny_llama_gguf


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    first = write_tiny_llama_gguf(tmp_path / "a.gguf", seed=3).read_bytes()
    assert write_tiny_llama_gguf(tmp_path / "b.gguf", seed=3).read_bytes() == first
    assert write_tiny_llama_gguf(tmp_path / "c.gguf", seed=4).read_bytes() != first


def test_shape_and_tokenizer(tmp_path: Path) -> None:
    path = write_tiny_llama_gguf(tmp_path / "m.gguf", n_layers=2, n_embd=32, n_vocab=280)
    reader = gguf.GGUFReader(path)
    assert reader.fields["llama.block_count"].contents() == 2
    assert len(reader.fields["tokenizer.ggml.tokens"].contents()) == 280
    assert "<|im_start|>" in reader.fields["tokenizer.chat_template"].contents()
    assert len([t for t in reader.tensors if t.name.startswith("blk.1.")]) == 9


@pytest.mark.parametrize(("kwargs", "reason"), [({"n_vocab": 100}, "n_vocab"), ({"n_embd": 30}, "n_head")])
def test_impossible_dimensions(tmp_path: Path, kwargs: dict[str, int], reason: str) -> None:
    with pytest.raises(TinyModelError, match=reason):
        write_tiny_llama_gguf(tmp_path / "m.gguf", **kwargs)
