"""NodeSnapshots -> Prometheus text (sans-IO): the same families for one node or the whole mesh.

Every sample carries a `node` label (the node id), so a scrape of one node and a mesh-wide scrape sum
the same way in PromQL. Names follow Prometheus conventions: `meshllm_` prefix, counters `_total`,
units `_seconds` / `_bytes` / `_ratio`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.utils import floatToGoString

from services.gateway.metrics_gossip import gossip_families
from services.gateway.metrics_requests import Histogram
from services.gateway.metrics_snapshot import NodeSnapshot

PREFIX = "meshllm_"
MS_PER_S = 1000.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _histogram_buckets(histogram: Histogram) -> list[tuple[str, float]]:
    edges = [floatToGoString(bound) for bound in histogram.bounds] + ["+Inf"]
    return list(zip(edges, map(float, accumulate(histogram.counts)), strict=True))


def _request_families(nodes: Sequence[NodeSnapshot]) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        PREFIX + "requests",
        "API requests this node's gateway sent upstream, by model, endpoint, HTTP status and where "
        "they were served (here, or forwarded to a peer).",
        labels=["node", "model", "endpoint", "status", "served"],
    )
    in_flight = GaugeMetricFamily(
        PREFIX + "requests_in_flight", "Requests being answered through this gateway now.", labels=["node"]
    )
    tokens_in = CounterMetricFamily(
        PREFIX + "tokens_in",
        "Prompt tokens of answered requests (cached ones included).",
        labels=["node", "model"],
    )
    tokens_out = CounterMetricFamily(
        PREFIX + "tokens_out", "Generated tokens of answered requests.", labels=["node", "model"]
    )
    ttft = HistogramMetricFamily(
        PREFIX + "time_to_first_token_seconds",
        "Time from forwarding a streamed request to its first token, as this gateway saw it.",
        labels=["node", "model"],
    )
    decode = HistogramMetricFamily(
        PREFIX + "decode_tokens_per_second",
        "Decode speed of each answered request (llama-server's own timing when it reports one).",
        labels=["node", "model"],
    )
    for node in nodes:
        counters = node.counters
        in_flight.add_metric([node.node_id], max(0, counters.in_flight))
        for key, count in sorted(counters.requests.items(), key=lambda item: repr(item[0])):
            labels = [node.node_id, key.model, key.endpoint, str(key.status), key.served.value]
            requests.add_metric(labels, count)
        for model, traffic in sorted(counters.traffic.items()):
            tokens_in.add_metric([node.node_id, model], traffic.tokens_in)
            tokens_out.add_metric([node.node_id, model], traffic.tokens_out)
            ttft.add_metric([node.node_id, model], _histogram_buckets(traffic.ttft), traffic.ttft.total)
            decode.add_metric([node.node_id, model], _histogram_buckets(traffic.decode), traffic.decode.total)
    yield from (requests, in_flight, tokens_in, tokens_out, ttft, decode)


def _slot_families(nodes: Sequence[NodeSnapshot]) -> Iterator[Metric]:
    busy = GaugeMetricFamily(
        PREFIX + "slots_busy", "llama-server slots processing a request.", labels=["node", "model"]
    )
    total = GaugeMetricFamily(
        PREFIX + "slots", "llama-server slots (parallel requests).", labels=["node", "model"]
    )
    queued = GaugeMetricFamily(
        PREFIX + "requests_queued",
        "Requests llama-server deferred: all slots busy.",
        labels=["node", "model"],
    )
    drafted = CounterMetricFamily(
        PREFIX + "speculative_draft_tokens",
        "Tokens speculative decoding drafted (n-gram or draft model) since the llama-server started.",
        labels=["node", "model"],
    )
    accepted = CounterMetricFamily(
        PREFIX + "speculative_accepted_tokens",
        "Drafted tokens the model accepted: each one a decode step (and, split, a round trip) saved.",
        labels=["node", "model"],
    )
    for node in nodes:
        for model, slots in sorted(node.counters.slots.items()):
            busy.add_metric([node.node_id, model], slots.busy)
            total.add_metric([node.node_id, model], slots.total)
            queued.add_metric([node.node_id, model], slots.queued)
            drafted.add_metric([node.node_id, model], slots.drafted)
            accepted.add_metric([node.node_id, model], slots.accepted)
    yield from (busy, total, queued, drafted, accepted)


def _model_families(nodes: Sequence[NodeSnapshot]) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        PREFIX + "model_state",
        "1 for each model a node serves, in its current state.",
        labels=["node", "model", "state"],
    )
    role = GaugeMetricFamily(
        PREFIX + "model_role",
        "1 for each model a node serves, in its role.",
        labels=["node", "model", "role"],
    )
    share = GaugeMetricFamily(
        PREFIX + "model_layer_share_ratio",
        "The fraction of a model's layers on this node.",
        labels=["node", "model"],
    )
    for node in nodes:
        for served in node.facts.served:
            state.add_metric([node.node_id, served.model, served.state], 1)
            role.add_metric([node.node_id, served.model, served.role], 1)
            share.add_metric([node.node_id, served.model], served.layer_share)
    yield from (state, role, share)


def _node_families(nodes: Sequence[NodeSnapshot]) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        PREFIX + "node_info", "1 per node, with its name.", labels=["node", "name", "client"]
    )
    peers = GaugeMetricFamily(PREFIX + "peers", "Peers this node measures an RTT to.", labels=["node"])
    rtt = GaugeMetricFamily(
        PREFIX + "peer_rtt_seconds", "Round-trip time to each peer.", labels=["node", "peer"]
    )
    fetch_done = GaugeMetricFamily(
        PREFIX + "file_transfer_done_bytes",
        "Verified bytes of model files being fetched.",
        labels=["node", "model"],
    )
    fetch_size = GaugeMetricFamily(
        PREFIX + "file_transfer_size_bytes", "Sizes of model files being fetched.", labels=["node", "model"]
    )
    transfers = GaugeMetricFamily(
        PREFIX + "file_transfers", "Model files being fetched now.", labels=["node"]
    )
    for node in nodes:
        facts = node.facts
        info.add_metric([node.node_id, facts.name, str(facts.is_client).lower()], 1)
        peers.add_metric([node.node_id], len(facts.peer_rtt_ms))
        for peer, ms in sorted(facts.peer_rtt_ms.items()):
            rtt.add_metric([node.node_id, peer], ms / MS_PER_S)
        transfers.add_metric([node.node_id], len(facts.fetches))
        for fetch in facts.fetches:
            fetch_done.add_metric([node.node_id, fetch.model], fetch.bytes_done)
            fetch_size.add_metric([node.node_id, fetch.model], fetch.bytes_total)
    yield from (info, peers, rtt, transfers, fetch_done, fetch_size)


def _service_families(nodes: Sequence[NodeSnapshot]) -> Iterator[Metric]:
    labels = ["node", "peer", "model"]
    sent = CounterMetricFamily(
        PREFIX + "tunnel_sent_bytes", "RPC tunnel bytes put on the network.", labels=labels
    )
    received = CounterMetricFamily(
        PREFIX + "tunnel_received_bytes", "RPC tunnel bytes from the peer.", labels=labels
    )
    by_reference = CounterMetricFamily(
        PREFIX + "tunnel_weight_by_reference_bytes",
        "Weight uploads the worker read from its own copy of the model instead of the network.",
        labels=labels,
    )
    raw = CounterMetricFamily(
        PREFIX + "tunnel_weight_raw_bytes", "Weight bytes that crossed the network as bytes.", labels=labels
    )
    restarts = CounterMetricFamily(
        PREFIX + "process_restarts",
        "Restarts of the processes a service supervises.",
        labels=["node", "service", "process"],
    )
    pool = CounterMetricFamily(
        PREFIX + "pool_events",
        "Pool events of this node (promoted, retired, loaded, dropped, fetch_failed).",
        labels=["node", "kind"],
    )
    for node in nodes:
        counters = node.counters
        for t in counters.tunnels:
            key = [node.node_id, t.peer, t.model]
            sent.add_metric(key, t.to_peer)
            received.add_metric(key, t.from_peer)
            by_reference.add_metric(key, t.weight_by_reference)
            raw.add_metric(key, t.weight_raw)
        for process, count in sorted(counters.restarts.items(), key=lambda item: repr(item[0])):
            restarts.add_metric([node.node_id, process.service, process.process], count)
        for kind, count in sorted(counters.pool_events.items()):
            pool.add_metric([node.node_id, kind], count)
    yield from (sent, received, by_reference, raw, restarts, pool)


class _Families:
    """What generate_latest reads: anything with collect()."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def families(nodes: Sequence[NodeSnapshot]) -> list[Metric]:
    builders = (
        _request_families,
        _slot_families,
        _model_families,
        _node_families,
        _service_families,
        gossip_families,
    )
    return [family for build in builders for family in build(nodes)]


def render(nodes: Sequence[NodeSnapshot]) -> bytes:
    """The Prometheus text exposition of these nodes."""
    return generate_latest(_Families(families(nodes)))  # type: ignore[arg-type]
