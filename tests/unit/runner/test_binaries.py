"""Finding the llama.cpp binaries (services/runner/binaries.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.runner import binaries
from services.runner.binaries import BIN_DIR_ENV, NOT_BUILT_HINT, LlamaNotBuilt, find_llama_bin_dir


def fake_build(root: Path, complete: bool = True) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("llama-server", "ggml-rpc-server"):
        (bin_dir / name).write_text("#!/bin/sh\n")
    if complete:
        (root / "complete").write_text("done\n")
    return bin_dir


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BIN_DIR_ENV, raising=False)


def test_configured_dir_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configured = fake_build(tmp_path / "a")
    monkeypatch.setenv(BIN_DIR_ENV, str(fake_build(tmp_path / "b")))
    assert find_llama_bin_dir(str(configured)) == configured


def test_env_before_build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from_env = fake_build(tmp_path / "b")
    monkeypatch.setenv(BIN_DIR_ENV, str(from_env))
    assert find_llama_bin_dir() == from_env


def test_configured_dir_without_binaries(tmp_path: Path) -> None:
    with pytest.raises(LlamaNotBuilt, match="lacks llama-server, ggml-rpc-server"):
        find_llama_bin_dir(str(tmp_path))


def test_build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = fake_build(tmp_path / "cache")
    monkeypatch.setattr(binaries, "build_cache_bin_dir", lambda: bin_dir)
    assert find_llama_bin_dir() == bin_dir


def test_incomplete_build_says_how_to_fix_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = fake_build(tmp_path / "cache", complete=False)
    monkeypatch.setattr(binaries, "build_cache_bin_dir", lambda: bin_dir)
    with pytest.raises(LlamaNotBuilt, match=re.escape(NOT_BUILT_HINT)):
        find_llama_bin_dir()


def test_build_script_prints_the_cache_dir() -> None:
    assert binaries.build_cache_bin_dir().name == "bin"
