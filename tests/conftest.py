"""Fixtures shared by every test tree: llama.cpp binaries and the two test models."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.node.catalog import ModelNotFound, resolve_model
from services.runner.binaries import LlamaNotBuilt, find_llama_bin_dir
from tests.support.tiny_gguf import write_tiny_llama_gguf


@pytest.fixture(scope="session")
def llama_bin_dir() -> Path:
    """The pinned build's bin dir (same lookup as the runner). `make test` builds it first, so a
    missing build is a failure, not a skip."""
    try:
        return find_llama_bin_dir()
    except LlamaNotBuilt as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer random-weight llama GGUF (~0.8 MB): loads in milliseconds, generates gibberish."""
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("models") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """Gemma 3 270M from the model cache, for tests where real text matters."""
    try:
        return Path(resolve_model("gemma3-270m").path)
    except ModelNotFound as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2 135M Instruct from the model cache (the default model; its GGUF has a ChatML template)."""
    try:
        return Path(resolve_model("smollm2-135m").path)
    except ModelNotFound as exc:
        pytest.fail(str(exc))
