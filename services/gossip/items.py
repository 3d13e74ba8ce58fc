"""What gossip carries per node: its record, or a tombstone saying it departed; and how they rank.

A node's state ranks as `version * 2 + (1 if dead)`. Merge keeps the highest rank, so a tombstone beats
a record of the same (or an older) version, and a record with a higher version beats a tombstone: the
node came back. One integer per node also makes digests cheap to send and compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from services.proto.meshllm.gossip.v1 import gossip_pb2

# Rank is sent as a uint64 (version * 2 + 1 must fit).
MAX_VERSION = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A departed node: records at or below `version` stay dead until the tombstone expires."""

    node_id: str
    version: int
    died_unix_s: float


GossipItem: TypeAlias = gossip_pb2.NodeRecord | Tombstone


def rank_of(item: GossipItem) -> int:
    """The merge order of a node's state; a record saying goodbye ranks as its tombstone."""
    if isinstance(item, Tombstone):
        return item.version * 2 + 1
    return item.version * 2 + (1 if item.leaving else 0)


def version_of_rank(rank: int) -> int:
    return rank >> 1


def is_dead_rank(rank: int) -> bool:
    return bool(rank & 1)
