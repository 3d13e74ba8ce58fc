"""The gateway's metrics task: reads the other services on an interval, and gossips this node's summary.

A scrape of `/metrics` never waits on another service: it renders the request counters (bumped by the
request path) and what this task last read: the runner's status (restarts, which llama-servers run),
each llama-server's own `/metrics` (slot use), the mesh's tunnel counters, gossip's traffic. A service
that is down or restarting leaves its last known values in place. Peers' counters come from their gossip
records (MetricsSummary), which this task publishes for this node at most every METRICS_PUBLISH_INTERVAL_S,
and only when they changed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx

from services.gateway.mesh_summary import local_record
from services.gateway.metrics_backends import (
    BackendServer,
    BadBackendMetrics,
    PoolEventCounter,
    runner_restarts,
    servers_to_scrape,
    slots_from_llama_metrics,
    tunnel_bytes,
)
from services.gateway.metrics_gossip import gossip_traffic, only_gossip_differs
from services.gateway.metrics_requests import RequestMetrics
from services.gateway.metrics_snapshot import (
    GossipKindBytes,
    ModelSlots,
    NodeCounters,
    NodeSnapshot,
    ProcessKey,
    TunnelBytes,
    record_facts,
)
from services.gateway.metrics_summary import counters_of, summary_of
from services.gateway.metrics_supervisor import (
    ServiceRestartCounter,
    SupervisorUnavailable,
    read_process_info,
)
from services.gateway.sources import RoutingSources
from services.proto.meshllm.gossip.v1 import gossip_pb2, gossip_pb2_grpc
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc
from services.proto.meshllm.runner.v1 import runner_pb2, runner_pb2_grpc

METRICS_REFRESH_INTERVAL_S = 5.0
# Each publish is a new record version fanned out to every node: a Prometheus scrape interval's worth.
METRICS_PUBLISH_INTERVAL_S = 10.0
# Gossip counters move every round even in an idle mesh: alone, they republish this rarely (a peer's
# gossip bytes in `?scope=mesh` are that stale at most), so a quiet mesh stays quiet.
GOSSIP_ONLY_PUBLISH_INTERVAL_S = 300.0
SERVICE_CALL_TIMEOUT_S = 2.0
BACKEND_SCRAPE_TIMEOUT_S = 2.0
METRICS_FIELD = "metrics"

_logger = logging.getLogger("gateway.metrics")


class MetricsCollector:
    """Owned by the gateway: `run` is one of its watch tasks. `runner` None on a client node;
    `supervisor_socket` None (or absent: a gateway started alone) counts no service restarts."""

    def __init__(
        self,
        requests: RequestMetrics,
        sources: RoutingSources,
        mesh: mesh_pb2_grpc.MeshStub,
        gossip: gossip_pb2_grpc.GossipStub,
        runner: runner_pb2_grpc.RunnerStub | None,
        clock: Callable[[], float] = time.monotonic,
        supervisor_socket: Path | None = None,
    ) -> None:
        self._requests = requests
        self._supervisor_socket = supervisor_socket
        self._services = ServiceRestartCounter()
        self._sources = sources
        self._mesh = mesh
        self._gossip = gossip
        self._runner = runner
        self._clock = clock
        self._slots: dict[str, ModelSlots] = {}
        self._total_slots: dict[BackendServer, int] = {}
        self._tunnels: tuple[TunnelBytes, ...] = ()
        self._gossip_traffic: tuple[GossipKindBytes, ...] = ()
        self._restarts: dict[ProcessKey, int] = {}
        self._pool = PoolEventCounter()
        self._published: gossip_pb2.MetricsSummary | None = None
        self._published_s = -math.inf
        self._failing: set[str] = set()
        self._http = httpx.AsyncClient(timeout=BACKEND_SCRAPE_TIMEOUT_S)

    # -- what a scrape reads (no I/O) -------------------------------------------------------------
    def counters(self) -> NodeCounters:
        self._pool.update(self._sources.pool.events)
        return NodeCounters(
            requests=dict(self._requests.requests),
            traffic=dict(self._requests.traffic),
            in_flight=self._requests.in_flight,
            slots=dict(self._slots),
            tunnels=self._tunnels,
            restarts={**self._restarts, **self._services.restarts()},
            pool_events=dict(self._pool.counts),
            gossip=self._gossip_traffic,
        )

    def local_snapshot(self) -> NodeSnapshot:
        view = self._sources.view
        return NodeSnapshot(view.local_node_id, record_facts(local_record(view)), self.counters())

    def mesh_snapshots(self) -> list[NodeSnapshot]:
        """This node (live counters) and every live peer (its last gossiped summary)."""
        view = self._sources.view
        snapshots = [self.local_snapshot()]
        for record in view.nodes:
            if record.node_id != view.local_node_id and not record.leaving:
                snapshots.append(
                    NodeSnapshot(record.node_id, record_facts(record), counters_of(record.metrics))
                )
        return snapshots

    # -- the background task ----------------------------------------------------------------------
    async def run(self, interval_s: float = METRICS_REFRESH_INTERVAL_S) -> None:
        try:
            while True:
                await self.refresh()
                await self.publish_if_due()
                await asyncio.sleep(interval_s)
        finally:
            await self._http.aclose()

    async def refresh(self) -> None:
        await asyncio.gather(
            self._refresh_runner(), self._refresh_tunnels(), self._refresh_services(), self._refresh_gossip()
        )

    async def publish_if_due(self) -> bool:
        """Put this node's summary in its gossip record; True when gossip took it."""
        now_s = self._clock()
        if now_s - self._published_s < METRICS_PUBLISH_INTERVAL_S:
            return False
        summary = summary_of(self.counters())
        if summary == self._published or summary == local_record(self._sources.view).metrics:
            return False
        gossip_only = self._published is not None and only_gossip_differs(summary, self._published)
        if gossip_only and now_s - self._published_s < GOSSIP_ONLY_PUBLISH_INTERVAL_S:
            return False
        request = gossip_pb2.UpdateLocalRequest(
            record=gossip_pb2.NodeRecord(metrics=summary), fields=[METRICS_FIELD]
        )
        try:
            await self._gossip.UpdateLocal(request, timeout=SERVICE_CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            self._failed("gossip", error.details() or error.code().name)
            return False
        self._recovered("gossip")
        self._published, self._published_s = summary, now_s
        return True

    async def _refresh_runner(self) -> None:
        if self._runner is None:
            return
        try:
            status = await self._runner.GetStatus(
                runner_pb2.GetStatusRequest(), timeout=SERVICE_CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            self._failed("runner", error.details() or error.code().name)
            return
        self._recovered("runner")
        self._restarts = runner_restarts(status)
        servers = servers_to_scrape(status)
        results = await asyncio.gather(*(self._scrape(server) for server in servers))
        slots = {}
        for server, result in zip(servers, results, strict=True):
            known = result or self._slots.get(server.model)
            if known is not None:
                slots[server.model] = known
        self._slots = slots
        self._total_slots = {s: n for s, n in self._total_slots.items() if s in servers}

    async def _scrape(self, server: BackendServer) -> ModelSlots | None:
        base = f"http://{server.host}:{server.port}"
        headers = {"authorization": f"Bearer {server.api_key}"} if server.api_key else {}
        try:
            if server not in self._total_slots:
                props = await self._http.get(f"{base}/props", headers=headers)
                props.raise_for_status()
                self._total_slots[server] = int(props.json().get("total_slots", 0))
            response = await self._http.get(f"{base}/metrics", headers=headers)
            response.raise_for_status()
            slots = slots_from_llama_metrics(response.text, self._total_slots[server])
        except (httpx.HTTPError, BadBackendMetrics, ValueError) as exc:
            self._failed(f"llama-server {server.model}", str(exc) or type(exc).__name__)
            return None
        self._recovered(f"llama-server {server.model}")
        return slots

    async def _refresh_services(self) -> None:
        if self._supervisor_socket is None or not self._supervisor_socket.exists():
            return
        try:
            infos = await asyncio.wait_for(
                asyncio.to_thread(read_process_info, self._supervisor_socket), SERVICE_CALL_TIMEOUT_S
            )
        except (SupervisorUnavailable, TimeoutError) as exc:
            self._failed("supervisord", str(exc) or type(exc).__name__)
            return
        self._recovered("supervisord")
        self._services.update(infos)

    async def _refresh_tunnels(self) -> None:
        try:
            response = await self._mesh.ListTunnels(
                mesh_pb2.ListTunnelsRequest(), timeout=SERVICE_CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            self._failed("mesh", error.details() or error.code().name)
            return
        self._recovered("mesh")
        self._tunnels = tunnel_bytes(response)

    async def _refresh_gossip(self) -> None:
        try:
            stats = await self._gossip.GetStats(gossip_pb2.GetStatsRequest(), timeout=SERVICE_CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            self._failed("gossip stats", error.details() or error.code().name)
            return
        self._recovered("gossip stats")
        self._gossip_traffic = gossip_traffic(stats.kinds)

    # A service restarting fails every few seconds: said once, then again when it is back.
    def _failed(self, source: str, why: str) -> None:
        log = _logger.debug if source in self._failing else _logger.warning
        log("metrics from %s not refreshed (last known kept): %s", source, why)
        self._failing.add(source)

    def _recovered(self, source: str) -> None:
        if source in self._failing:
            self._failing.discard(source)
            _logger.info("metrics from %s refreshed again", source)
