"""One node's metrics as plain data (sans-IO): what `/metrics` renders, for this node or any peer.

A snapshot has two halves. `RecordFacts` come from a node's gossip record, which every node holds
for every other (served models, roles, layer shares, RTTs, file transfers). `NodeCounters` are the
gateway's own counters: live for this node, the last published MetricsSummary for a peer
(services/gateway/metrics_summary.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.gateway.metrics_requests import ModelTraffic, RequestKey
from services.proto.meshllm.gossip.v1 import gossip_pb2

_ROLES = {
    gossip_pb2.MODEL_ROLE_SOLO: "solo",
    gossip_pb2.MODEL_ROLE_SPLIT_HOST: "split_host",
    gossip_pb2.MODEL_ROLE_SPLIT_WORKER: "split_worker",
    gossip_pb2.MODEL_ROLE_STANDBY: "standby",
}
_STATES = {
    gossip_pb2.SERVE_STATE_LOADING: "loading",
    gossip_pb2.SERVE_STATE_READY: "ready",
    gossip_pb2.SERVE_STATE_WAITING: "waiting",
    gossip_pb2.SERVE_STATE_FAILED: "failed",
}
UNKNOWN = "unknown"


@dataclass(frozen=True)
class ServedFacts:
    model: str
    state: str
    role: str
    layer_share: float  # this node's fraction of the model's layers (1.0 solo)


@dataclass(frozen=True)
class FileFetch:
    model: str
    bytes_done: int
    bytes_total: int


@dataclass(frozen=True)
class RecordFacts:
    """What a node's gossip record says about it."""

    name: str = ""
    is_client: bool = False
    served: tuple[ServedFacts, ...] = ()
    peer_rtt_ms: Mapping[str, float] = field(default_factory=dict)
    fetches: tuple[FileFetch, ...] = ()


@dataclass(frozen=True)
class ModelSlots:
    """A llama-server's slots and speculation counters, from its own /metrics."""

    busy: int
    total: int
    queued: int
    # Speculative decoding since the llama-server started: tokens drafted, and of them accepted.
    drafted: int = 0
    accepted: int = 0


@dataclass(frozen=True)
class TunnelBytes:
    """One RPC tunnel's traffic (mesh.proto TunnelStats)."""

    peer: str
    model: str
    to_peer: int
    from_peer: int
    weight_by_reference: int
    weight_raw: int


@dataclass(frozen=True)
class GossipKindBytes:
    """The gossip service's traffic of one message kind (gossip.proto GossipKindTraffic)."""

    kind: str
    sent_bytes: int
    sent_messages: int
    received_bytes: int
    received_messages: int


@dataclass(frozen=True)
class ProcessKey:
    service: str
    process: str


@dataclass(frozen=True)
class NodeCounters:
    """The gateway's counters and what its collector last read from the other services."""

    requests: Mapping[RequestKey, int] = field(default_factory=dict)
    traffic: Mapping[str, ModelTraffic] = field(default_factory=dict)
    in_flight: int = 0
    slots: Mapping[str, ModelSlots] = field(default_factory=dict)
    tunnels: tuple[TunnelBytes, ...] = ()
    restarts: Mapping[ProcessKey, int] = field(default_factory=dict)
    pool_events: Mapping[str, int] = field(default_factory=dict)
    gossip: tuple[GossipKindBytes, ...] = ()


@dataclass(frozen=True)
class NodeSnapshot:
    node_id: str
    facts: RecordFacts
    counters: NodeCounters


def _layer_share(node_id: str, served: gossip_pb2.ServedModel) -> float:
    if not served.shares:
        return 1.0 if served.role == gossip_pb2.MODEL_ROLE_SOLO else 0.0
    return sum(share.fraction for share in served.shares if share.node_id == node_id)


def record_facts(record: gossip_pb2.NodeRecord) -> RecordFacts:
    served = tuple(
        ServedFacts(
            s.name,
            _STATES.get(s.state, UNKNOWN),
            _ROLES.get(s.role, UNKNOWN),
            _layer_share(record.node_id, s),
        )
        for s in record.served
    )
    fetches = tuple(FileFetch(f.name, f.bytes_done, f.bytes_total) for f in record.fetching)
    return RecordFacts(record.name, record.is_client, served, dict(record.rtt_ms), fetches)
