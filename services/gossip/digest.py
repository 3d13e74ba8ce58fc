"""The anti-entropy digest: every known node's rank under a 64-bit key, summarised as bucket hashes.

Why buckets: a full digest is ~11 bytes per node (about 11 KB at 1,000 nodes) every round. Two views
that agree — the common case — only need to compare NUM_DIGEST_BUCKETS hashes; when some differ, only
those buckets' entries travel. Bucket hashes are XORs of per-entry hashes, so an update is O(1).

Keys are a hash of the node id rather than the id itself (8 bytes instead of 32+ per entry). A
collision between two node ids (odds ~N²/2⁶⁵) would only hide one of them from anti-entropy; push
still carries its record.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence

NUM_DIGEST_BUCKETS = 64
_KEY_BYTES = 8
_UINT64_MASK = (1 << 64) - 1


@functools.lru_cache(maxsize=1 << 16)
def node_key(node_id: str) -> int:
    """The 64-bit key a node id travels as in digests."""
    return int.from_bytes(hashlib.blake2b(node_id.encode(), digest_size=_KEY_BYTES).digest(), "little")


def bucket_of(key: int) -> int:
    return key % NUM_DIGEST_BUCKETS


def _entry_hash(key: int, rank: int) -> int:
    raw = key.to_bytes(_KEY_BYTES, "little") + (rank & _UINT64_MASK).to_bytes(8, "little")
    return int.from_bytes(hashlib.blake2b(raw, digest_size=_KEY_BYTES).digest(), "little")


class BucketDigest:
    """Ranks by node key, with one incrementally maintained hash per bucket."""

    def __init__(self) -> None:
        self._ranks: dict[int, int] = {}
        self._hashes = [0] * NUM_DIGEST_BUCKETS
        self._members: list[set[int]] = [set() for _ in range(NUM_DIGEST_BUCKETS)]

    def rank(self, key: int) -> int | None:
        return self._ranks.get(key)

    def set(self, key: int, rank: int) -> None:
        bucket = bucket_of(key)
        old = self._ranks.get(key)
        if old == rank:
            return
        if old is not None:
            self._hashes[bucket] ^= _entry_hash(key, old)
        self._hashes[bucket] ^= _entry_hash(key, rank)
        self._ranks[key] = rank
        self._members[bucket].add(key)

    def discard(self, key: int) -> None:
        old = self._ranks.pop(key, None)
        if old is None:
            return
        bucket = bucket_of(key)
        self._hashes[bucket] ^= _entry_hash(key, old)
        self._members[bucket].discard(key)

    def bucket_hashes(self) -> tuple[int, ...]:
        return tuple(self._hashes)

    def differing_buckets(self, remote_hashes: Sequence[int]) -> list[int]:
        return [
            b
            for b, (ours, theirs) in enumerate(zip(self._hashes, remote_hashes, strict=True))
            if ours != theirs
        ]

    def bucket_size(self, bucket: int) -> int:
        return len(self._members[bucket])

    def entries_in(self, buckets: Iterable[int]) -> dict[int, int]:
        ranks = self._ranks
        return {key: ranks[key] for bucket in buckets for key in self._members[bucket]}

    def __len__(self) -> int:
        return len(self._ranks)
