import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gossip.digest import NUM_DIGEST_BUCKETS, bucket_of, node_key
from services.gossip.items import MAX_VERSION, Tombstone
from services.gossip.record_limits import (
    MAX_ADDRESSES_PER_RECORD,
    MAX_MAP_ENTRIES_PER_RECORD,
    MAX_MODELS_PER_RECORD,
    MAX_RECORD_BYTES,
    MAX_TEXT_CHARS,
)
from services.gossip.wire import (
    MAX_DIGEST_ENTRIES,
    MAX_GOSSIP_MESSAGE_BYTES,
    MAX_ITEMS_PER_MESSAGE,
    WIRE_PROTOCOL_VERSION,
    Delta,
    DigestEntries,
    DigestSummary,
    GossipDecodeError,
    GossipEncodeError,
    decode_message,
    encode_delta,
    encode_message,
)
from services.proto.meshllm.gossip.v1 import gossip_pb2, wire_pb2

PEER = "b" * 32


def record(node_id: str = PEER, version: int = 1, **fields: object) -> gossip_pb2.NodeRecord:
    return gossip_pb2.NodeRecord(node_id=node_id, version=version, **fields)  # type: ignore[arg-type]


def full_record() -> gossip_pb2.NodeRecord:
    return record(
        name="gpu-box",
        addresses=["10.0.0.2:41234"],
        models_on_disk=[gossip_pb2.ModelFile(name="m", path="/m.gguf", bytes=10, sha256="ab" * 32)],
        models_wanted=["m"],
        served=[
            gossip_pb2.ServedModel(
                name="m",
                role=gossip_pb2.MODEL_ROLE_SPLIT_HOST,
                shares=[gossip_pb2.LayerShare(node_id="c" * 32, fraction=0.5)],
            )
        ],
        request_rate_per_min={"m": 2.5},
        rtt_ms={"c" * 32: 4.0},
        updated_unix_s=1.7e9,
    )


def delta_bytes(*records: gossip_pb2.NodeRecord, **fields: object) -> bytes:
    envelope = wire_pb2.GossipEnvelope(protocol_version=WIRE_PROTOCOL_VERSION)
    envelope.delta.records.extend(records)
    for name, value in fields.items():
        getattr(envelope.delta, name).extend(value)  # type: ignore[arg-type]
    return envelope.SerializeToString()


# --- round trips -------------------------------------------------------------------------------------


def test_summary_round_trips() -> None:
    summary = DigestSummary(tuple(range(NUM_DIGEST_BUCKETS)))
    assert decode_message(encode_message(summary)) == summary


def test_entries_round_trip() -> None:
    keys = [node_key(f"node-{i}") for i in range(20)]
    buckets = tuple(sorted({bucket_of(k) for k in keys}))
    entries = DigestEntries(buckets, {k: i for i, k in enumerate(keys)})
    decoded = decode_message(encode_message(entries))
    assert isinstance(decoded, DigestEntries)
    assert decoded.buckets == buckets and dict(decoded.ranks) == entries.ranks


def test_delta_round_trips_records_tombstones_wants_and_the_rumor_flag() -> None:
    delta = Delta((full_record(), Tombstone("c" * 32, 3, 12.5)), (1, 2**64 - 1), rumor=True)
    assert decode_message(encode_message(delta)) == delta


@settings(max_examples=100)
@given(
    st.text(min_size=1, max_size=64),
    st.integers(1, MAX_VERSION),
    st.text(max_size=MAX_TEXT_CHARS),
    st.dictionaries(st.text(max_size=40), st.floats(0, 1e9), max_size=10),
)
def test_any_valid_record_round_trips(node_id: str, version: int, name: str, rates: dict[str, float]) -> None:
    original = record(node_id, version, name=name, request_rate_per_min=rates)
    [payload] = encode_delta([original])
    decoded = decode_message(payload)
    assert isinstance(decoded, Delta) and decoded.items == (original,)


