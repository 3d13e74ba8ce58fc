"""Where a request for a model goes: a pure table built from the runner's, placement's and gossip's state.

The watchers rebuild the table whenever the runner, the plan or the mesh view changes and swap it in
whole, so a request does one dict lookup and never talks gRPC (DESIGN §2). A model served here goes to
the local llama-server; one served elsewhere gets a RemoteRoute naming the nodes that serve it, and
carrying the local Route too when this node is one of its replicas (the forwarder spreads requests
over all of them, services/gateway/replicas.py).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

# How long a client should wait before retrying a model that is starting: llama-server loads a small
# model in about a second, a big one in tens of seconds; a short hint keeps clients responsive.
MODEL_LOADING_RETRY_AFTER_S = 5
# Waiting for capacity ends when a node joins: minutes, not seconds.
WAITING_FOR_CAPACITY_RETRY_AFTER_S = 30
# A model file coming from peers: GBs at LAN speed, tens of seconds at least.
MODEL_FETCHING_RETRY_AFTER_S = 30


class ServerState(enum.Enum):
    """A local llama-server's lifecycle, as the runner reports it (runner.proto ProcessState)."""

    STARTING = "starting"
    READY = "ready"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    FAILED = "failed"


class PlanRole(enum.Enum):
    """This node's role for a model, as placement decided it (placement.proto AssignmentRole)."""

    SOLO = "solo"
    SPLIT_HOST = "split_host"
    SPLIT_WORKER = "split_worker"
    STANDBY = "standby"
    WAITING = "waiting"
    DOES_NOT_FIT = "does_not_fit"
    FETCHING = "fetching"  # took the model up; its file is coming from peers


class ModelKind(enum.StrEnum):
    """What a model answers (runner.proto / gossip.proto ModelKind); UNKNOWN until its server runs.
    A str, so the status JSON carries it as its value."""

    UNKNOWN = "unknown"
    CHAT = "chat"
    EMBEDDING = "embedding"
    RERANK = "rerank"


@dataclass(frozen=True)
class LocalServer:
    """A llama-server process of this node's runner."""

    model: str
    state: ServerState
    host: str = ""
    port: int = 0
    last_error: str = ""
    since_unix_s: float = 0.0
    kind: ModelKind = ModelKind.UNKNOWN
    context_tokens: int = 0
    api_key: str = field(default="", repr=False)  # the llama-server's own (runner.proto)
    slots: int = 0  # requests it decodes at once (0: not known)
    speculation: str = ""  # what it speculates with ("ngram", "draft NAME+ngram", "off"; "" not known)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}" if self.port else ""


@dataclass(frozen=True)
class PlannedModel:
    """One assignment of the placement plan."""

    model: str
    role: PlanRole
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    """Serve the request from a llama-server listening on host:port."""

    model: str
    host: str
    port: int
    since_unix_s: float = 0.0
    api_key: str = field(default="", repr=False)  # sent as Authorization: Bearer to llama-server

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ModelLoading:
    """The model is being (re)started here; a retry soon will likely succeed."""

    model: str
    detail: str
    retry_after_s: int = MODEL_LOADING_RETRY_AFTER_S


@dataclass(frozen=True)
class UnknownModel:
    model: str
    known: tuple[str, ...]


@dataclass(frozen=True)
class NotServable:
    """Known, but nothing can serve it now; `retry_after_s` is set when that may change on its own."""

    model: str
    reason: str
    retry_after_s: int | None = None


@dataclass(frozen=True)
class RemoteServer:
    """A peer that gossips it serves `model` and is ready."""

    model: str
    node_id: str
    kind: ModelKind = ModelKind.UNKNOWN
    context_tokens: int = 0
    slots: int = 0  # requests its server decodes at once (0: not known)


@dataclass(frozen=True)
class RemoteRoute:
    """Serve the request on one of these peers (through a mesh tunnel to its gateway), or here on
    `local` when this node serves the model too (`local_node_id` names this node then)."""

    model: str
    node_ids: tuple[str, ...]
    local: Route | None = None
    local_node_id: str = ""


Lookup = Route | RemoteRoute | ModelLoading | UnknownModel | NotServable


