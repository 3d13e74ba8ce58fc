"""What a node advertises of its model store (services/gossip/model_store.py): a split GGUF is one
model whose size is all of its parts, so placement plans with the whole."""

from __future__ import annotations

from pathlib import Path

from services.gossip.model_store import advertised_files, scan_store
from services.node.config import ModelRequest


def write(path: Path, size: int) -> Path:
    path.write_bytes(b"\0" * size)
    return path


def test_a_split_gguf_is_one_model_of_all_its_parts(tmp_path: Path) -> None:
    for part, size in ((1, 100), (2, 200), (3, 300)):
        write(tmp_path / f"big-model-{part:05d}-of-00003.gguf", size)
    write(tmp_path / "small.gguf", 7)
    files = {f.name: f for f in advertised_files([], scan_store(tmp_path))}
    assert set(files) == {"big-model", "small"}
    assert files["big-model"].bytes == 600 and files["big-model"].path.endswith("-00001-of-00003.gguf")
    assert files["small"].bytes == 7


def test_a_configured_split_counts_the_parts_present(tmp_path: Path) -> None:
    first = write(tmp_path / "m-00001-of-00002.gguf", 10)  # part 2 still downloading
    (files,) = advertised_files([ModelRequest(name="m", path=str(first))], [])
    assert files.bytes == 10
    write(tmp_path / "m-00002-of-00002.gguf", 5)
    (files,) = advertised_files([ModelRequest(name="m", path=str(first))], [])
    assert files.bytes == 15
