"""What the console shows about the mesh: pure builders from the gossip view, routing table and plan.

`/api/status` and the `/api/events` diffs are both made of these frozen dataclasses, so "what changed"
is plain equality between two `MeshSnapshot`s (services/gateway/event_diff.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.gateway.pool_summary import (
    Adoption,
    FileTransfer,
    NodeRole,
    PlanPool,
    PoolEvent,
    PoolModel,
    adoptions,
    local_role,
    pool_models,
    record_role,
    transfers,
)
from services.gateway.routing import ModelEntry, PlannedModel
from services.proto.meshllm.gossip.v1 import gossip_pb2

SHORT_ID_CHARS = 8
RTT_DECIMALS = 1
SHARE_DECIMALS = 3

_ROLE_NAMES = {
    gossip_pb2.MODEL_ROLE_SOLO: "solo",
    gossip_pb2.MODEL_ROLE_SPLIT_HOST: "split_host",
    gossip_pb2.MODEL_ROLE_SPLIT_WORKER: "split_worker",
    gossip_pb2.MODEL_ROLE_STANDBY: "standby",
}
_SERVE_STATE_NAMES = {
    gossip_pb2.SERVE_STATE_LOADING: "loading",
    gossip_pb2.SERVE_STATE_READY: "ready",
    gossip_pb2.SERVE_STATE_WAITING: "waiting",
    gossip_pb2.SERVE_STATE_FAILED: "failed",
}
# A model's mesh-wide state, when no local route decides it, is the best any node reports.
_STATE_PREFERENCE = ("ready", "loading", "waiting", "failed", "unknown")


def short_id(node_id: str) -> str:
    return node_id[:SHORT_ID_CHARS]


@dataclass(frozen=True)
class ServedModel:
    """A model a node serves or helps serve, and how far along it is."""

    model: str
    role: str  # solo, split_host, split_worker, standby
    state: str  # loading, ready, waiting, failed
    layer_share: float = 0.0  # this node's fraction of the layers: 1.0 solo, its share in a split


@dataclass(frozen=True)
class DiskModel:
    name: str
    bytes: int


@dataclass(frozen=True)
class PeerSummary:
    """One node as its gossip record describes it; `rtt_ms` is as this node measured it."""

    node_id: str
    short_id: str
    name: str
    rtt_ms: float
    vram_bytes: int
    is_client: bool
    models_served: tuple[str, ...]  # ready ones only, names
    served: tuple[ServedModel, ...] = ()
    models_on_disk: tuple[DiskModel, ...] = ()
    request_rate_per_min: dict[str, float] = field(default_factory=dict)
    version: str = ""
    # How the mesh reaches it from here: direct, relayed, or unreachable (known from others' gossip
    # only: not routable from this node). Empty for this node itself.
    path: str = ""
    role: str = ""  # client, serving, fetching, standby (services/gateway/pool_summary.py)
    standby: bool = False
    standby_reason: str = ""
    adopted: tuple[Adoption, ...] = ()
    fetching: tuple[FileTransfer, ...] = ()


UNREACHABLE_FROM_HERE = "unreachable"


@dataclass(frozen=True)
class ModelRole:
    """This node's role for a model, as placement decided it, and why."""

    model: str
    role: str  # solo, split_host, split_worker, standby, waiting, does_not_fit
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class ModelPlacement:
    node_id: str
    role: str
    state: str


@dataclass(frozen=True)
class MeshModel:
    """A model somewhere in the mesh: its state from here, who serves it, every node with a role in it."""

    model: str
    state: str  # ready, loading, waiting, does_not_fit, failed, standby, remote, unknown
    nodes: tuple[str, ...]  # the nodes an API request can be routed to
    placements: tuple[ModelPlacement, ...]
    detail: str = ""
    kind: str = "unknown"  # chat, embedding, rerank (routing.ModelKind)
    context_tokens: int = 0


@dataclass(frozen=True)
class MeshSnapshot:
    """Everything the console's live events are differences of."""

    node: PeerSummary
    peers: tuple[PeerSummary, ...]
    roles: tuple[ModelRole, ...]
    models: tuple[MeshModel, ...]
    pool: tuple[PoolModel, ...] = ()
    pool_events: tuple[PoolEvent, ...] = ()


def _layer_share(served: gossip_pb2.ServedModel, node_id: str) -> float:
    if served.role == gossip_pb2.MODEL_ROLE_SOLO:
        return 1.0
    return next((share.fraction for share in served.shares if share.node_id == node_id), 0.0)


