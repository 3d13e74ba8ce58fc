"""The placement service process: gossip view → plan → runner processes, and served state back to gossip.

Reconciliation is level-triggered: whenever the runner's reported set differs from the plan's
desired set (a restarted runner reports nothing), the desired set is applied again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator

import grpc

from services.node.config import NodeConfig
from services.node.grpc_link import follow_stream, open_channel, run_until_signalled, start_server
from services.placement.plan import ModelAssignment, ModelWant, NodeCapacity, Role, plan_local_models
from services.placement.processes import desired_processes, llama_server_key
from services.proto.meshllm.gossip.v1 import gossip_pb2, gossip_pb2_grpc
from services.proto.meshllm.placement.v1 import placement_pb2, placement_pb2_grpc
from services.proto.meshllm.runner.v1 import runner_pb2, runner_pb2_grpc

logger = logging.getLogger("placement")

APPLY_TIMEOUT_S = 10.0
GOSSIP_UPDATE_TIMEOUT_S = 5.0

_ROLE_TO_PROTO = {
    Role.SOLO: placement_pb2.ASSIGNMENT_ROLE_SOLO,
    Role.SPLIT_HOST: placement_pb2.ASSIGNMENT_ROLE_SPLIT_HOST,
    Role.SPLIT_WORKER: placement_pb2.ASSIGNMENT_ROLE_SPLIT_WORKER,
    Role.STANDBY: placement_pb2.ASSIGNMENT_ROLE_STANDBY,
    Role.WAITING: placement_pb2.ASSIGNMENT_ROLE_WAITING,
    Role.DOES_NOT_FIT: placement_pb2.ASSIGNMENT_ROLE_DOES_NOT_FIT,
}
_PROCESS_TO_SERVE_STATE = {
    runner_pb2.PROCESS_STATE_READY: gossip_pb2.SERVE_STATE_READY,
    runner_pb2.PROCESS_STATE_FAILED: gossip_pb2.SERVE_STATE_FAILED,
}


def model_wants(config: NodeConfig) -> list[ModelWant]:
    wants = []
    for model in config.models:
        try:
            size = os.path.getsize(model.path)
        except OSError:
            size = 0
        wants.append(ModelWant(model.name, model.path, size))
    return wants


def plan_message(
    generation: int, node: NodeCapacity, assignments: list[ModelAssignment]
) -> placement_pb2.Plan:
    return placement_pb2.Plan(
        generation=generation,
        node_id=node.node_id,
        vram_bytes=node.vram_bytes,
        assignments=[
            placement_pb2.Assignment(
                model=a.model,
                model_path=a.path,
                model_bytes=a.bytes,
                role=_ROLE_TO_PROTO[a.role],
                host_node_id=node.node_id if a.role is Role.SOLO else "",
                reasons=list(a.reasons),
            )
            for a in assignments
        ],
    )


class PlacementController:
    """Holds the current plan and keeps the runner and the local gossip record in step with it."""

    def __init__(
        self, config: NodeConfig, gossip: gossip_pb2_grpc.GossipStub, runner: runner_pb2_grpc.RunnerStub
    ) -> None:
        self._config = config
        self._gossip = gossip
        self._runner = runner
        self._assignments: list[ModelAssignment] = []
        self._desired: list[runner_pb2.ProcessSpec] = []
        self._served: list[gossip_pb2.ServedModel] | None = None
        self.plan = placement_pb2.Plan()
        self.plan_changed = asyncio.Condition()

    async def on_view(self, view: gossip_pb2.MeshView) -> None:
        local = next((n for n in view.nodes if n.node_id == view.local_node_id), None)
        if local is None or self._config.client:
            return
        node = NodeCapacity(local.node_id, local.vram_bytes, self._config.max_vram_gb is not None)
        assignments = plan_local_models(node, model_wants(self._config), self._config.split)
        if assignments == self._assignments and self.plan.node_id:
            return
        self._assignments = assignments
        self.plan = plan_message(self.plan.generation + 1, node, assignments)
        for a in assignments:
            logger.info("plan: %s → %s", a.model, a.role.value, extra={"reason": a.reasons[0]})
        async with self.plan_changed:
            self.plan_changed.notify_all()
        self._desired = desired_processes(assignments, self._config.context_size)
        await self._apply()

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
        running = sorted((p.spec for p in status.processes), key=lambda s: s.key)
        if self.plan.node_id and running != self._desired:
            await self._apply()
        await self._report_served(status)

    async def _report_served(self, status: runner_pb2.RunnerStatus) -> None:
        by_key = {p.spec.key: p for p in status.processes}
        served = []
        for a in self._assignments:
            if a.role is not Role.SOLO:
                continue
            process = by_key.get(llama_server_key(a.model))
            state = gossip_pb2.SERVE_STATE_LOADING
            if process is not None:
                state = _PROCESS_TO_SERVE_STATE.get(process.state, gossip_pb2.SERVE_STATE_LOADING)
            served.append(
                gossip_pb2.ServedModel(
                    name=a.model, role=gossip_pb2.MODEL_ROLE_SOLO, state=state, host_node_id=self.plan.node_id
                )
            )
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
    gossip = gossip_pb2_grpc.GossipStub(gossip_channel)
    runner = runner_pb2_grpc.RunnerStub(runner_channel)
    controller = PlacementController(config, gossip, runner)
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
