"""Content hashes of model files, computed once per file (path, size, mtime) and cached on disk.

The same single read that computes a file's sha256 also computes its chunk manifest (the sha256 of
every fixed-size chunk), which peers fetching the file verify each chunk against
(services/mesh/file_fetch.py). Both are cached under the model cache dir: `hashes.json` maps
(path, size, mtime) to the content hash, `chunks/<sha256>.json` holds the manifest of that content.
A source serves the cached manifest, so a file that changed on disk after it was hashed (same size
and mtime: a lying or broken peer) still gets a true manifest, and its false bytes fail per chunk.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from services.node.home import model_cache_dir

HASH_CACHE_FILE = "hashes.json"
MANIFEST_DIR = "chunks"
MIB = 1024 * 1024
# 1 MiB chunks up to 4 GiB files; above that the chunk doubles until a manifest has ≤ 4096 chunks,
# so a manifest (32 bytes per chunk) always fits one mesh frame (frames.MAX_FRAME_BYTES).
BASE_CHUNK_BYTES = MIB
MAX_CHUNKS = 4096
# What a peer's manifest may use (ours stay within these): anything else is a broken peer.
MIN_CHUNK_BYTES = 64 * 1024
MAX_CHUNK_BYTES = 1024 * MIB
SHA256_BYTES = 32
READ_BYTES = MIB


class ManifestError(ValueError):
    """A manifest that cannot describe any file (from a broken peer or a damaged cache file)."""


def chunk_bytes_for(file_bytes: int) -> int:
    chunk = BASE_CHUNK_BYTES
    while file_bytes > chunk * MAX_CHUNKS:
        chunk *= 2
    return chunk


@dataclass(frozen=True)
class ChunkManifest:
    file_bytes: int
    chunk_bytes: int
    chunk_sha256: tuple[bytes, ...]

    def __post_init__(self) -> None:
        chunk = self.chunk_bytes
        if not MIN_CHUNK_BYTES <= chunk <= MAX_CHUNK_BYTES or chunk & (chunk - 1):
            raise ManifestError(f"chunk size {chunk} is not a power of two in the allowed range")
        if self.file_bytes < 0:
            raise ManifestError(f"file size {self.file_bytes} is negative")
        expected = -(-self.file_bytes // chunk)
        if len(self.chunk_sha256) != expected or expected > MAX_CHUNKS:
            raise ManifestError(
                f"{len(self.chunk_sha256)} chunk hashes for {self.file_bytes} bytes in {chunk}-byte chunks"
            )
        if any(len(digest) != SHA256_BYTES for digest in self.chunk_sha256):
            raise ManifestError("a chunk hash is not 32 bytes")

    @property
    def chunk_count(self) -> int:
        return len(self.chunk_sha256)

    def span(self, index: int) -> tuple[int, int]:
        """(offset, length) of chunk `index`; the last one may be short."""
        offset = index * self.chunk_bytes
        return offset, min(self.chunk_bytes, self.file_bytes - offset)

    def to_json(self) -> str:
        hashes = [digest.hex() for digest in self.chunk_sha256]
        return json.dumps({"file_bytes": self.file_bytes, "chunk_bytes": self.chunk_bytes, "chunks": hashes})

    @classmethod
    def from_json(cls, text: str) -> ChunkManifest:
        try:
            data = json.loads(text)
            hashes = tuple(bytes.fromhex(h) for h in data["chunks"])
            return cls(int(data["file_bytes"]), int(data["chunk_bytes"]), hashes)
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"unreadable manifest: {exc}") from exc


@dataclass(frozen=True)
class FileHashes:
    sha256: str
    manifest: ChunkManifest


def hash_file(path: Path) -> FileHashes:
    """Blocking, one read of the whole file: its sha256 and its chunk manifest. The chunk hashes
    run in a second thread (hashlib releases the GIL), so this costs one hash's time on two cores."""
    size = path.stat().st_size
    chunk_bytes = chunk_bytes_for(size)
    whole = hashlib.sha256()
    chunks: list[bytes] = []
    current = hashlib.sha256()
    filled = total = 0
    with path.open("rb") as handle, ThreadPoolExecutor(max_workers=1) as helper:
        # At most the size stat saw: a file growing while we read is described as it was.
        while piece := handle.read(min(READ_BYTES, size - total)):
            chunk_update = helper.submit(current.update, piece)
            whole.update(piece)
            chunk_update.result()
            filled += len(piece)
            total += len(piece)
            if filled == chunk_bytes:
                chunks.append(current.digest())
                current, filled = hashlib.sha256(), 0
    if filled:
        chunks.append(current.digest())
    return FileHashes(whole.hexdigest(), ChunkManifest(total, chunk_bytes, tuple(chunks)))


def _cache_path() -> Path:
    return model_cache_dir() / HASH_CACHE_FILE


def _manifest_path(sha256: str) -> Path:
    return model_cache_dir() / MANIFEST_DIR / f"{sha256}.json"


def _load() -> dict[str, str]:
    try:
        data = json.loads(_cache_path().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_atomically(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(target)


def _cache_key(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def cached_manifest(sha256: str) -> ChunkManifest | None:
    """Blocking (reads a small file). The manifest of the content `sha256`, if any node of this
    user hashed such a file."""
    if len(sha256) != 2 * SHA256_BYTES or not all(c in "0123456789abcdef" for c in sha256):
        return None  # never a path component from a peer that is not a plain hex digest
    try:
        return ChunkManifest.from_json(_manifest_path(sha256).read_text())
    except (FileNotFoundError, ManifestError):
        return None


def remember(path: Path, hashes: FileHashes, key: str = "") -> None:
    """Blocking. Record hashes already known for `path` (a file fetched and verified), so it is
    never read again just to hash it."""
    _write_atomically(_manifest_path(hashes.sha256), hashes.manifest.to_json())
    key = key or _cache_key(path)
    cache = _load()
    cache[key] = hashes.sha256
    _write_atomically(_cache_path(), json.dumps(cache, indent=0))


def file_hashes(path: Path) -> FileHashes:
    """Blocking (reads the whole file the first time): call from a thread."""
    key = _cache_key(path)
    digest = _load().get(key)
    if digest is not None:
        manifest = cached_manifest(digest)
        if manifest is not None:
            return FileHashes(digest, manifest)
    # Unknown, or hashed before manifests existed: one pass computes both.
    hashes = hash_file(path)
    remember(path, hashes, key)  # the key from before the read: a file changed since is hashed again
    return hashes


def content_hash(path: Path) -> str:
    """Blocking (reads the whole file the first time): call from a thread."""
    return file_hashes(path).sha256
