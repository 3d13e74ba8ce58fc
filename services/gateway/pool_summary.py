"""The self-organizing pool as the console shows it: pure builders from gossip records and the plan.

Each node's role (serving, standby and why, fetching, client), the models it took up (adoptions), the
model files it is fetching, and mesh-wide the plan's pool per model and this node's pool events.
The plan speaks for the local node; a peer's role is read off its record (a standby serves nothing
and is not a client), since only its own placement knows its reasons.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.proto.meshllm.gossip.v1 import gossip_pb2
from services.proto.meshllm.placement.v1 import placement_pb2

ROLE_CLIENT = "client"
ROLE_SERVING = "serving"  # serves or helps serve a model (loading included)
ROLE_FETCHING = "fetching"  # took a model up; its file is coming from peers
ROLE_STANDBY = "standby"  # serves nothing: waits for the mesh to need it
STANDBY_REASON = "serves nothing until the mesh needs it"
RATE_DECIMALS = 2
ETA_DECIMALS = 1

_GOSSIP_SERVING_ROLES = (
    gossip_pb2.MODEL_ROLE_SOLO,
    gossip_pb2.MODEL_ROLE_SPLIT_HOST,
    gossip_pb2.MODEL_ROLE_SPLIT_WORKER,
)
_ROUTABLE_ROLES = (gossip_pb2.MODEL_ROLE_SOLO, gossip_pb2.MODEL_ROLE_SPLIT_HOST)
_PLAN_SERVING_ROLES = (
    placement_pb2.ASSIGNMENT_ROLE_SOLO,
    placement_pb2.ASSIGNMENT_ROLE_SPLIT_HOST,
    placement_pb2.ASSIGNMENT_ROLE_SPLIT_WORKER,
)


@dataclass(frozen=True)
class Adoption:
    """A model a node took up beyond what it was started with (gossip.proto Adoption)."""

    model: str
    reason: str
    since_unix_s: float
    by_hand: bool
    for_loss: bool


@dataclass(frozen=True)
class FileTransfer:
    """A model file a node is fetching from peers; `eta_s` None while no rate is known."""

    name: str
    sha256: str
    bytes_total: int
    bytes_done: int
    bytes_per_s: float
    eta_s: float | None
    source_node_ids: tuple[str, ...]
    error: str = ""


@dataclass(frozen=True)
class NodeRole:
    role: str  # client, serving, fetching, standby
    standby_reason: str = ""

    @property
    def standby(self) -> bool:
        return self.role == ROLE_STANDBY


@dataclass(frozen=True)
class PoolModel:
    """One model mesh-wide: who serves it, who could take it up, and its demand."""

    model: str
    servers: tuple[str, ...]
    candidates: tuple[str, ...]
    requests_per_min: float
    requests_per_min_per_server: float
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class PoolEvent:
    """A promotion, retirement, load, drop or failed fetch, on `node_id`."""

    at_unix_s: float
    model: str
    kind: str  # promoted, retired, loaded, dropped, fetch_failed
    reason: str
    node_id: str = ""


@dataclass(frozen=True)
class PlanPool:
    """What this node's plan says about the pool; `received` False until placement's first plan."""

    received: bool = False
    standby: bool = False
    standby_reason: str = ""
    serving: bool = False  # an assignment that serves or helps serve a model
    fetching: bool = False
    assignment_reasons: tuple[str, ...] = ()  # of standby assignments: why not here
    models: tuple[PoolModel, ...] = ()
    events: tuple[PoolEvent, ...] = ()


def adoptions(record: gossip_pb2.NodeRecord) -> tuple[Adoption, ...]:
    return tuple(
        Adoption(a.model, a.reason, a.since_unix_s, a.by_hand, a.for_loss) for a in record.adopted if a.model
    )


def eta_s(bytes_total: int, bytes_done: int, bytes_per_s: float) -> float | None:
    remaining = bytes_total - bytes_done
    if bytes_total > 0 and remaining <= 0:
        return 0.0
    if bytes_per_s <= 0 or bytes_total <= 0:
        return None
    return round(remaining / bytes_per_s, ETA_DECIMALS)


def transfers(record: gossip_pb2.NodeRecord) -> tuple[FileTransfer, ...]:
    return tuple(
        FileTransfer(
            name=t.name,
            sha256=t.sha256,
            bytes_total=t.bytes_total,
            bytes_done=t.bytes_done,
            bytes_per_s=round(t.bytes_per_s, RATE_DECIMALS),
            eta_s=eta_s(t.bytes_total, t.bytes_done, t.bytes_per_s),
            source_node_ids=tuple(t.source_node_ids),
            error=t.error,
        )
        for t in record.fetching
    )


def record_role(record: gossip_pb2.NodeRecord) -> NodeRole:
    """A peer's role as its record shows it."""
    if record.is_client:
        return NodeRole(ROLE_CLIENT)
    if any(s.role in _GOSSIP_SERVING_ROLES for s in record.served):
        return NodeRole(ROLE_SERVING)
    if record.fetching:
        return NodeRole(ROLE_FETCHING)
    return NodeRole(ROLE_STANDBY, STANDBY_REASON)


