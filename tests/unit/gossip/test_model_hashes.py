"""Content hashes and chunk manifests of model files (services/gossip/model_hashes.py): one read
computes both, both are cached, and a file changed behind the cache's back keeps its old manifest."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from services.gossip import model_hashes
from services.gossip.model_hashes import (
    BASE_CHUNK_BYTES,
    MAX_CHUNKS,
    ChunkManifest,
    FileHashes,
    ManifestError,
    cached_manifest,
    chunk_bytes_for,
    content_hash,
    file_hashes,
    hash_file,
    remember,
)

MIB = 1024 * 1024
GIB = 1024 * MIB


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MESH_LLM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


@pytest.mark.parametrize(
    ("file_bytes", "chunk"),
    [(0, MIB), (1, MIB), (4 * GIB, MIB), (4 * GIB + 1, 2 * MIB), (8 * GIB, 2 * MIB), (100 * GIB, 32 * MIB)],
)
def test_chunks_are_a_mib_up_to_4_gib_then_grow_so_a_manifest_stays_small(
    file_bytes: int, chunk: int
) -> None:
    assert chunk_bytes_for(file_bytes) == chunk
    assert -(-file_bytes // chunk) <= MAX_CHUNKS


@pytest.mark.parametrize("size", [0, 1, MIB - 1, MIB, 3 * MIB + 12345])
def test_one_pass_gives_the_sha256_and_every_chunks_hash(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    hashes = hash_file(path)
    assert hashes.sha256 == hashlib.sha256(data).hexdigest()
    m = hashes.manifest
    assert (m.file_bytes, m.chunk_bytes) == (size, BASE_CHUNK_BYTES)
    expected = [hashlib.sha256(data[o : o + MIB]).digest() for o in range(0, size, MIB)]
    assert list(m.chunk_sha256) == expected
    assert [m.span(i) for i in range(m.chunk_count)] == [
        (o, len(data[o : o + MIB])) for o in range(0, size, MIB)
    ]


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    original = model_hashes.hash_file
    monkeypatch.setattr(model_hashes, "hash_file", lambda p: calls.append(p) or original(p))
    return calls


def test_hashes_are_cached_and_the_manifest_lives_under_the_cache_dir(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = random_file(tmp_path / "m.gguf", 2 * MIB + 5)
    digest = content_hash(path)
    assert (cache / "chunks" / f"{digest}.json").exists()
    assert cached_manifest(digest) == hash_file(path).manifest
    reads = count_reads(monkeypatch)
    assert content_hash(path) == digest
    assert file_hashes(path).manifest == cached_manifest(digest)
    assert reads == []  # both from the cache, the file not read again


def test_a_file_changed_behind_the_caches_back_keeps_its_true_manifest(tmp_path: Path) -> None:
    """Same size and mtime after the write (a lying peer): the cache still says what it hashed, so
    a source serves the manifest of the true content and its false bytes fail chunk by chunk."""
    path = random_file(tmp_path / "m.gguf", 2 * MIB)
    before = file_hashes(path)
    stat = path.stat()
    with path.open("r+b") as handle:
        handle.write(b"\x00" * 16)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_hashes(path) == before
    assert hash_file(path).manifest.chunk_sha256[0] != before.manifest.chunk_sha256[0]


def test_a_changed_mtime_is_hashed_again(tmp_path: Path) -> None:
    path = random_file(tmp_path / "m.gguf", MIB)
    first = content_hash(path)
    random_file(path, MIB)
    os.utime(path, ns=(1, 10**18))
    assert content_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest() != first


def test_a_hash_cached_before_manifests_existed_is_computed_again_with_its_manifest(
    tmp_path: Path, cache: Path
) -> None:
    path = random_file(tmp_path / "m.gguf", MIB + 1)
    stat = path.stat()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cache.mkdir(parents=True)
    (cache / "hashes.json").write_text(
        json.dumps({f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}": digest})
    )
    assert cached_manifest(digest) is None
    assert content_hash(path) == digest
    assert cached_manifest(digest) == hash_file(path).manifest


def test_remembered_hashes_spare_a_fetched_file_its_hashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = random_file(tmp_path / "fetched.gguf", MIB)
    known = hash_file(path)
    remember(path, known)
    reads = count_reads(monkeypatch)
    assert file_hashes(path) == known
    assert reads == []


@pytest.mark.parametrize("name", ["../../etc/passwd", "AB" * 32, "ab" * 31, ""])
def test_only_plain_hex_digests_name_a_manifest_file(name: str) -> None:
    assert cached_manifest(name) is None


def test_a_damaged_manifest_file_is_no_manifest(cache: Path) -> None:
    digest = "cd" * 32
    (cache / "chunks").mkdir(parents=True)
    (cache / "chunks" / f"{digest}.json").write_text(
        '{"file_bytes": 5, "chunk_bytes": 1048576, "chunks": []}'
    )
    assert cached_manifest(digest) is None


@pytest.mark.parametrize(
    ("file_bytes", "chunk_bytes", "count", "digest_bytes"),
    [
        (-1, MIB, 0, 32),
        (MIB, 3 * MIB, 1, 32),
        (MIB, MIB, 2, 32),
        (MIB, MIB, 1, 31),
        (MIB * 5000, MIB, 5000, 32),
    ],
)
def test_impossible_manifests_are_refused(
    file_bytes: int, chunk_bytes: int, count: int, digest_bytes: int
) -> None:
    with pytest.raises(ManifestError):
        ChunkManifest(file_bytes, chunk_bytes, tuple(bytes(digest_bytes) for _ in range(count)))


def test_a_manifest_survives_its_json() -> None:
    m = FileHashes("ef" * 32, ChunkManifest(MIB + 1, MIB, (bytes(32), b"\x01" * 32))).manifest
    assert ChunkManifest.from_json(m.to_json()) == m