@dataclass(frozen=True)
class ModelEntry:
    """A model as `/v1/models`, `/api/status` and `meshctl status` show it."""

    model: str
    state: str  # ready, loading, fetching, waiting, does_not_fit, failed, standby, remote
    local: bool
    endpoint: str
    since_unix_s: float
    detail: str
    nodes: tuple[str, ...] = ()  # every node serving it, this one included when it does
    kind: ModelKind = ModelKind.UNKNOWN
    context_tokens: int = 0  # the serving llama-server's context; 0 when not known
    slots: int = 0  # requests decoded at once, over every ready server of it (0: not known)
    speculation: str = ""  # this node's server's (LocalServer.speculation); "" when not served here


_LOADING_STATES = (ServerState.STARTING, ServerState.BACKOFF, ServerState.STOPPING)
_SERVING_ROLES = (PlanRole.SOLO, PlanRole.SPLIT_HOST)
# Worse states first, so the best process of a model wins when the runner reports several.
_STATE_RANK = {
    ServerState.FAILED: 0,
    ServerState.STOPPING: 1,
    ServerState.BACKOFF: 2,
    ServerState.STARTING: 3,
    ServerState.READY: 4,
}


def _decide(model: str, server: LocalServer | None, planned: PlannedModel | None) -> Lookup:
    """The routing decision for one model; everything else in this module is bookkeeping."""
    if server is not None:
        if server.state is ServerState.READY:
            return Route(model, server.host, server.port, server.since_unix_s, server.api_key)
        if server.state in _LOADING_STATES:
            return ModelLoading(model, f"llama-server for {model} is {server.state.value}")
        return NotServable(model, server.last_error or f"llama-server for {model} failed")
    assert planned is not None, "a model is known from the runner or the plan"
    reasons = "; ".join(planned.reasons)
    if planned.role in _SERVING_ROLES:
        return ModelLoading(model, f"{model} is assigned to this node and starting")
    if planned.role is PlanRole.FETCHING:
        detail = f"{model}'s file is being fetched from peers"
        return ModelLoading(model, detail, MODEL_FETCHING_RETRY_AFTER_S)
    if planned.role is PlanRole.WAITING:
        why = reasons or "the mesh lacks the capacity to serve it"
        return NotServable(model, f"waiting for capacity: {why}", WAITING_FOR_CAPACITY_RETRY_AFTER_S)
    if planned.role is PlanRole.DOES_NOT_FIT:
        return NotServable(model, f"does not fit: {reasons or 'no node group is large enough'}")
    return NotServable(model, f"{model} is served by other nodes; remote routing is not available yet")


def _state_name(decision: Lookup, planned: PlannedModel | None) -> str:
    if isinstance(decision, Route | RemoteRoute):
        return "ready"
    if isinstance(decision, ModelLoading):
        return "fetching" if planned is not None and planned.role is PlanRole.FETCHING else "loading"
    if planned is None:
        return "failed"
    return {
        PlanRole.WAITING: "waiting",
        PlanRole.DOES_NOT_FIT: "does_not_fit",
        PlanRole.STANDBY: "standby",
        PlanRole.SPLIT_WORKER: "remote",
    }.get(planned.role, "failed")


def _entry(decision: Lookup, server: LocalServer | None, planned: PlannedModel | None) -> ModelEntry:
    detail = ""
    if isinstance(decision, ModelLoading):
        detail = decision.detail
    elif isinstance(decision, NotServable):
        detail = decision.reason
    return ModelEntry(
        model=decision.model,
        state=_state_name(decision, planned),
        local=server is not None,
        endpoint=server.endpoint if server is not None else "",
        since_unix_s=server.since_unix_s if server is not None else 0.0,
        detail=detail,
    )


def _best_servers(servers: Iterable[LocalServer]) -> dict[str, LocalServer]:
    best: dict[str, LocalServer] = {}
    for server in servers:
        current = best.get(server.model)
        if current is None or _STATE_RANK[server.state] > _STATE_RANK[current.state]:
            best[server.model] = server
    return best


def _model_facts(server: LocalServer | None, remote: Iterable[RemoteServer]) -> tuple[ModelKind, int]:
    """A model's kind and the smallest context among its servers (a request must fit any of them)."""
    known = [s for s in (server, *remote) if s is not None and s.kind is not ModelKind.UNKNOWN]
    kind = known[0].kind if known else ModelKind.UNKNOWN
    contexts = [s.context_tokens for s in (server, *remote) if s is not None and s.context_tokens > 0]
    return kind, min(contexts, default=0)


