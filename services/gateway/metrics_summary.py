"""NodeCounters <-> gossip MetricsSummary (sans-IO): how `/metrics?scope=mesh` learns a peer's counters.

The summary is bounded (record_limits.MAX_METRICS_ENTRIES per list): the busiest entries are kept
when there are more, so one node with many models never makes its record too big to gossip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from services.gateway.metrics_gossip import gossip_protos, gossip_traffic
from services.gateway.metrics_requests import (
    Histogram,
    ModelTraffic,
    RequestKey,
    Served,
    decode_histogram,
    ttft_histogram,
)
from services.gateway.metrics_snapshot import ModelSlots, NodeCounters, ProcessKey, TunnelBytes
from services.gossip.record_limits import MAX_METRICS_ENTRIES
from services.proto.meshllm.gossip.v1 import gossip_pb2

_T = TypeVar("_T")


def _busiest(items: Iterable[_T], weight: Callable[[_T], int]) -> list[_T]:
    return sorted(items, key=weight, reverse=True)[:MAX_METRICS_ENTRIES]


def _histogram_proto(histogram: Histogram) -> gossip_pb2.HistogramCounts:
    return gossip_pb2.HistogramCounts(counts=histogram.counts, sum=histogram.total)


def _histogram(counts: gossip_pb2.HistogramCounts, empty: Histogram) -> Histogram:
    """A peer's histogram, or an empty one when its buckets are not ours (another version)."""
    if len(counts.counts) != len(empty.counts):
        return empty
    return Histogram(empty.bounds, list(counts.counts), counts.sum)


def _model_names(counters: NodeCounters) -> list[str]:
    return sorted(counters.traffic.keys() | counters.slots.keys())


def summary_of(counters: NodeCounters) -> gossip_pb2.MetricsSummary:
    requests = [
        gossip_pb2.RequestCount(
            model=key.model,
            endpoint=key.endpoint,
            status=key.status,
            forwarded=key.served is Served.FORWARDED,
            count=count,
        )
        for key, count in _busiest(counters.requests.items(), lambda item: item[1])
    ]
    tunnels = [
        gossip_pb2.TunnelTraffic(
            peer_node_id=t.peer,
            model=t.model,
            bytes_to_peer=t.to_peer,
            bytes_from_peer=t.from_peer,
            weight_bytes_by_reference=t.weight_by_reference,
            weight_bytes_raw=t.weight_raw,
        )
        for t in _busiest(counters.tunnels, lambda t: t.to_peer + t.from_peer)
    ]
    restarts = [
        gossip_pb2.ProcessRestarts(service=key.service, process=key.process, restarts=count)
        for key, count in _busiest(counters.restarts.items(), lambda item: item[1])
    ]
    events = [
        gossip_pb2.PoolEventCount(kind=kind, count=n) for kind, n in sorted(counters.pool_events.items())
    ]
    return gossip_pb2.MetricsSummary(
        requests=requests,
        models=_model_protos(counters),
        tunnels=tunnels,
        restarts=restarts,
        requests_in_flight=max(0, counters.in_flight),
        pool_events=events[:MAX_METRICS_ENTRIES],
        gossip=gossip_protos(counters.gossip),
    )


def _model_protos(counters: NodeCounters) -> list[gossip_pb2.ModelTraffic]:
    models = []
    for name in _model_names(counters)[:MAX_METRICS_ENTRIES]:
        traffic = counters.traffic.get(name, ModelTraffic())
        slots = counters.slots.get(name, ModelSlots(0, 0, 0))
        models.append(
            gossip_pb2.ModelTraffic(
                model=name,
                tokens_in=traffic.tokens_in,
                tokens_out=traffic.tokens_out,
                ttft_seconds=_histogram_proto(traffic.ttft),
                decode_tokens_per_second=_histogram_proto(traffic.decode),
                slots_busy=slots.busy,
                slots_total=slots.total,
                requests_queued=slots.queued,
                draft_tokens=slots.drafted,
                accepted_draft_tokens=slots.accepted,
            )
        )
    return models


def _traffic(models: Sequence[gossip_pb2.ModelTraffic]) -> dict[str, ModelTraffic]:
    return {
        m.model: ModelTraffic(
            m.tokens_in,
            m.tokens_out,
            _histogram(m.ttft_seconds, ttft_histogram()),
            _histogram(m.decode_tokens_per_second, decode_histogram()),
        )
        for m in models
    }


def counters_of(summary: gossip_pb2.MetricsSummary) -> NodeCounters:
    requests = {
        RequestKey(r.model, r.endpoint, r.status, Served.FORWARDED if r.forwarded else Served.HERE): r.count
        for r in summary.requests
    }
    slots = {
        m.model: ModelSlots(
            m.slots_busy, m.slots_total, m.requests_queued, m.draft_tokens, m.accepted_draft_tokens
        )
        for m in summary.models
        if m.slots_total
    }
    tunnels = tuple(
        TunnelBytes(
            t.peer_node_id,
            t.model,
            t.bytes_to_peer,
            t.bytes_from_peer,
            t.weight_bytes_by_reference,
            t.weight_bytes_raw,
        )
        for t in summary.tunnels
    )
    return NodeCounters(
        requests=requests,
        traffic=_traffic(summary.models),
        in_flight=summary.requests_in_flight,
        slots=slots,
        tunnels=tunnels,
        restarts={ProcessKey(r.service, r.process): r.restarts for r in summary.restarts},
        pool_events={e.kind: e.count for e in summary.pool_events},
        gossip=gossip_traffic(summary.gossip),
    )
