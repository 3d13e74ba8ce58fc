"""Gossip messages as bytes: typed messages in, protobuf out, and a strict decoder for untrusted input.

Everything a peer sends passes `decode_message`, which either returns a message whose every record
passed `check_record` or raises GossipDecodeError (the peer broke the protocol). Nothing else escapes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from google.protobuf.message import DecodeError

from services.gossip.digest import NUM_DIGEST_BUCKETS, bucket_of
from services.gossip.items import GossipItem, Tombstone
from services.gossip.record_limits import InvalidRecord, check_node_id, check_record, check_version
from services.proto.meshllm.gossip.v1 import wire_pb2

WIRE_PROTOCOL_VERSION = 1
# A gossip payload rides in one mesh frame (services/mesh/frames.py, MAX_FRAME_BYTES = 256 KiB);
# keep well under it so framing never tips a message over.
MAX_GOSSIP_MESSAGE_BYTES = 192 * 1024
MAX_ITEMS_PER_MESSAGE = 4096  # records + tombstones in one Delta
# Keys in DigestEntries or want_keys: 8 B key + up to 9 B rank each stays under the byte cap.
MAX_DIGEST_ENTRIES = 8192
# Protobuf framing per repeated element (tag + length prefix), used when splitting a Delta by size.
_ITEM_OVERHEAD_BYTES = 6
_ENVELOPE_OVERHEAD_BYTES = 16
_TOMBSTONE_FIXED_BYTES = 24  # version varint + death time double + tags
_WANT_KEY_BYTES = 10  # fixed64 plus packing slack


class GossipDecodeError(ValueError):
    """A peer's bytes are not a gossip message we accept (garbage, too big, over a limit, other version)."""


class GossipEncodeError(ValueError):
    """We were asked to send something no peer would accept (our bug, not the peer's)."""


@dataclass(frozen=True)
class DigestSummary:
    bucket_hashes: tuple[int, ...]


@dataclass(frozen=True)
class DigestEntries:
    buckets: tuple[int, ...]
    ranks: Mapping[int, int]  # node key -> rank, every entry the sender has in `buckets`


@dataclass(frozen=True)
class Delta:
    items: tuple[GossipItem, ...] = ()
    want_keys: tuple[int, ...] = ()
    rumor: bool = False  # pushed on change: the receiver passes on what is new to it


GossipMessage: TypeAlias = DigestSummary | DigestEntries | Delta

# What a payload is, for counting traffic (services/gossip/traffic.py): a rumor is a pushed Delta.
KIND_SUMMARY = "summary"
KIND_ENTRIES = "entries"
KIND_DELTA = "delta"
KIND_RUMOR = "rumor"
MESSAGE_KINDS = (KIND_SUMMARY, KIND_ENTRIES, KIND_DELTA, KIND_RUMOR)


def message_kind(message: GossipMessage) -> str:
    if isinstance(message, DigestSummary):
        return KIND_SUMMARY
    if isinstance(message, DigestEntries):
        return KIND_ENTRIES
    return KIND_RUMOR if message.rumor else KIND_DELTA


def encode_message(message: GossipMessage) -> bytes:
    """Serialize `message`; GossipEncodeError if a peer would reject it for size or counts."""
    _check_outgoing_counts(message)
    envelope = wire_pb2.GossipEnvelope(protocol_version=WIRE_PROTOCOL_VERSION)
    if isinstance(message, DigestSummary):
        envelope.summary.bucket_hashes.extend(message.bucket_hashes)
    elif isinstance(message, DigestEntries):
        envelope.entries.buckets.extend(message.buckets)
        envelope.entries.keys.extend(message.ranks.keys())
        envelope.entries.ranks.extend(message.ranks.values())
    else:
        _fill_delta(envelope.delta, message)
    data = envelope.SerializeToString()
    if len(data) > MAX_GOSSIP_MESSAGE_BYTES:
        raise GossipEncodeError(f"message of {len(data)} bytes is over {MAX_GOSSIP_MESSAGE_BYTES}")
    return data


def _check_outgoing_counts(message: GossipMessage) -> None:
    if isinstance(message, DigestEntries) and len(message.ranks) > MAX_DIGEST_ENTRIES:
        raise GossipEncodeError(f"digest entries over {MAX_DIGEST_ENTRIES}")
    if isinstance(message, Delta):
        if len(message.items) > MAX_ITEMS_PER_MESSAGE:
            raise GossipEncodeError(f"delta items over {MAX_ITEMS_PER_MESSAGE}")
        if len(message.want_keys) > MAX_DIGEST_ENTRIES:
            raise GossipEncodeError(f"delta want keys over {MAX_DIGEST_ENTRIES}")


def _fill_delta(out: wire_pb2.Delta, delta: Delta) -> None:
    records = [item for item in delta.items if not isinstance(item, Tombstone)]
    out.records.extend(records)
    out.tombstones.extend(
        wire_pb2.Tombstone(node_id=t.node_id, version=t.version, died_unix_s=t.died_unix_s)
        for t in delta.items
        if isinstance(t, Tombstone)
    )
    out.want_keys.extend(delta.want_keys)
    out.rumor = delta.rumor