def _total_slots(server: LocalServer | None, remote: Iterable[RemoteServer]) -> int:
    """Requests the model's ready servers decode at once, together (remote ones are all ready)."""
    local = server.slots if server is not None and server.state is ServerState.READY else 0
    return local + sum(s.slots for s in remote)


class RoutingTable:
    """An immutable snapshot: model name → decision, computed once per state change."""

    def __init__(self, decisions: dict[str, Lookup], entries: tuple[ModelEntry, ...]) -> None:
        self._decisions = decisions
        self._by_folded_name = {name.casefold(): name for name in decisions}
        self._entries = entries
        self._known = tuple(entry.model for entry in entries)
        self._kinds = {entry.model: entry.kind for entry in entries}

    @classmethod
    def empty(cls) -> RoutingTable:
        return cls({}, ())

    @classmethod
    def build(
        cls,
        servers: Iterable[LocalServer],
        plan: Iterable[PlannedModel],
        remote: Iterable[RemoteServer] = (),
        local_node_id: str = "",
    ) -> RoutingTable:
        by_server = _best_servers(servers)
        by_plan = {planned.model: planned for planned in plan}
        by_remote: dict[str, list[str]] = {}
        remote_facts: dict[str, list[RemoteServer]] = {}
        for remote_server in remote:
            by_remote.setdefault(remote_server.model, []).append(remote_server.node_id)
            remote_facts.setdefault(remote_server.model, []).append(remote_server)
        decisions: dict[str, Lookup] = {}
        entries: list[ModelEntry] = []
        for model in sorted(by_server.keys() | by_plan.keys() | by_remote.keys()):
            server, planned = by_server.get(model), by_plan.get(model)
            peers = tuple(sorted(by_remote.get(model, ())))
            local = _decide(model, server, planned) if server or planned else None
            decision: Lookup
            if not peers:
                decision = local if local is not None else NotServable(model, "no node serves it")
            elif isinstance(local, Route):
                decision = RemoteRoute(model, peers, local, local_node_id)
            else:
                decision = RemoteRoute(model, peers)
            nodes = tuple(
                sorted((*peers, local_node_id) if isinstance(local, Route) and local_node_id else peers)
            )
            decisions[model] = decision
            entry = _entry(decision, server, planned)
            kind, context_tokens = _model_facts(server, remote_facts.get(model, ()))
            entries.append(
                ModelEntry(
                    entry.model,
                    entry.state,
                    entry.local,
                    entry.endpoint,
                    entry.since_unix_s,
                    entry.detail,
                    nodes,
                    kind,
                    context_tokens,
                    _total_slots(server, remote_facts.get(model, ())),
                    server.speculation if server is not None else "",
                )
            )
        return cls(decisions, tuple(entries))

    @classmethod
    def from_routes(cls, routes: Iterable[Route]) -> RoutingTable:
        """A table of ready local servers only: what a test or a bench needs to aim the gateway."""
        servers = [
            LocalServer(r.model, ServerState.READY, r.host, r.port, "", r.since_unix_s) for r in routes
        ]
        return cls.build(servers, ())

    def lookup(self, model: str) -> Lookup:
        """O(1); names match exactly, then case-insensitively (clients disagree on model-name case)."""
        decision = self._decisions.get(model)
        if decision is None:
            canonical = self._by_folded_name.get(model.casefold())
            if canonical is None:
                return UnknownModel(model, self._known)
            decision = self._decisions[canonical]
        return decision

    def kind_of(self, model: str) -> ModelKind:
        """The kind of a model the table knows by exactly this name (lookup() resolves case first)."""
        return self._kinds.get(model, ModelKind.UNKNOWN)

    def ready_models_of_kind(self, kind: ModelKind) -> tuple[str, ...]:
        """Models of `kind` that a request could be routed to now, for an error that names them."""
        return tuple(entry.model for entry in self._entries if entry.kind is kind and entry.state == "ready")

    @property
    def known_models(self) -> tuple[str, ...]:
        return self._known

    @property
    def entries(self) -> tuple[ModelEntry, ...]:
        return self._entries
