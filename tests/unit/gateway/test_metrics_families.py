"""Snapshots -> Prometheus text, read back with prometheus_client's own parser (metrics_families.py)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from services.gateway.metrics_families import render
from services.gateway.metrics_requests import RequestKey, RequestMetrics, Served
from services.gateway.metrics_snapshot import (
    FileFetch,
    ModelSlots,
    NodeCounters,
    NodeSnapshot,
    ProcessKey,
    RecordFacts,
    ServedFacts,
    TunnelBytes,
    record_facts,
)
from services.proto.meshllm.gossip.v1 import gossip_pb2


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(found: dict, family: str, **labels: str) -> float:
    return found[(family, frozenset(labels.items()))]


def snapshot(node_id: str = "n1") -> NodeSnapshot:
    metrics = RequestMetrics(clock=lambda: 0.0)
    observation = metrics.begin("gemma", "/v1/chat/completions", Served.HERE)
    observation.response(200)
    observation.chunk(b'data: {"timings":{"prompt_n":7,"predicted_n":3,"predicted_per_second":12.5}}')
    observation.finish()
    counters = NodeCounters(
        requests=metrics.requests,
        traffic=metrics.traffic,
        in_flight=2,
        slots={"gemma": ModelSlots(1, 4, 3, drafted=64, accepted=40)},
        tunnels=(TunnelBytes("peer", "big", 10, 20, 30, 40),),
        restarts={ProcessKey("runner", "llama-server/gemma"): 2},
        pool_events={"promoted": 1},
    )
    facts = RecordFacts(
        "box",
        False,
        (ServedFacts("gemma", "ready", "split_host", 0.25),),
        {"peer": 12.0},
        (FileFetch("big", 5, 100),),
    )
    return NodeSnapshot(node_id, facts, counters)


def test_every_family_reads_back_with_the_node_label() -> None:
    found = samples(render([snapshot()]))
    chat = {"node": "n1", "model": "gemma"}
    assert (
        value(
            found,
            "meshllm_requests_total",
            endpoint="/v1/chat/completions",
            status="200",
            served="here",
            **chat,
        )
        == 1
    )
    assert value(found, "meshllm_tokens_in_total", **chat) == 7
    assert value(found, "meshllm_tokens_out_total", **chat) == 3
    assert value(found, "meshllm_decode_tokens_per_second_count", **chat) == 1
    assert value(found, "meshllm_decode_tokens_per_second_bucket", le="20.0", **chat) == 1
    assert value(found, "meshllm_decode_tokens_per_second_bucket", le="10.0", **chat) == 0
    assert value(found, "meshllm_time_to_first_token_seconds_count", **chat) == 1
    assert value(found, "meshllm_requests_in_flight", node="n1") == 2
    assert value(found, "meshllm_slots_busy", **chat) == 1
    assert value(found, "meshllm_slots", **chat) == 4
    assert value(found, "meshllm_requests_queued", **chat) == 3
    assert value(found, "meshllm_speculative_draft_tokens_total", **chat) == 64
    assert value(found, "meshllm_speculative_accepted_tokens_total", **chat) == 40
    assert value(found, "meshllm_model_state", state="ready", **chat) == 1
    assert value(found, "meshllm_model_role", role="split_host", **chat) == 1
    assert value(found, "meshllm_model_layer_share_ratio", **chat) == 0.25
    assert value(found, "meshllm_peers", node="n1") == 1
    assert value(found, "meshllm_peer_rtt_seconds", node="n1", peer="peer") == 0.012
    assert value(found, "meshllm_file_transfer_done_bytes", node="n1", model="big") == 5
    tunnel = {"node": "n1", "peer": "peer", "model": "big"}
    assert value(found, "meshllm_tunnel_sent_bytes_total", **tunnel) == 10
    assert value(found, "meshllm_tunnel_weight_by_reference_bytes_total", **tunnel) == 30
    restart = {"node": "n1", "service": "runner", "process": "llama-server/gemma"}
    assert value(found, "meshllm_process_restarts_total", **restart) == 2
    assert value(found, "meshllm_pool_events_total", node="n1", kind="promoted") == 1
    assert value(found, "meshllm_node_info", node="n1", name="box", client="false") == 1


def test_two_nodes_render_as_one_family_each() -> None:
    text = render([snapshot("n1"), snapshot("n2")])
    names = [family.name for family in text_string_to_metric_families(text.decode())]
    assert len(names) == len(set(names))
    found = samples(text)
    for node in ("n1", "n2"):
        assert value(found, "meshllm_requests_in_flight", node=node) == 2


def test_an_empty_node_still_renders() -> None:
    found = samples(render([NodeSnapshot("", RecordFacts(), NodeCounters())]))
    assert value(found, "meshllm_requests_in_flight", node="") == 0


def test_record_facts_take_this_nodes_share_of_a_split() -> None:
    record = gossip_pb2.NodeRecord(
        node_id="w",
        served=[
            gossip_pb2.ServedModel(
                name="big",
                role=gossip_pb2.MODEL_ROLE_SPLIT_WORKER,
                state=gossip_pb2.SERVE_STATE_READY,
                shares=[
                    gossip_pb2.LayerShare(node_id="h", fraction=0.6),
                    gossip_pb2.LayerShare(node_id="w", fraction=0.4),
                ],
            ),
            gossip_pb2.ServedModel(
                name="small", role=gossip_pb2.MODEL_ROLE_SOLO, state=gossip_pb2.SERVE_STATE_LOADING
            ),
        ],
        rtt_ms={"h": 3.0},
    )
    facts = record_facts(record)
    assert facts.served == (
        ServedFacts("big", "ready", "split_worker", 0.4),
        ServedFacts("small", "loading", "solo", 1.0),
    )
    assert dict(facts.peer_rtt_ms) == {"h": 3.0}
    assert RequestKey  # imported for the label names above