def test_a_big_delta_is_split_under_the_size_cap() -> None:
    rtt = {f"{j:032x}": 1.0 for j in range(60)}
    records = [record(f"{i:032x}", name="n" * 200, rtt_ms=rtt) for i in range(400)]
    payloads = encode_delta(records, want_keys=[7, 8], rumor=True)
    assert len(payloads) > 1
    assert all(len(p) <= MAX_GOSSIP_MESSAGE_BYTES for p in payloads)
    decoded = [decode_message(p) for p in payloads]
    assert all(isinstance(d, Delta) and d.rumor for d in decoded)
    assert [i for d in decoded for i in d.items] == records  # type: ignore[union-attr]
    assert [d.want_keys for d in decoded] == [(7, 8)] + [()] * (len(decoded) - 1)  # type: ignore[union-attr]


def test_a_delta_is_split_by_item_count_too() -> None:
    tombstones = [Tombstone(f"{i:x}", 1, 0.0) for i in range(MAX_ITEMS_PER_MESSAGE + 5)]
    payloads = encode_delta(tombstones)
    assert len(payloads) == 2


def test_a_maximal_record_fits_one_message_and_several_are_split() -> None:
    near_max = record(rtt_ms={f"{j:032x}": 1.5 for j in range(MAX_MAP_ENTRIES_PER_RECORD)})
    assert near_max.ByteSize() <= MAX_RECORD_BYTES
    payloads = encode_delta([near_max] * 10)
    assert len(payloads) >= 2 and all(len(p) <= MAX_GOSSIP_MESSAGE_BYTES for p in payloads)


def test_encoding_over_the_byte_cap_is_our_error() -> None:
    near_max = record(rtt_ms={f"{j:032x}": 1.5 for j in range(MAX_MAP_ENTRIES_PER_RECORD)})
    with pytest.raises(GossipEncodeError, match="bytes"):
        encode_message(Delta((near_max,) * 10))


@pytest.mark.parametrize(
    "message",
    [
        Delta(want_keys=tuple(range(MAX_DIGEST_ENTRIES + 1))),
        Delta(tuple(Tombstone("t", 1, 0.0) for _ in range(MAX_ITEMS_PER_MESSAGE + 1))),
        DigestEntries((0,), {k * NUM_DIGEST_BUCKETS: 1 for k in range(MAX_DIGEST_ENTRIES + 1)}),
    ],
    ids=["wants", "items", "entries"],
)
def test_encoding_over_a_count_limit_is_our_error(message: Delta | DigestEntries) -> None:
    with pytest.raises(GossipEncodeError, match="over"):
        encode_message(message)


# --- hostile input -----------------------------------------------------------------------------------


@settings(max_examples=500)
@given(st.binary(max_size=2048))
def test_random_bytes_only_ever_raise_gossip_decode_error(data: bytes) -> None:
    try:
        decode_message(data)
    except GossipDecodeError:
        pass


@settings(max_examples=300)
@given(st.data())
def test_corrupted_valid_messages_only_ever_raise_gossip_decode_error(data: st.DataObject) -> None:
    payload = bytearray(encode_message(Delta((full_record(), Tombstone("c" * 32, 3, 1.0)), (5,))))
    for _ in range(data.draw(st.integers(1, 8))):
        payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    try:
        decode_message(bytes(payload[:cut]))
    except GossipDecodeError:
        pass


def test_oversized_message_is_rejected_before_parsing() -> None:
    with pytest.raises(GossipDecodeError, match="over"):
        decode_message(b"\x00" * (MAX_GOSSIP_MESSAGE_BYTES + 1))


def test_other_protocol_version_is_rejected() -> None:
    envelope = wire_pb2.GossipEnvelope(protocol_version=WIRE_PROTOCOL_VERSION + 1)
    envelope.summary.bucket_hashes.extend([0] * NUM_DIGEST_BUCKETS)
    with pytest.raises(GossipDecodeError, match="version"):
        decode_message(envelope.SerializeToString())


def test_empty_envelope_is_rejected() -> None:
    with pytest.raises(GossipDecodeError, match="no body"):
        decode_message(wire_pb2.GossipEnvelope(protocol_version=WIRE_PROTOCOL_VERSION).SerializeToString())


def test_summary_with_the_wrong_bucket_count_is_rejected() -> None:
    with pytest.raises(GossipDecodeError, match="buckets"):
        decode_message(encode_message(DigestSummary((1, 2, 3))))


