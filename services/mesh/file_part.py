"""The `.part` file a fetch writes into: chunks verified before they are written, the whole file's
sha256 computed as the verified prefix grows, and the rename into place only when it matches.

Every method blocks (disk reads, writes, hashing): the fetch calls them in threads, several at
once. The whole-file hash runs in a thread of its own, in file order, beside the chunk checks
(hashlib releases the GIL: the two hashes take two cores, not twice the time on one). Each write
opens its own descriptor, so a cancelled fetch never leaves a thread writing through a descriptor
number the process has since reused for another file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from services.gossip.model_hashes import ChunkManifest

PART_SUFFIX = ".part"
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# Chunks the whole-file hash may lag behind the writes (their bytes wait in memory for it)...
HASH_BACKLOG_CHUNKS = 8
# ...and chunks past a gap it keeps in memory until the gap fills (more are read back from disk).
REORDER_CHUNKS = 16


class DiskFull(OSError):
    """The destination's filesystem is full (the fetch fails and its .part is removed)."""


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + PART_SUFFIX)


class PartFile:
    def __init__(self, dest: Path, manifest: ChunkManifest) -> None:
        self.dest = dest
        self.path = part_path(dest)
        self.manifest = manifest
        self._whole = hashlib.sha256()
        self._hashed_upto = 0  # chunks [0, _hashed_upto) are in _whole
        self._on_disk: set[int] = set()  # verified chunks written (or found) in the .part
        self._early: dict[int, bytes | bytearray] = {}  # on disk past the gap, still in memory
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whole-file-sha256")
        self._backlog = threading.BoundedSemaphore(HASH_BACKLOG_CHUNKS)

    def open(self) -> list[int]:
        """Create the .part at its full size (sparse), or keep the one a cancelled fetch left:
        the chunks already in it that match the manifest (read and hashed once, in order)."""
        found: list[int] = []
        with _disk_full_as_such():
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                existing = os.fstat(fd).st_size
                if existing != self.manifest.file_bytes:
                    os.ftruncate(fd, self.manifest.file_bytes)
                for index in range(self.manifest.chunk_count):
                    offset, length = self.manifest.span(index)
                    if offset + length > existing:
                        break  # past what a previous fetch had allocated: holes
                    data = os.pread(fd, length, offset)
                    if hashlib.sha256(data).digest() == self.manifest.chunk_sha256[index]:
                        found.append(index)
                        self._hash_in_order(index, data if index == self._hashed_upto else None)
            finally:
                os.close(fd)
        return found

    def write_chunk(self, index: int, data: bytes | bytearray) -> bool:
        """Verify chunk `index` against the manifest and write it; False if it does not match."""
        if hashlib.sha256(data).digest() != self.manifest.chunk_sha256[index]:
            return False
        offset, _ = self.manifest.span(index)
        with _disk_full_as_such():
            fd = os.open(self.path, os.O_WRONLY)
            try:
                view = memoryview(data)
                while view:
                    written = os.pwrite(fd, view, offset)
                    view, offset = view[written:], offset + written
            finally:
                os.close(fd)
        self._backlog.acquire()
        self._hasher.submit(self._hash_written, index, data)
        return True

    def _hash_written(self, index: int, data: bytes | bytearray) -> None:
        try:
            self._hash_in_order(index, data)
        finally:
            self._backlog.release()

    def _hash_in_order(self, index: int, data: bytes | bytearray | None) -> None:
        """Only ever on one thread at a time (the hasher's, or open()'s before any write). The hash
        takes the chunk if it extends the hashed prefix, then the chunks after it that are already
        written, so the end of a fetch costs little more than its last chunk."""
        self._on_disk.add(index)
        if index != self._hashed_upto:
            if data is not None and len(self._early) < REORDER_CHUNKS:
                self._early[index] = data
            return
        if data is None:
            data = self._read(index)
        self._whole.update(data)
        self._hashed_upto += 1
        while self._hashed_upto in self._on_disk:
            early = self._early.pop(self._hashed_upto, None)
            self._whole.update(early if early is not None else self._read(self._hashed_upto))
            self._hashed_upto += 1

    def _read(self, index: int) -> bytes:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return os.pread(fd, self.manifest.span(index)[1], self.manifest.span(index)[0])
        finally:
            os.close(fd)

    def finish(self, sha256: str) -> bool:
        """Every chunk is written: rename into place if the whole file has `sha256`, else remove
        the .part (its chunks matched a manifest that does not describe this file)."""
        self._hasher.shutdown(wait=True)  # every written chunk is in the hash now
        complete = self._hashed_upto == self.manifest.chunk_count
        matches = complete and self._whole.hexdigest() == sha256
        if not matches:
            self.discard()
            return False
        # No fsync (it would cost the whole write-back of a multi-GB file): the rename is atomic,
        # and a file damaged by a crash right after is caught by every receiver's chunk checks.
        os.replace(self.path, self.dest)
        return True

    def discard(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def close(self) -> None:
        """The fetch is over (done, failed or cancelled; no write is running): the hasher thread
        finishes what it holds and goes."""
        self._hasher.shutdown(wait=False)


@contextlib.contextmanager
def _disk_full_as_such() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise DiskFull(exc.errno, "disk full") from exc
        raise
