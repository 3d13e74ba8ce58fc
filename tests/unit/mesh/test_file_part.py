"""The .part file of a fetch (services/mesh/file_part.py) on real files: chunks verified before they
are written, in any order; the whole file's sha256 checked before the rename; resume; a full disk."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from services.gossip.model_hashes import hash_file
from services.mesh.file_part import DiskFull, PartFile, part_path

MIB = 1024 * 1024


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.gguf"
    path.write_bytes(os.urandom(5 * MIB + 333))
    return path


def chunk(path: Path, part: PartFile, index: int) -> bytes:
    offset, length = part.manifest.span(index)
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(length)


def test_chunks_in_any_order_make_the_file_and_it_is_renamed_into_place(source: Path, tmp_path: Path) -> None:
    hashes = hash_file(source)
    dest = tmp_path / "dest.gguf"
    part = PartFile(dest, hashes.manifest)
    assert part.open() == []
    assert part_path(dest).stat().st_size == source.stat().st_size  # allocated at once (sparse)
    order = list(range(hashes.manifest.chunk_count))
    random.Random(3).shuffle(order)
    for index in order:
        assert part.write_chunk(index, chunk(source, part, index))
    assert part.finish(hashes.sha256)
    assert dest.read_bytes() == source.read_bytes() and not part_path(dest).exists()


def test_a_chunk_that_does_not_match_the_manifest_is_not_written(source: Path, tmp_path: Path) -> None:
    hashes = hash_file(source)
    part = PartFile(tmp_path / "dest.gguf", hashes.manifest)
    part.open()
    wrong = bytearray(chunk(source, part, 1))
    wrong[7] ^= 1
    assert not part.write_chunk(1, wrong)
    assert part_path(part.dest).read_bytes()[MIB : 2 * MIB] == bytes(MIB)  # still a hole
    part.close()


def test_a_second_fetch_finds_the_chunks_the_first_one_wrote(source: Path, tmp_path: Path) -> None:
    hashes = hash_file(source)
    dest = tmp_path / "dest.gguf"
    first = PartFile(dest, hashes.manifest)
    first.open()
    for index in (0, 1, 3):
        first.write_chunk(index, chunk(source, first, index))
    first.close()  # cancelled
    second = PartFile(dest, hashes.manifest)
    assert second.open() == [0, 1, 3]
    for index in (2, 4, 5):
        second.write_chunk(index, chunk(source, second, index))
    assert second.finish(hashes.sha256)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == hashes.sha256


def test_a_leftover_part_of_another_size_is_resized_and_only_matching_chunks_count(
    source: Path, tmp_path: Path
) -> None:
    hashes = hash_file(source)
    dest = tmp_path / "dest.gguf"
    part_path(dest).write_bytes(source.read_bytes()[: 2 * MIB] + os.urandom(9 * MIB))
    part = PartFile(dest, hashes.manifest)
    assert part.open() == [0, 1]
    assert part_path(dest).stat().st_size == source.stat().st_size
    part.close()


def test_a_file_whose_chunks_all_match_but_not_its_sha256_is_removed(source: Path, tmp_path: Path) -> None:
    """A false manifest (its chunks consistent with false bytes): caught by the whole-file hash."""
    hashes = hash_file(source)
    part = PartFile(tmp_path / "dest.gguf", hashes.manifest)
    part.open()
    for index in range(hashes.manifest.chunk_count):
        part.write_chunk(index, chunk(source, part, index))
    assert not part.finish("00" * 32)
    assert not part_path(part.dest).exists() and not part.dest.exists()


def test_a_full_disk_is_reported_as_such(source: Path, tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    hashes = hash_file(source)
    dest = tmp_path / "dest.gguf"
    part = PartFile(dest, hashes.manifest)
    part_path(dest).symlink_to("/dev/full")  # every write: ENOSPC
    with pytest.raises(DiskFull):
        part.write_chunk(0, chunk(source, part, 0))
    part.close()
