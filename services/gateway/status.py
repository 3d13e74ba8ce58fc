"""What the gateway reports about the node: one snapshot, shown as gRPC (meshctl) and JSON (console)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

from services.gateway.peers import PeerServices, ServiceHealth
from services.gateway.routing import ModelEntry
from services.gateway.sources import RoutingSources
from services.node.config import NodeConfig
from services.proto.meshllm.gateway.v1 import gateway_pb2
from services.proto.meshllm.gossip.v1 import gossip_pb2


def _version() -> str:
    try:
        return metadata.version("mesh-llm")
    except metadata.PackageNotFoundError:
        return "dev"


VERSION = _version()


@dataclass
class RequestCounters:
    """API requests seen by this gateway; per-model totals feed demand reporting later."""

    total: int = 0
    in_flight: int = 0
    by_model: dict[str, int] = field(default_factory=dict)

    def started(self, model: str) -> None:
        self.total += 1
        self.in_flight += 1
        self.by_model[model] = self.by_model.get(model, 0) + 1

    def finished(self) -> None:
        self.in_flight -= 1


@dataclass(frozen=True)
class PeerSummary:
    node_id: str
    name: str
    rtt_ms: float
    vram_bytes: int
    is_client: bool
    models_served: tuple[str, ...]


def peer_summaries(view: gossip_pb2.MeshView) -> tuple[PeerSummary, ...]:
    local = next((n for n in view.nodes if n.node_id == view.local_node_id), gossip_pb2.NodeRecord())
    return tuple(
        PeerSummary(
            node_id=record.node_id,
            name=record.name,
            rtt_ms=local.rtt_ms.get(record.node_id, 0.0),
            vram_bytes=record.vram_bytes,
            is_client=record.is_client,
            models_served=tuple(s.name for s in record.served if s.state == gossip_pb2.SERVE_STATE_READY),
        )
        for record in view.nodes
        if record.node_id != view.local_node_id
    )


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

    async def snapshot(self) -> GatewayStatus:
        identity = await self._peers.identity()
        return GatewayStatus(
            node_id=identity.node_id if identity else "",
            name=(identity.name if identity else "") or self._config.name,
            api_url=self._config.api_url,
            console_url=self._config.console_url,
            version=VERSION,
            # The gateway is listed too: it is answering this very call, so `meshctl status` shows all five.
            services=(*await self._peers.health(), ServiceHealth("gateway", True, "ok")),
            models=self._sources.table.entries,
            requests_total=self._counters.total,
            requests_in_flight=self._counters.in_flight,
            invite_token=await self._peers.invite_token(),
            peers=peer_summaries(self._sources.view),
        )
