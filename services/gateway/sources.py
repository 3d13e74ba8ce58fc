"""The gateway's view of runner and placement state: protos in at the edge, a RoutingTable out.

`RoutingSources` keeps the latest message of each Watch stream and rebuilds the table on every change;
readers take `sources.table`, a reference swap, so a request never sees a half-built table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from services.gateway.pool_summary import PlanPool, plan_pool
from services.gateway.routing import (
    LocalServer,
    ModelKind,
    PlannedModel,
    PlanRole,
    RemoteServer,
    RoutingTable,
    ServerState,
)
from services.proto.meshllm.gossip.v1 import gossip_pb2
from services.proto.meshllm.mesh.v1 import mesh_pb2
from services.proto.meshllm.placement.v1 import placement_pb2
from services.proto.meshllm.runner.v1 import runner_pb2
from services.runner.speculation import gossip_label

_SERVER_STATES = {
    runner_pb2.PROCESS_STATE_STARTING: ServerState.STARTING,
    runner_pb2.PROCESS_STATE_READY: ServerState.READY,
    runner_pb2.PROCESS_STATE_BACKOFF: ServerState.BACKOFF,
    runner_pb2.PROCESS_STATE_STOPPING: ServerState.STOPPING,
    runner_pb2.PROCESS_STATE_FAILED: ServerState.FAILED,
}

_RUNNER_KINDS = {
    runner_pb2.MODEL_KIND_CHAT: ModelKind.CHAT,
    runner_pb2.MODEL_KIND_EMBEDDING: ModelKind.EMBEDDING,
    runner_pb2.MODEL_KIND_RERANK: ModelKind.RERANK,
}
_GOSSIP_KINDS = {
    gossip_pb2.MODEL_KIND_CHAT: ModelKind.CHAT,
    gossip_pb2.MODEL_KIND_EMBEDDING: ModelKind.EMBEDDING,
    gossip_pb2.MODEL_KIND_RERANK: ModelKind.RERANK,
}

_PLAN_ROLES = {
    placement_pb2.ASSIGNMENT_ROLE_SOLO: PlanRole.SOLO,
    placement_pb2.ASSIGNMENT_ROLE_SPLIT_HOST: PlanRole.SPLIT_HOST,
    placement_pb2.ASSIGNMENT_ROLE_SPLIT_WORKER: PlanRole.SPLIT_WORKER,
    placement_pb2.ASSIGNMENT_ROLE_STANDBY: PlanRole.STANDBY,
    placement_pb2.ASSIGNMENT_ROLE_WAITING: PlanRole.WAITING,
    placement_pb2.ASSIGNMENT_ROLE_DOES_NOT_FIT: PlanRole.DOES_NOT_FIT,
    placement_pb2.ASSIGNMENT_ROLE_FETCHING: PlanRole.FETCHING,
}


def servers_from_runner(status: runner_pb2.RunnerStatus) -> tuple[LocalServer, ...]:
    """The llama-servers of a runner status; rpc-servers serve no API and are left out."""
    servers = []
    for process in status.processes:
        if process.spec.kind != runner_pb2.PROCESS_KIND_LLAMA_SERVER or not process.spec.model:
            continue
        state = _SERVER_STATES.get(process.state, ServerState.STARTING)
        servers.append(
            LocalServer(
                model=process.spec.model,
                state=state,
                host=process.host,
                port=process.port,
                last_error=process.last_error,
                since_unix_s=process.state_since_unix_s,
                kind=_RUNNER_KINDS.get(process.model_kind, ModelKind.UNKNOWN),
                context_tokens=process.context_tokens,
                api_key=process.api_key,
                slots=process.slots,
                speculation=gossip_label(process.speculation, process.draft_model_path),
            )
        )
    return tuple(servers)


def plan_models(plan: placement_pb2.Plan) -> tuple[PlannedModel, ...]:
    return tuple(
        PlannedModel(model=a.model, role=_PLAN_ROLES[a.role], reasons=tuple(a.reasons))
        for a in plan.assignments
        if a.model and a.role in _PLAN_ROLES
    )


def peer_paths(peers: mesh_pb2.ListPeersResponse) -> dict[str, str]:
    """How the mesh reaches each linked peer: "direct" or "relayed"."""
    return {p.node_id: "relayed" if p.path == mesh_pb2.PEER_PATH_RELAYED else "direct" for p in peers.peers}


def remote_servers(
    view: gossip_pb2.MeshView, reachable: Collection[str] | None = None
) -> tuple[RemoteServer, ...]:
    """Peers that serve a model, say it is ready and that the mesh reaches from here (directly or
    through a relay; `reachable` None: not known yet, trust gossip). What others gossip about a node
    we cannot reach does not make it routable from here. Leaving nodes and clients serve nothing."""
    servers = []
    for record in view.nodes:
        if record.node_id == view.local_node_id or record.leaving or record.is_client:
            continue
        if reachable is not None and record.node_id not in reachable:
            continue
        for served in record.served:
            if served.state == gossip_pb2.SERVE_STATE_READY and served.role in _SERVING_ROLES:
                kind = _GOSSIP_KINDS.get(served.kind, ModelKind.UNKNOWN)
                servers.append(
                    RemoteServer(served.name, record.node_id, kind, served.context_tokens, served.slots)
                )
    return tuple(servers)


_SERVING_ROLES = (gossip_pb2.MODEL_ROLE_SOLO, gossip_pb2.MODEL_ROLE_SPLIT_HOST)


class RoutingSources:
    """The latest runner and placement state, and the table derived from both."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._servers: tuple[LocalServer, ...] = ()
        self._plan: tuple[PlannedModel, ...] = ()
        # The plan's pool part (standby, pool per model, events); kept when placement goes away.
        self.pool = PlanPool()
        self._remote: tuple[RemoteServer, ...] = ()
        self.view = gossip_pb2.MeshView()
        # Linked peers and their path (direct/relayed); None until the mesh's first peer list.
        self.paths: dict[str, str] | None = None
        self._logger = logger or logging.getLogger("gateway.routing")
        self.table = RoutingTable.empty()
        self.runner_connected = False
        self.placement_connected = False
        self._listeners: list[Callable[[], None]] = []

    @property
    def plan(self) -> tuple[PlannedModel, ...]:
        return self._plan

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Called after every change, once the new table is in place (the console's event feed)."""
        self._listeners.append(listener)

    async def on_runner_status(self, status: runner_pb2.RunnerStatus) -> None:
        self.runner_connected = True
        self._servers = servers_from_runner(status)
        self._rebuild()

    async def on_plan(self, plan: placement_pb2.Plan) -> None:
        self.placement_connected = True
        self._plan = plan_models(plan)
        self.pool = plan_pool(plan)
        self._rebuild()

    async def on_view(self, view: gossip_pb2.MeshView) -> None:
        self.view = view
        self._remote = remote_servers(view, self.paths)
        self._rebuild()

    async def on_peers(self, peers: mesh_pb2.ListPeersResponse) -> None:
        paths = peer_paths(peers)
        if paths == self.paths:
            return
        self.paths = paths
        self._remote = remote_servers(self.view, self.paths)
        self._rebuild()

    # On a lost stream the last known state stays: the llama-servers usually outlive a runner
    # restart for a moment, and a dead one turns into a 503 on connect anyway. The resubscription
    # brings the full state back.
    async def on_runner_lost(self) -> None:
        self.runner_connected = False

    async def on_placement_lost(self) -> None:
        self.placement_connected = False

    def _rebuild(self) -> None:
        table = RoutingTable.build(self._servers, self._plan, self._remote, self.view.local_node_id)
        if table.entries != self.table.entries:
            summary = ", ".join(f"{e.model}={e.state}" for e in table.entries) or "none"
            self._logger.info("routes: %s", summary)
        self.table = table
        for listener in self._listeners:
            try:
                listener()
            except Exception:  # a console bug must never stop routing updates
                self._logger.exception("routing listener failed")