def _served(record: gossip_pb2.NodeRecord) -> tuple[ServedModel, ...]:
    return tuple(
        ServedModel(
            s.name,
            _ROLE_NAMES.get(s.role, "unknown"),
            _SERVE_STATE_NAMES.get(s.state, "unknown"),
            round(_layer_share(s, record.node_id), SHARE_DECIMALS),
        )
        for s in record.served
        if s.name
    )


def node_summary(
    record: gossip_pb2.NodeRecord, rtt_ms: float = 0.0, path: str = "", role: NodeRole | None = None
) -> PeerSummary:
    """`role` None: as the record shows it (a peer's)."""
    role = role or record_role(record)
    return PeerSummary(
        node_id=record.node_id,
        short_id=short_id(record.node_id),
        name=record.name,
        rtt_ms=round(rtt_ms, RTT_DECIMALS),
        vram_bytes=record.vram_bytes,
        is_client=record.is_client,
        models_served=tuple(s.name for s in record.served if s.state == gossip_pb2.SERVE_STATE_READY),
        served=_served(record),
        models_on_disk=tuple(DiskModel(m.name, m.bytes) for m in record.models_on_disk),
        request_rate_per_min=dict(sorted(record.request_rate_per_min.items())),
        version=record.software_version,
        path=path,
        role=role.role,
        standby=role.standby,
        standby_reason=role.standby_reason,
        adopted=adoptions(record),
        fetching=transfers(record),
    )


def local_summary(view: gossip_pb2.MeshView, plan: PlanPool, is_client: bool = False) -> PeerSummary:
    """This node, its role as its plan says."""
    record = local_record(view)
    return node_summary(record, role=local_role(record, plan, is_client))


def local_record(view: gossip_pb2.MeshView) -> gossip_pb2.NodeRecord:
    return next((n for n in view.nodes if n.node_id == view.local_node_id), gossip_pb2.NodeRecord())


def peer_summaries(
    view: gossip_pb2.MeshView, paths: Mapping[str, str] | None = None
) -> tuple[PeerSummary, ...]:
    """Every live peer (a node saying goodbye is gone already), sorted by name then id. `paths`: the
    mesh's linked peers and how (None: not known yet)."""
    local = local_record(view)

    def path_of(node_id: str) -> str:
        if paths is None:
            return ""
        return paths.get(node_id, UNREACHABLE_FROM_HERE)

    peers = (
        node_summary(record, local.rtt_ms.get(record.node_id, 0.0), path_of(record.node_id))
        for record in view.nodes
        if record.node_id != view.local_node_id and not record.leaving
    )
    return tuple(sorted(peers, key=lambda p: (p.name, p.node_id)))


def model_roles(plan: Iterable[PlannedModel]) -> tuple[ModelRole, ...]:
    return tuple(sorted((ModelRole(p.model, p.role.value, p.reasons) for p in plan), key=lambda r: r.model))


def _best_state(placements: Iterable[ModelPlacement]) -> str:
    states = {p.state for p in placements}
    return next((s for s in _STATE_PREFERENCE if s in states), "unknown")


def mesh_models(view: gossip_pb2.MeshView, entries: Iterable[ModelEntry]) -> tuple[MeshModel, ...]:
    """The routing table's models plus any a node gossips a role in, each with every node's part."""
    placements: dict[str, list[ModelPlacement]] = {}
    for record in view.nodes:
        if record.leaving:
            continue
        for served in _served(record):
            placements.setdefault(served.model, []).append(
                ModelPlacement(record.node_id, served.role, served.state)
            )
    by_entry = {entry.model: entry for entry in entries}
    models = []
    for model in sorted(by_entry.keys() | placements.keys()):
        parts = tuple(sorted(placements.get(model, ()), key=lambda p: p.node_id))
        entry = by_entry.get(model)
        if entry is not None:
            models.append(
                MeshModel(
                    model,
                    entry.state,
                    entry.nodes,
                    parts,
                    entry.detail,
                    entry.kind.value,
                    entry.context_tokens,
                )
            )
        else:
            ready = tuple(p.node_id for p in parts if p.state == "ready")
            models.append(MeshModel(model, _best_state(parts), ready, parts))
    return tuple(models)


def mesh_snapshot(
    view: gossip_pb2.MeshView,
    entries: Iterable[ModelEntry],
    plan: Iterable[PlannedModel],
    paths: Mapping[str, str] | None = None,
    pool: PlanPool | None = None,
) -> MeshSnapshot:
    pool = pool or PlanPool()
    return MeshSnapshot(
        node=local_summary(view, pool),
        peers=peer_summaries(view, paths),
        roles=model_roles(plan),
        models=mesh_models(view, entries),
        pool=pool_models(pool, view),
        pool_events=pool.events,
    )
