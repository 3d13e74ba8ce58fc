"""What the gateway reports about the node: one snapshot, shown as gRPC (meshctl) and JSON (console)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

from services.gateway.mesh_summary import (
    DiskModel,
    MeshModel,
    ModelRole,
    PeerSummary,
    ServedModel,
    local_summary,
    mesh_models,
    model_roles,
    peer_summaries,
    short_id,
)
from services.gateway.peers import PeerServices, ServiceHealth
from services.gateway.pool_summary import Adoption, FileTransfer, PoolEvent, PoolModel, pool_models
from services.gateway.rates import RequestRates
from services.gateway.routing import ModelEntry
from services.gateway.sources import RoutingSources
from services.node.config import NodeConfig
from services.proto.meshllm.gateway.v1 import gateway_pb2


def _version() -> str:
    try:
        return metadata.version("mesh-llm")
    except metadata.PackageNotFoundError:
        return "dev"


VERSION = _version()


@dataclass
class RequestCounters:
    """API requests seen by this gateway: totals (forwarded ones included), and the decayed per-model
    rates of the requests that entered the mesh here: this node's share of the mesh's demand, which
    it gossips (services/gateway/demand.py) and the console shows."""

    total: int = 0
    in_flight: int = 0
    by_model: dict[str, int] = field(default_factory=dict)
    rates: RequestRates = field(default_factory=RequestRates)
    clock: Callable[[], float] = time.monotonic

    def started(self, model: str, entered_here: bool = True) -> None:
        """`entered_here` False: a peer forwarded it, and counted it as demand already."""
        self.total += 1
        self.in_flight += 1
        self.by_model[model] = self.by_model.get(model, 0) + 1
        if entered_here:
            self.rates.record(model, self.clock())

    def finished(self) -> None:
        self.in_flight -= 1

    def rates_per_minute(self) -> dict[str, float]:
        return self.rates.per_minute(self.clock())


@dataclass(frozen=True)
class GatewayStatus:
    node_id: str
    name: str
    api_url: str
    console_url: str
    version: str
    services: tuple[ServiceHealth, ...]
    models: tuple[ModelEntry, ...]
    requests_total: int
    requests_in_flight: int
    invite_token: str = ""
    peers: tuple[PeerSummary, ...] = ()
    short_id: str = ""
    is_client: bool = False
    vram_bytes: int = 0
    roles: tuple[ModelRole, ...] = ()
    served: tuple[ServedModel, ...] = ()
    models_on_disk: tuple[DiskModel, ...] = ()
    mesh_models: tuple[MeshModel, ...] = ()
    requests_by_model: dict[str, int] = field(default_factory=dict)
    request_rate_per_min: dict[str, float] = field(default_factory=dict)
    invite_token_hidden: bool = False  # withheld from a remote viewer (README "Status JSON")
    # The pool (services/gateway/pool_summary.py): this node's role as its plan says, what it took
    # up and is fetching; mesh-wide the pool per model and this node's recent pool events.
    role: str = ""
    standby: bool = False
    standby_reason: str = ""
    adopted: tuple[Adoption, ...] = ()
    fetching: tuple[FileTransfer, ...] = ()
    pool: tuple[PoolModel, ...] = ()
    pool_events: tuple[PoolEvent, ...] = ()

    def to_proto(self) -> gateway_pb2.NodeStatus:
        return gateway_pb2.NodeStatus(
            node_id=self.node_id,
            name=self.name,
            api_url=self.api_url,
            console_url=self.console_url,
            version=self.version,
            services=[
                gateway_pb2.ServiceHealth(name=s.name, reachable=s.reachable, detail=s.detail)
                for s in self.services
            ],
            models=[
                gateway_pb2.ModelRoute(
                    model=m.model,
                    state=m.state,
                    node_ids=list(m.nodes),
                    local=m.local,
                    endpoint=m.endpoint,
                    kind=m.kind.value,
                    context_tokens=m.context_tokens,
                    slots=m.slots,
                    speculation=m.speculation,
                )
                for m in self.models
            ],
            requests_total=self.requests_total,
            requests_in_flight=self.requests_in_flight,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class StatusReporter:
    """Builds a GatewayStatus from the live routing state, the counters and the sibling services."""

    def __init__(
        self, config: NodeConfig, sources: RoutingSources, counters: RequestCounters, peers: PeerServices
    ) -> None:
        self._config = config
        self._sources = sources
        self._counters = counters
        self._peers = peers

    async def snapshot(self, show_invite_token: bool = True) -> GatewayStatus:
        identity = await self._peers.identity()
        view, table, pool = self._sources.view, self._sources.table, self._sources.pool
        local = local_summary(view, pool, self._config.client)
        node_id = identity.node_id if identity else view.local_node_id
        return GatewayStatus(
            node_id=node_id,
            name=(identity.name if identity else "") or local.name or self._config.name,
            api_url=self._config.api_url,
            console_url=self._config.console_url,
            version=VERSION,
            # The gateway is listed too: it is answering this very call, so `meshctl status` shows all five.
            services=(*await self._peers.health(), ServiceHealth("gateway", True, "ok")),
            models=table.entries,
            requests_total=self._counters.total,
            requests_in_flight=self._counters.in_flight,
            invite_token=await self._peers.invite_token() if show_invite_token else "",
            peers=peer_summaries(view, self._sources.paths),
            short_id=short_id(node_id),
            is_client=self._config.client,
            vram_bytes=local.vram_bytes,
            roles=model_roles(self._sources.plan),
            served=local.served,
            models_on_disk=local.models_on_disk,
            mesh_models=mesh_models(view, table.entries),
            requests_by_model=dict(self._counters.by_model),
            request_rate_per_min=self._counters.rates_per_minute(),
            invite_token_hidden=not show_invite_token,
            role=local.role,
            standby=local.standby,
            standby_reason=local.standby_reason,
            adopted=local.adopted,
            fetching=local.fetching,
            pool=pool_models(pool, view),
            pool_events=pool.events,
        )
