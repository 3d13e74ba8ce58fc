"""NodeCounters <-> the gossiped MetricsSummary (services/gateway/metrics_summary.py)."""

from __future__ import annotations

import pytest

from services.gateway.metrics_requests import (
    ModelTraffic,
    RequestKey,
    Served,
    decode_histogram,
    ttft_histogram,
)
from services.gateway.metrics_snapshot import ModelSlots, NodeCounters, ProcessKey, TunnelBytes
from services.gateway.metrics_summary import counters_of, summary_of
from services.gossip.record_limits import MAX_METRICS_ENTRIES, InvalidRecord, check_record
from services.proto.meshllm.gossip.v1 import gossip_pb2


def counters() -> NodeCounters:
    ttft, decode = ttft_histogram(), decode_histogram()
    ttft.observe(0.2)
    decode.observe(30.0)
    return NodeCounters(
        requests={
            RequestKey("gemma", "/v1/chat/completions", 200, Served.HERE): 3,
            RequestKey("gemma", "/v1/chat/completions", 503, Served.FORWARDED): 1,
        },
        traffic={"gemma": ModelTraffic(10, 20, ttft, decode)},
        in_flight=1,
        slots={"gemma": ModelSlots(1, 4, 0, drafted=128, accepted=71)},
        tunnels=(TunnelBytes("p", "big", 1, 2, 3, 4),),
        restarts={ProcessKey("runner", "llama-server/gemma"): 1},
        pool_events={"promoted": 2},
    )


def test_a_summary_carries_the_counters_unchanged() -> None:
    original = counters()
    summary = gossip_pb2.MetricsSummary.FromString(summary_of(original).SerializeToString())
    assert counters_of(summary) == original


def test_a_summary_passes_the_record_limits_and_stays_small() -> None:
    summary = summary_of(counters())
    check_record(gossip_pb2.NodeRecord(node_id="n", version=1, metrics=summary))
    assert summary.ByteSize() < 512


def test_only_the_busiest_requests_are_kept_when_there_are_too_many() -> None:
    many = {
        RequestKey(f"m{i}", "/v1/completions", 200, Served.HERE): i for i in range(MAX_METRICS_ENTRIES + 50)
    }
    summary = summary_of(NodeCounters(requests=many))
    assert len(summary.requests) == MAX_METRICS_ENTRIES
    assert min(r.count for r in summary.requests) == 50


def test_histograms_of_another_bucket_layout_are_dropped() -> None:
    summary = summary_of(counters())
    summary.models[0].ttft_seconds.counts.append(7)
    assert counters_of(summary).traffic["gemma"].ttft.count == 0
    assert counters_of(summary).traffic["gemma"].decode.count == 1


def test_a_poisoned_summary_is_rejected() -> None:
    summary = summary_of(counters())
    summary.models[0].ttft_seconds.sum = float("nan")
    with pytest.raises(InvalidRecord, match="histogram sum"):
        check_record(gossip_pb2.NodeRecord(node_id="n", version=1, metrics=summary))
    summary = gossip_pb2.MetricsSummary(requests=[gossip_pb2.RequestCount(model="x" * 1000)])
    with pytest.raises(InvalidRecord, match="metrics text"):
        check_record(gossip_pb2.NodeRecord(node_id="n", version=1, metrics=summary))
