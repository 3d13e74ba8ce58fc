"""Tensor data extents (services/mesh/gguf_index.py), checked against gguf's own reader."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.mesh.gguf_index import parse_gguf_index, read_gguf_index
from services.runner.gguf_meta import GgufFormatError
from tests.support.tiny_gguf import write_tiny_llama_gguf


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_tiny_llama_gguf(path, seed=0)
    return path


def test_extents_match_gguf_reader(tiny_model: Path) -> None:
    index = read_gguf_index(tiny_model)
    reader = gguf.GGUFReader(tiny_model)
    assert len(index.tensors) == len(reader.tensors)
    for tensor in reader.tensors:
        extent = index.extent(tensor.name)
        assert extent is not None
        assert (extent.offset, extent.size, extent.ggml_type) == (
            tensor.data_offset,
            tensor.n_bytes,
            int(tensor.tensor_type),
        )
    assert index.data_offset % index.alignment == 0
    assert index.extent("no.such.tensor") is None


def test_a_truncated_file_is_a_format_error(tiny_model: Path) -> None:
    image = tiny_model.read_bytes()
    last = max(e.offset + e.size for e in parse_gguf_index(image).tensors.values())
    with pytest.raises(GgufFormatError, match="past the end"):
        parse_gguf_index(image[: last - 1])
    with pytest.raises(GgufFormatError, match="magic"):
        parse_gguf_index(b"GGML" + image[4:])


@given(st.binary(max_size=200))
def test_garbage_after_the_magic_raises_only_format_errors(garbage: bytes) -> None:
    try:
        parse_gguf_index(b"GGUF" + garbage)
    except GgufFormatError:
        pass
