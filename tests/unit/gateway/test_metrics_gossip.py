"""Gossip traffic in `/metrics` (services/gateway/metrics_gossip.py): families, the gossiped summary,
and the rule that gossip counters alone do not republish."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.metrics_families import render
from services.gateway.metrics_gossip import gossip_traffic, only_gossip_differs
from services.gateway.metrics_snapshot import GossipKindBytes, NodeCounters, NodeSnapshot, RecordFacts
from services.gateway.metrics_summary import counters_of, summary_of
from services.gossip.record_limits import InvalidRecord, check_record
from services.gossip.traffic import KIND_MALFORMED, GossipTraffic
from services.gossip.wire import KIND_RUMOR, KIND_SUMMARY
from services.proto.meshllm.gossip.v1 import gossip_pb2


def service_stats() -> gossip_pb2.GossipStats:
    """What the gossip service's GetStats answers after some traffic."""
    traffic = GossipTraffic()
    traffic.sent(KIND_SUMMARY, 600)
    traffic.sent(KIND_SUMMARY, 610)
    traffic.received(KIND_RUMOR, 1500)
    traffic.received(KIND_MALFORMED, 9)
    return traffic.stats()


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def test_gossip_counters_render_as_prometheus_counters_by_node_and_kind() -> None:
    counters = NodeCounters(gossip=gossip_traffic(service_stats().kinds))
    found = samples(render([NodeSnapshot("n1", RecordFacts(), counters)]))

    def value(family: str, kind: str) -> float:
        return found[(family, frozenset({"node": "n1", "kind": kind}.items()))]

    assert value("meshllm_gossip_sent_bytes_total", KIND_SUMMARY) == 1210
    assert value("meshllm_gossip_sent_messages_total", KIND_SUMMARY) == 2
    assert value("meshllm_gossip_received_bytes_total", KIND_RUMOR) == 1500
    assert value("meshllm_gossip_received_messages_total", KIND_RUMOR) == 1
    assert value("meshllm_gossip_received_bytes_total", KIND_MALFORMED) == 9
    assert value("meshllm_gossip_sent_bytes_total", KIND_RUMOR) == 0  # every kind is there from the start


def test_the_summary_carries_gossip_counters_within_the_record_limits() -> None:
    counters = NodeCounters(gossip=gossip_traffic(service_stats().kinds))
    summary = gossip_pb2.MetricsSummary.FromString(summary_of(counters).SerializeToString())
    assert counters_of(summary).gossip == counters.gossip
    check_record(gossip_pb2.NodeRecord(node_id="n", version=1, metrics=summary))
    assert summary.ByteSize() < 128  # five kinds, a few varints each


def test_a_peer_cannot_gossip_a_huge_kind_name() -> None:
    summary = gossip_pb2.MetricsSummary(gossip=[gossip_pb2.GossipKindTraffic(kind="k" * 1000)])
    with pytest.raises(InvalidRecord, match="metrics text"):
        check_record(gossip_pb2.NodeRecord(node_id="n", version=1, metrics=summary))


def test_only_gossip_counters_moving_is_told_apart_from_other_changes() -> None:
    published = summary_of(NodeCounters(in_flight=1, gossip=(GossipKindBytes(KIND_SUMMARY, 1, 1, 0, 0),)))
    same = summary_of(NodeCounters(in_flight=1, gossip=(GossipKindBytes(KIND_SUMMARY, 1, 1, 0, 0),)))
    gossip_moved = summary_of(NodeCounters(in_flight=1, gossip=(GossipKindBytes(KIND_SUMMARY, 9, 2, 0, 0),)))
    both_moved = summary_of(NodeCounters(in_flight=2, gossip=(GossipKindBytes(KIND_SUMMARY, 9, 2, 0, 0),)))
    assert not only_gossip_differs(same, published)
    assert only_gossip_differs(gossip_moved, published)
    assert not only_gossip_differs(both_moved, published)
    assert published.gossip[0].sent_bytes == 1  # the comparison leaves both summaries as they were