@pytest.mark.parametrize(
    "buckets, keys, ranks",
    [
        ([0], [NUM_DIGEST_BUCKETS], [1, 2]),  # keys and ranks do not pair
        ([NUM_DIGEST_BUCKETS], [NUM_DIGEST_BUCKETS], [1]),  # bucket out of range
        ([0, 0], [NUM_DIGEST_BUCKETS], [1]),  # bucket listed twice
        ([1], [NUM_DIGEST_BUCKETS], [1]),  # key outside the listed buckets
        ([0], [NUM_DIGEST_BUCKETS, NUM_DIGEST_BUCKETS], [1, 2]),  # duplicate key
    ],
)
def test_inconsistent_entries_are_rejected(buckets: list[int], keys: list[int], ranks: list[int]) -> None:
    envelope = wire_pb2.GossipEnvelope(protocol_version=WIRE_PROTOCOL_VERSION)
    envelope.entries.buckets.extend(buckets)
    envelope.entries.keys.extend(keys)
    envelope.entries.ranks.extend(ranks)
    with pytest.raises(GossipDecodeError, match="digest entries"):
        decode_message(envelope.SerializeToString())


def test_too_many_items_in_one_delta_are_rejected() -> None:
    payload = delta_bytes(*[record(f"{i:x}") for i in range(MAX_ITEMS_PER_MESSAGE + 1)])
    with pytest.raises(GossipDecodeError, match="items"):
        decode_message(payload)


@pytest.mark.parametrize(
    "bad",
    [
        record(""),
        record("x" * 65),
        record(version=0),
        record(name="n" * (MAX_TEXT_CHARS + 1)),
        record(addresses=["a"] * (MAX_ADDRESSES_PER_RECORD + 1)),
        record(models_wanted=["m"] * (MAX_MODELS_PER_RECORD + 1)),
        record(models_on_disk=[gossip_pb2.ModelFile(name="m")] * (MAX_MODELS_PER_RECORD + 1)),
        record(models_on_disk=[gossip_pb2.ModelFile(name="m", bytes=-1)]),
        record(served=[gossip_pb2.ServedModel(shares=[gossip_pb2.LayerShare(fraction=1.5)])]),
        record(served=[gossip_pb2.ServedModel(shares=[gossip_pb2.LayerShare(fraction=math.nan)])]),
        record(request_rate_per_min={"m": math.nan}),
        record(request_rate_per_min={"m": -1.0}),
        record(rtt_ms={"p": math.inf}),
        record(rtt_ms={f"{i}": 1.0 for i in range(MAX_MAP_ENTRIES_PER_RECORD + 1)}),
        record(vram_bytes=-5),
        record(updated_unix_s=math.nan),
        record(region="r" * (MAX_RECORD_BYTES + 1)),
    ],
    ids=lambda r: str(r)[:40].replace("\n", " "),
)
def test_records_breaking_a_sanity_limit_are_rejected(bad: gossip_pb2.NodeRecord) -> None:
    with pytest.raises(GossipDecodeError, match="rejected"):
        decode_message(delta_bytes(bad))


@pytest.mark.parametrize(
    "tombstone",
    [
        wire_pb2.Tombstone(node_id="", version=1),
        wire_pb2.Tombstone(node_id=PEER, version=0),
        wire_pb2.Tombstone(node_id=PEER, version=1, died_unix_s=math.nan),
    ],
)
def test_bad_tombstones_are_rejected(tombstone: wire_pb2.Tombstone) -> None:
    with pytest.raises(GossipDecodeError, match="rejected"):
        decode_message(delta_bytes(tombstones=[tombstone]))


def test_unknown_fields_are_dropped_so_they_are_not_regossiped() -> None:
    raw = bytearray(record().SerializeToString())
    raw += bytes([0x9A, 0x06, 3]) + b"xyz"  # field 99 (unknown), length-delimited
    envelope = wire_pb2.GossipEnvelope(protocol_version=WIRE_PROTOCOL_VERSION)
    parsed = gossip_pb2.NodeRecord.FromString(bytes(raw))
    envelope.delta.records.append(parsed)
    decoded = decode_message(envelope.SerializeToString())
    assert isinstance(decoded, Delta)
    assert decoded.items[0].SerializeToString() == record().SerializeToString()  # type: ignore[union-attr]
