"""How a Hub file is linked into the model store (files on a tmp dir; no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.node import hf_download
from services.node.hf_download import link_into_store


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "hf" / "hub"
    monkeypatch.setattr(hf_download, "hub_cache_dir", lambda: root)
    return root


def snapshot(cache: Path, commit: str, data: bytes) -> Path:
    path = cache / "models--o--r" / "snapshots" / commit / "m.gguf"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


def test_a_new_file_is_linked(cache: Path, tmp_path: Path) -> None:
    first = snapshot(cache, "c1", b"one")
    link = link_into_store(first, tmp_path / "store")
    assert link == tmp_path / "store" / "m.gguf" and link.is_symlink() and link.read_bytes() == b"one"


def test_a_newer_revision_replaces_the_old_link(cache: Path, tmp_path: Path) -> None:
    link_into_store(snapshot(cache, "c1", b"one"), tmp_path / "store")
    link = link_into_store(snapshot(cache, "c2", b"two"), tmp_path / "store")
    assert link.read_bytes() == b"two"


def test_a_dangling_link_is_replaced(cache: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "m.gguf").symlink_to(tmp_path / "gone.gguf")
    assert link_into_store(snapshot(cache, "c1", b"one"), store).read_bytes() == b"one"


def test_a_file_of_its_own_in_the_store_is_never_clobbered(cache: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "m.gguf").write_bytes(b"fetched from a peer")
    hub_copy = snapshot(cache, "c1", b"one")
    assert link_into_store(hub_copy, store) == hub_copy
    assert (store / "m.gguf").read_bytes() == b"fetched from a peer"