def local_role(record: gossip_pb2.NodeRecord, plan: PlanPool, is_client: bool = False) -> NodeRole:
    """This node's role: the plan's word once there is one; the record's (as for a peer) before, or
    when the plan does not say standby but nothing here serves (a placement that predates the flag).
    An assignment outranks the standby flag: the flag can lag a promotion by a plan or two."""
    if is_client or record.is_client:
        return NodeRole(ROLE_CLIENT)
    if plan.serving:
        return NodeRole(ROLE_SERVING)
    if plan.fetching:
        return NodeRole(ROLE_FETCHING)
    if plan.standby:
        return NodeRole(ROLE_STANDBY, plan.standby_reason or _plan_reason(plan))
    role = record_role(record)
    if role.standby and plan.received:
        return NodeRole(ROLE_STANDBY, _plan_reason(plan))
    return role


def _plan_reason(plan: PlanPool) -> str:
    return "; ".join(plan.assignment_reasons) or STANDBY_REASON


def _pool_model(pool: placement_pb2.ModelPool) -> PoolModel:
    return PoolModel(
        model=pool.model,
        servers=tuple(pool.server_node_ids),
        candidates=tuple(pool.candidate_node_ids),
        requests_per_min=round(pool.requests_per_min, RATE_DECIMALS),
        requests_per_min_per_server=round(pool.requests_per_min_per_server, RATE_DECIMALS),
        reasons=tuple(pool.reasons),
    )


def plan_pool(plan: placement_pb2.Plan) -> PlanPool:
    roles = [a.role for a in plan.assignments if a.model]
    standby_reasons = [
        reason
        for a in plan.assignments
        if a.role == placement_pb2.ASSIGNMENT_ROLE_STANDBY
        for reason in a.reasons
    ]
    return PlanPool(
        received=True,
        standby=plan.standby,
        standby_reason=plan.standby_reason,
        serving=any(role in _PLAN_SERVING_ROLES for role in roles),
        fetching=placement_pb2.ASSIGNMENT_ROLE_FETCHING in roles,
        assignment_reasons=tuple(standby_reasons),
        models=tuple(sorted((_pool_model(p) for p in plan.pool if p.model), key=lambda m: m.model)),
        events=tuple(
            PoolEvent(e.at_unix_s, e.model, e.kind, e.reason, plan.node_id) for e in plan.events if e.kind
        ),
    )


def gossip_pool(view: gossip_pb2.MeshView) -> tuple[PoolModel, ...]:
    """The pool as gossip alone shows it (no plan yet, or a client, which runs no placement): every
    routable server and the mesh's summed demand per model; no candidates, no reasons."""
    servers: dict[str, list[str]] = {}
    demand: dict[str, float] = {}
    for record in view.nodes:
        if record.leaving:
            continue
        for model, rate in record.request_rate_per_min.items():
            demand[model] = demand.get(model, 0.0) + rate
        if record.is_client:
            continue
        for served in record.served:
            if served.role in _ROUTABLE_ROLES and served.state == gossip_pb2.SERVE_STATE_READY:
                servers.setdefault(served.name, []).append(record.node_id)
    models = []
    for model in sorted(servers.keys() | demand.keys()):
        ids = tuple(sorted(servers.get(model, ())))
        total = demand.get(model, 0.0)
        per_server = total / len(ids) if ids else total
        models.append(
            PoolModel(model, ids, (), round(total, RATE_DECIMALS), round(per_server, RATE_DECIMALS))
        )
    return tuple(models)


def pool_models(plan: PlanPool, view: gossip_pb2.MeshView) -> tuple[PoolModel, ...]:
    """The plan's pool when it has one, else what gossip shows."""
    return plan.models if plan.models else gossip_pool(view)
