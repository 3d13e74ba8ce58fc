"""Gossip traffic counting (services/gossip/traffic.py) and the kinds the protocol tags payloads with."""

from __future__ import annotations

import random

import pytest

from services.gossip.dissemination import GossipProtocol, Outgoing
from services.gossip.state import GossipState
from services.gossip.traffic import KIND_MALFORMED, TRAFFIC_KINDS, GossipTraffic, UnknownKind
from services.gossip.wire import (
    KIND_DELTA,
    KIND_ENTRIES,
    KIND_RUMOR,
    KIND_SUMMARY,
    decode_message,
    message_kind,
)
from services.proto.meshllm.gossip.v1 import gossip_pb2

T0 = 1_000.0


def node_id(i: int) -> str:
    return f"{i:032x}"


def record(i: int, version: int = 1) -> gossip_pb2.NodeRecord:
    return gossip_pb2.NodeRecord(node_id=node_id(i), name=f"n{i}", version=version)


def test_counts_start_at_zero_for_every_kind_and_add_up_per_payload() -> None:
    traffic = GossipTraffic()
    assert [k.kind for k in traffic.stats().kinds] == list(TRAFFIC_KINDS)
    assert all(k.sent_bytes == k.received_messages == 0 for k in traffic.stats().kinds)
    traffic.sent(KIND_SUMMARY, 500)
    traffic.sent(KIND_SUMMARY, 520)
    traffic.received(KIND_RUMOR, 300)
    traffic.received(KIND_MALFORMED, 7)
    by_kind = {k.kind: k for k in traffic.stats().kinds}
    assert (by_kind[KIND_SUMMARY].sent_bytes, by_kind[KIND_SUMMARY].sent_messages) == (1020, 2)
    assert by_kind[KIND_SUMMARY].received_messages == 0
    assert (by_kind[KIND_RUMOR].received_bytes, by_kind[KIND_RUMOR].received_messages) == (300, 1)
    assert by_kind[KIND_MALFORMED].received_bytes == 7
    assert traffic.of(KIND_DELTA).sent_messages == 0


def test_a_copy_of_the_counters_does_not_move_with_them() -> None:
    traffic = GossipTraffic()
    before = traffic.of(KIND_DELTA)
    traffic.sent(KIND_DELTA, 10)
    assert before.sent_bytes == 0 and traffic.of(KIND_DELTA).sent_bytes == 10


def test_an_unknown_kind_is_a_typed_error() -> None:
    with pytest.raises(UnknownKind, match="'gossip-ish'"):
        GossipTraffic().sent("gossip-ish", 1)


def test_every_payload_the_protocol_sends_is_tagged_with_what_it_decodes_to() -> None:
    """A 6-node mesh where node 0 changed its record and node 5 is new: run rounds until it settles
    and check every payload's kind against its own bytes; each kind is seen, and what a receiver
    reports as the kind matches what the sender tagged."""
    nodes = {}
    for i in range(6):
        state = GossipState(record(i), T0)
        state.merge([record(j) for j in range(5) if j != i], None, T0)
        nodes[node_id(i)] = GossipProtocol(state, random.Random(i))
    peers = list(nodes)
    queue: list[tuple[str, Outgoing]] = []
    changed = gossip_pb2.NodeRecord(node_id=node_id(0), name="renamed", version=1)
    queue += [(node_id(0), out) for out in nodes[node_id(0)].on_local_change(changed, T0, peers)]
    queue += [(node_id(5), out) for out in nodes[node_id(5)].announce(peers)]
    seen: set[str] = set()
    for round_number in range(5):
        for sender, protocol in nodes.items():
            queue += [(sender, out) for out in protocol.on_round(T0 + round_number, peers)]
        while queue:
            sender, out = queue.pop(0)
            assert out.kind == message_kind(decode_message(out.payload))
            seen.add(out.kind)
            reaction = nodes[out.peer_id].receive(sender, out.payload, T0 + round_number, peers)
            assert reaction.kind == out.kind
            queue += [(out.peer_id, reply) for reply in reaction.outgoing]
    assert seen == {KIND_SUMMARY, KIND_ENTRIES, KIND_DELTA, KIND_RUMOR}