def encode_delta(
    items: Sequence[GossipItem], want_keys: Sequence[int] = (), *, rumor: bool = False
) -> list[bytes]:
    """Encode a Delta as one or more messages, each under MAX_GOSSIP_MESSAGE_BYTES."""
    budget = MAX_GOSSIP_MESSAGE_BYTES - _ENVELOPE_OVERHEAD_BYTES - _WANT_KEY_BYTES * len(want_keys)
    chunks: list[list[GossipItem]] = [[]]
    used = 0
    for item in items:
        size = _encoded_size(item)
        if chunks[-1] and (used + size > budget or len(chunks[-1]) >= MAX_ITEMS_PER_MESSAGE):
            chunks.append([])
            used = 0
        chunks[-1].append(item)
        used += size
    first = encode_message(Delta(tuple(chunks[0]), tuple(want_keys), rumor))
    return [first, *(encode_message(Delta(tuple(chunk), rumor=rumor)) for chunk in chunks[1:])]


def _encoded_size(item: GossipItem) -> int:
    if isinstance(item, Tombstone):
        return len(item.node_id.encode()) + _TOMBSTONE_FIXED_BYTES + _ITEM_OVERHEAD_BYTES
    return item.ByteSize() + _ITEM_OVERHEAD_BYTES


def decode_message(data: bytes) -> GossipMessage:
    """Parse and sanity-check a peer's message; raise GossipDecodeError for anything we do not accept."""
    if len(data) > MAX_GOSSIP_MESSAGE_BYTES:
        raise GossipDecodeError(f"message of {len(data)} bytes is over {MAX_GOSSIP_MESSAGE_BYTES}")
    envelope = wire_pb2.GossipEnvelope()
    try:
        envelope.ParseFromString(data)
    except (DecodeError, ValueError, RecursionError) as exc:
        raise GossipDecodeError(f"not a gossip message: {exc}") from exc
    # Unknown fields would ride along inside records and be re-gossiped to every node: drop them here.
    envelope.DiscardUnknownFields()
    if envelope.protocol_version != WIRE_PROTOCOL_VERSION:
        raise GossipDecodeError(f"gossip protocol version {envelope.protocol_version} is not supported")
    body = envelope.WhichOneof("body")
    if body == "summary":
        return _decode_summary(envelope.summary)
    if body == "entries":
        return _decode_entries(envelope.entries)
    if body == "delta":
        return _decode_delta(envelope.delta)
    raise GossipDecodeError("gossip message has no body")


def _decode_summary(summary: wire_pb2.DigestSummary) -> DigestSummary:
    if len(summary.bucket_hashes) != NUM_DIGEST_BUCKETS:
        raise GossipDecodeError(f"digest summary must have {NUM_DIGEST_BUCKETS} buckets")
    return DigestSummary(tuple(summary.bucket_hashes))


def _decode_entries(entries: wire_pb2.DigestEntries) -> DigestEntries:
    if len(entries.keys) != len(entries.ranks) or len(entries.keys) > MAX_DIGEST_ENTRIES:
        raise GossipDecodeError("digest entries: keys and ranks must pair up, within the entry limit")
    buckets = tuple(entries.buckets)
    if len(set(buckets)) != len(buckets) or any(b >= NUM_DIGEST_BUCKETS for b in buckets):
        raise GossipDecodeError("digest entries: bad bucket list")
    covered = set(buckets)
    ranks = dict(zip(entries.keys, entries.ranks, strict=True))
    if len(ranks) != len(entries.keys) or any(bucket_of(key) not in covered for key in ranks):
        raise GossipDecodeError("digest entries: duplicate key or key outside the listed buckets")
    return DigestEntries(buckets, ranks)


def _decode_delta(delta: wire_pb2.Delta) -> Delta:
    if len(delta.records) + len(delta.tombstones) > MAX_ITEMS_PER_MESSAGE:
        raise GossipDecodeError(f"delta carries more than {MAX_ITEMS_PER_MESSAGE} items")
    if len(delta.want_keys) > MAX_DIGEST_ENTRIES:
        raise GossipDecodeError(f"delta wants more than {MAX_DIGEST_ENTRIES} keys")
    items: list[GossipItem] = []
    try:
        for record in delta.records:
            check_record(record)
            items.append(record)
        items.extend(_decode_tombstone(t) for t in delta.tombstones)
    except InvalidRecord as exc:
        raise GossipDecodeError(f"delta item rejected: {exc}") from exc
    return Delta(tuple(items), tuple(delta.want_keys), delta.rumor)


def _decode_tombstone(tombstone: wire_pb2.Tombstone) -> Tombstone:
    check_node_id(tombstone.node_id)
    check_version(tombstone.version)
    if not math.isfinite(tombstone.died_unix_s):
        raise InvalidRecord("tombstone time is not a finite number")
    return Tombstone(tombstone.node_id, tombstone.version, tombstone.died_unix_s)
