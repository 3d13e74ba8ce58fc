"""The placement service process: gossip view → plan → runner processes, and served state back to gossip.

Reconciliation is level-triggered: whenever the runner's reported set differs from the plan's
desired set (a restarted runner reports nothing), the desired set is applied again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc

from services.node.config import NodeConfig
from services.node.grpc_link import follow_stream, open_channel, run_until_signalled, start_server
from services.placement.plan import ModelAssignment, Role, assignment_changed
from services.placement.processes import desired_processes, ready_workers, served_models, split_workers
from services.placement.split import plan_for_node
from services.placement.view import UNHASHED, DiskFile, mesh_nodes_from_view, with_local_files
from services.proto.meshllm.gossip.v1 import gossip_pb2, gossip_pb2_grpc
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc
from services.proto.meshllm.placement.v1 import placement_pb2, placement_pb2_grpc
from services.proto.meshllm.runner.v1 import runner_pb2, runner_pb2_grpc

logger = logging.getLogger("placement")

APPLY_TIMEOUT_S = 10.0
GOSSIP_UPDATE_TIMEOUT_S = 5.0
TUNNEL_TIMEOUT_S = 5.0

PLAN_DEBOUNCE_S = 0.5  # gossip changes arrive in bursts (a join, a hash); plan once per burst

_ROLE_TO_PROTO = {
    Role.SOLO: placement_pb2.ASSIGNMENT_ROLE_SOLO,
    Role.SPLIT_HOST: placement_pb2.ASSIGNMENT_ROLE_SPLIT_HOST,
    Role.SPLIT_WORKER: placement_pb2.ASSIGNMENT_ROLE_SPLIT_WORKER,
    Role.STANDBY: placement_pb2.ASSIGNMENT_ROLE_STANDBY,
    Role.WAITING: placement_pb2.ASSIGNMENT_ROLE_WAITING,
    Role.DOES_NOT_FIT: placement_pb2.ASSIGNMENT_ROLE_DOES_NOT_FIT,
}


def configured_files(config: NodeConfig) -> dict[str, DiskFile]:
    """The files this node was asked to serve, hash unknown: enough to start solo before hashing ends."""
    files = {}
    for model in config.models:
        try:
            size = os.path.getsize(model.path)
        except OSError:
            continue
        files[model.name] = DiskFile(UNHASHED, size, model.path)
    return files


def plan_message(
    generation: int, node_id: str, vram_bytes: int, assignments: list[ModelAssignment]
) -> placement_pb2.Plan:
    return placement_pb2.Plan(
        generation=generation,
        node_id=node_id,
        vram_bytes=vram_bytes,
        assignments=[
            placement_pb2.Assignment(
                model=a.model,
                model_path=a.path,
                model_bytes=a.bytes,
                role=_ROLE_TO_PROTO[a.role],
                host_node_id=a.host_node_id or (node_id if a.role is Role.SOLO else ""),
                shares=[
                    placement_pb2.LayerShare(node_id=s.node_id, fraction=s.fraction, bytes=s.bytes)
                    for s in a.shares
                ],
                reasons=list(a.reasons),
            )
            for a in assignments
        ],
    )


class PlacementController:
    """Holds the current plan and keeps the runner and the local gossip record in step with it."""

    def __init__(
        self,
        config: NodeConfig,
        gossip: gossip_pb2_grpc.GossipStub,
        runner: runner_pb2_grpc.RunnerStub,
        mesh: mesh_pb2_grpc.MeshStub,
    ) -> None:
        self._config = config
        self._gossip = gossip
        self._runner = runner
        self._mesh = mesh
        self._assignments: list[ModelAssignment] = []
        self._desired: list[runner_pb2.ProcessSpec] = []
        self._served: list[gossip_pb2.ServedModel] | None = None
        self._view: gossip_pb2.MeshView | None = None
        self._status = runner_pb2.RunnerStatus()
        self._replan_pending: asyncio.Task[None] | None = None
        self.plan = placement_pb2.Plan()
        self.plan_changed = asyncio.Condition()

    async def on_view(self, view: gossip_pb2.MeshView) -> None:
        self._view = view
        if self._config.client:
            return
        if not self.plan.node_id:  # the first plan at once: a solo model should not wait
            await self._replan()
        elif self._replan_pending is None or self._replan_pending.done():
            self._replan_pending = asyncio.ensure_future(self._replan_soon())

    async def _replan_soon(self) -> None:
        await asyncio.sleep(PLAN_DEBOUNCE_S)
        await self._replan()

    async def _replan(self) -> None:
        view = self._view
        local = next((n for n in view.nodes if n.node_id == view.local_node_id), None) if view else None
        if view is None or local is None:
            return
        # --split arrives in the local record (force_split), like every other input to the plan.
        nodes = with_local_files(mesh_nodes_from_view(view), local.node_id, configured_files(self._config))
        assignments = plan_for_node(nodes, local.node_id)
        if self.plan.node_id and not assignment_changed(self._assignments, assignments):
            # Same processes; keep the current assignments (and the host's --rpc order) but show
            # the latest reasons.
            fresh = {a.model: a for a in assignments}
            assignments = [replace(a, reasons=fresh[a.model].reasons) for a in self._assignments]
            if [a.reasons for a in assignments] != [a.reasons for a in self._assignments]:
                self._assignments = assignments
                await self._publish_plan(local)
            await self._reconcile(view)
            return
        self._assignments = assignments
        for a in assignments:
            logger.info("plan: %s → %s", a.model, a.role.value, extra={"reason": a.reasons[0]})
        await self._publish_plan(local)
        await self._reconcile(view)

    async def _publish_plan(self, local: gossip_pb2.NodeRecord) -> None:
        self.plan = plan_message(self.plan.generation + 1, local.node_id, local.vram_bytes, self._assignments)
        async with self.plan_changed:
            self.plan_changed.notify_all()

    async def _reconcile(self, view: gossip_pb2.MeshView) -> None:
        """Desired processes from the plan and what the split workers report; apply when they differ."""
        endpoints = await self._split_endpoints(view)
        desired = desired_processes(self._assignments, self._config.context_size, endpoints)
        if desired != self._desired:
            self._desired = desired
            await self._apply()
        await self._report_served(self._status)

    async def _split_endpoints(self, view: gossip_pb2.MeshView) -> dict[str, list[str]]:
        """For each model this node hosts a split of: one tunnel endpoint per worker, once all are up."""
        endpoints: dict[str, list[str]] = {}
        for a in self._assignments:
            if a.role is not Role.SPLIT_HOST:
                continue
            workers = split_workers(a)
            if not set(workers) <= ready_workers(view, a.model, self.plan.node_id):
                continue
            try:
                tunnels = [await self._open_rpc_tunnel(worker, a) for worker in workers]
            except grpc.aio.AioRpcError as error:
                logger.info("cannot open RPC tunnels for %s yet (%s)", a.model, error.code().name)
                continue
            endpoints[a.model] = tunnels
        return endpoints

    async def _open_rpc_tunnel(self, worker: str, a: ModelAssignment) -> str:
        request = mesh_pb2.OpenTunnelRequest(
            peer_node_id=worker, kind=mesh_pb2.TUNNEL_KIND_RPC, model=a.model, model_path=a.path
        )
        tunnel = await self._mesh.OpenTunnel(request, timeout=TUNNEL_TIMEOUT_S)
        return f"{tunnel.host}:{tunnel.port}"

    async def _apply(self) -> None:
        try:
            await self._runner.Apply(
                runner_pb2.ApplyRequest(processes=self._desired), timeout=APPLY_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            # The runner Watch reconnect re-applies once it is back.
            logger.info("runner not reachable to apply plan (%s)", error.code().name)

    async def on_gossip_lost(self) -> None:
        """A restarted gossip service starts from a fresh record: report served models again."""
        self._served = None

    async def on_runner_status(self, status: runner_pb2.RunnerStatus) -> None:
        self._status = status
        running = sorted((p.spec for p in status.processes), key=lambda s: s.key)
        if self.plan.node_id and running != self._desired:
            await self._apply()
        await self._report_served(status)

    async def _report_served(self, status: runner_pb2.RunnerStatus) -> None:
        served = served_models(self._assignments, status, self.plan.node_id)
        if served == self._served:
            return
        try:
            await self._gossip.UpdateLocal(
                gossip_pb2.UpdateLocalRequest(record=gossip_pb2.NodeRecord(served=served), fields=["served"]),
                timeout=GOSSIP_UPDATE_TIMEOUT_S,
            )
            self._served = served
        except grpc.aio.AioRpcError as error:
            logger.info("gossip not reachable to report served models (%s)", error.code().name)


class PlacementServicer(placement_pb2_grpc.PlacementServicer):
    def __init__(self, controller: PlacementController) -> None:
        self._controller = controller

    async def GetPlan(
        self, request: placement_pb2.GetPlanRequest, context: grpc.aio.ServicerContext
    ) -> placement_pb2.Plan:
        return self._controller.plan

    async def WatchPlan(
        self, request: placement_pb2.WatchPlanRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[placement_pb2.Plan]:
        while True:
            yield self._controller.plan
            async with self._controller.plan_changed:
                await self._controller.plan_changed.wait()


async def run_placement(config: NodeConfig) -> None:
    home = config.node_home
    gossip_channel = open_channel(home, "gossip")
    runner_channel = open_channel(home, "runner")
    mesh_channel = open_channel(home, "mesh")
    gossip = gossip_pb2_grpc.GossipStub(gossip_channel)
    runner = runner_pb2_grpc.RunnerStub(runner_channel)
    controller = PlacementController(config, gossip, runner, mesh_pb2_grpc.MeshStub(mesh_channel))
    server = await start_server(
        home,
        "placement",
        lambda s: placement_pb2_grpc.add_PlacementServicer_to_server(PlacementServicer(controller), s),
    )

    watch_gossip = follow_stream(
        "gossip",
        lambda: gossip.Watch(gossip_pb2.WatchRequest()),
        controller.on_view,
        logger,
        controller.on_gossip_lost,
    )
    watch_runner = follow_stream(
        "runner", lambda: runner.Watch(runner_pb2.WatchRequest()), controller.on_runner_status, logger
    )
    try:
        await run_until_signalled(server, watch_gossip, watch_runner)
    finally:
        await gossip_channel.close()
        await runner_channel.close()
        await mesh_channel.close()
