"""Gossip traffic in `/metrics` (sans-IO): GetStats and gossiped summaries in, Prometheus families out.

The gossip service counts every payload it hands to the mesh or takes from it, by message kind
(services/gossip/traffic.py); the collector reads them with GetStats on its refresh, never per scrape.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, Metric

from services.gateway.metrics_snapshot import GossipKindBytes, NodeSnapshot
from services.gossip.record_limits import MAX_METRICS_ENTRIES
from services.proto.meshllm.gossip.v1 import gossip_pb2

PREFIX = "meshllm_"  # metrics_families.PREFIX (which imports this module)


def gossip_traffic(kinds: Iterable[gossip_pb2.GossipKindTraffic]) -> tuple[GossipKindBytes, ...]:
    """From GetStats, or from a peer's summary (already capped by the record limits)."""
    return tuple(
        GossipKindBytes(k.kind, k.sent_bytes, k.sent_messages, k.received_bytes, k.received_messages)
        for k in kinds
    )


def gossip_protos(traffic: Sequence[GossipKindBytes]) -> list[gossip_pb2.GossipKindTraffic]:
    return [
        gossip_pb2.GossipKindTraffic(
            kind=t.kind,
            sent_bytes=t.sent_bytes,
            sent_messages=t.sent_messages,
            received_bytes=t.received_bytes,
            received_messages=t.received_messages,
        )
        for t in traffic[:MAX_METRICS_ENTRIES]
    ]


def only_gossip_differs(summary: gossip_pb2.MetricsSummary, published: gossip_pb2.MetricsSummary) -> bool:
    """True when the summaries differ in their gossip counters alone. Gossip counters move every round
    even in an idle mesh: alone, they must not make a new record version every publish interval."""
    if summary == published:
        return False
    bare, bare_published = gossip_pb2.MetricsSummary(), gossip_pb2.MetricsSummary()
    bare.CopyFrom(summary)
    bare_published.CopyFrom(published)
    bare.ClearField("gossip")
    bare_published.ClearField("gossip")
    return bare == bare_published


def gossip_families(nodes: Sequence[NodeSnapshot]) -> Iterator[Metric]:
    labels = ["node", "kind"]
    sent_bytes = CounterMetricFamily(
        PREFIX + "gossip_sent_bytes",
        "Gossip payload bytes this node handed to the mesh, by message kind.",
        labels=labels,
    )
    received_bytes = CounterMetricFamily(
        PREFIX + "gossip_received_bytes",
        "Gossip payload bytes this node received from peers, by message kind (malformed: did not decode).",
        labels=labels,
    )
    sent_messages = CounterMetricFamily(
        PREFIX + "gossip_sent_messages", "Gossip payloads this node handed to the mesh.", labels=labels
    )
    received_messages = CounterMetricFamily(
        PREFIX + "gossip_received_messages", "Gossip payloads this node received.", labels=labels
    )
    for node in nodes:
        for t in node.counters.gossip:
            key = [node.node_id, t.kind]
            sent_bytes.add_metric(key, t.sent_bytes)
            received_bytes.add_metric(key, t.received_bytes)
            sent_messages.add_metric(key, t.sent_messages)
            received_messages.add_metric(key, t.received_messages)
    yield from (sent_bytes, received_bytes, sent_messages, received_messages)
