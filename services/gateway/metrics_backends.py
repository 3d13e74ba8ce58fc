"""What the metrics collector reads from the other services, turned into snapshot parts (sans-IO).

llama-server's own `/metrics` (it runs with `--metrics`) gives slot use; the runner's status gives the
restarts of each process it supervises; the mesh's ListTunnels the tunnel bytes; placement's plan the
pool events, which it keeps only a recent list of, so they are counted here as they appear.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from services.gateway.metrics_snapshot import ModelSlots, ProcessKey, TunnelBytes
from services.gateway.pool_summary import PoolEvent
from services.proto.meshllm.mesh.v1 import mesh_pb2
from services.proto.meshllm.runner.v1 import runner_pb2

RUNNER_SERVICE = "runner"
# llama-server's metric names (tools/server/server.cpp; the parser drops the `:` nowhere, so as sent).
LLAMA_REQUESTS_PROCESSING = "llamacpp:requests_processing"
LLAMA_REQUESTS_DEFERRED = "llamacpp:requests_deferred"
LLAMA_DRAFTED = "llamacpp:spec_decode_num_draft_tokens_total"
LLAMA_ACCEPTED = "llamacpp:spec_decode_num_accepted_tokens_total"
_PROCESS_NAMES = {
    runner_pb2.PROCESS_KIND_LLAMA_SERVER: "llama-server",
    runner_pb2.PROCESS_KIND_RPC_SERVER: "rpc-server",
}


class BadBackendMetrics(ValueError):
    """llama-server's /metrics answer is not Prometheus text or lacks the slot gauges."""


def slots_from_llama_metrics(text: str, total_slots: int) -> ModelSlots:
    """Busy and queued requests and drafted/accepted tokens from llama-server's `/metrics` text;
    `total_slots` from its /props."""
    values: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[sample.name] = sample.value
    except ValueError as exc:
        raise BadBackendMetrics(f"not Prometheus text: {exc}") from exc
    if LLAMA_REQUESTS_PROCESSING not in values:
        raise BadBackendMetrics(f"no {LLAMA_REQUESTS_PROCESSING} in llama-server's /metrics")
    busy = int(values[LLAMA_REQUESTS_PROCESSING])
    return ModelSlots(
        busy,
        max(total_slots, busy),
        int(values.get(LLAMA_REQUESTS_DEFERRED, 0)),
        int(values.get(LLAMA_DRAFTED, 0)),
        int(values.get(LLAMA_ACCEPTED, 0)),
    )


@dataclass(frozen=True)
class BackendServer:
    """A llama-server to scrape."""

    model: str
    host: str
    port: int
    api_key: str = field(repr=False)
    pid: int = 0


def servers_to_scrape(status: runner_pb2.RunnerStatus) -> tuple[BackendServer, ...]:
    return tuple(
        BackendServer(p.spec.model, p.host, p.port, p.api_key, p.pid)
        for p in status.processes
        if p.spec.kind == runner_pb2.PROCESS_KIND_LLAMA_SERVER
        and p.state == runner_pb2.PROCESS_STATE_READY
        and p.port
        and p.spec.model
    )


def runner_restarts(status: runner_pb2.RunnerStatus) -> dict[ProcessKey, int]:
    restarts: dict[ProcessKey, int] = {}
    for process in status.processes:
        name = process.spec.key or f"{_PROCESS_NAMES.get(process.spec.kind, 'process')}/{process.spec.model}"
        key = ProcessKey(RUNNER_SERVICE, name)
        restarts[key] = restarts.get(key, 0) + process.restarts
    return restarts


def tunnel_bytes(response: mesh_pb2.ListTunnelsResponse) -> tuple[TunnelBytes, ...]:
    return tuple(
        TunnelBytes(
            t.peer_node_id,
            t.model,
            t.bytes_to_peer,
            t.bytes_from_peer,
            t.weight_bytes_by_reference,
            t.weight_bytes_raw,
        )
        for t in response.tunnels
    )


@dataclass
class PoolEventCounter:
    """Counts pool events by kind as they appear in successive plans (which keep a recent list)."""

    counts: dict[str, int] = field(default_factory=dict)
    _seen: frozenset[tuple[float, str, str]] = frozenset()

    def update(self, events: Iterable[PoolEvent]) -> None:
        current = frozenset((e.at_unix_s, e.model, e.kind) for e in events)
        for _, _, kind in current - self._seen:
            self.counts[kind] = self.counts.get(kind, 0) + 1
        self._seen = current
