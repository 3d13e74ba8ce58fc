"""The placement service process: gossip view → plan → runner processes, and served state back to gossip.

Reconciliation is level-triggered: whenever the runner's reported set differs from the plan's
desired set (a restarted runner reports nothing), the desired set is applied again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import replace
from typing import NamedTuple

import grpc

from services.node.config import NodeConfig
from services.node.grpc_link import follow_stream, open_channel, run_until_signalled, start_server
from services.placement.fetching import ModelFetcher
from services.placement.plan import ModelAssignment, Role, assignment_changed
from services.placement.pool import PoolDecision, PoolSettings, plan_pool, servers_of
from services.placement.pool_messages import (
    adopted_records,
    downloadable_models,
    fetching_assignments,
    pool_messages,
    seen_records,
)
from services.placement.pool_state import load_pool, save_pool
from services.placement.processes import (
    desired_processes,
    memory_budgets,
    ready_workers,
    served_models,
    split_workers,
)
from services.placement.servicer import PlacementServicer, PoolRequestError
from services.placement.split import plan_for_node
from services.placement.view import UNHASHED, DiskFile, MeshNode, mesh_nodes_from_view, with_local_files
from services.proto.meshllm.gossip.v1 import gossip_pb2, gossip_pb2_grpc
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc
from services.proto.meshllm.placement.v1 import placement_pb2, placement_pb2_grpc
from services.proto.meshllm.runner.v1 import runner_pb2, runner_pb2_grpc
from services.runner.speculation_pairing import (
    DraftPairing,
    catalog_drafts,
    requested_label,
    with_speculation,
)

logger = logging.getLogger("placement")

APPLY_TIMEOUT_S = 10.0
GOSSIP_UPDATE_TIMEOUT_S = 5.0
TUNNEL_TIMEOUT_S = 5.0

PLAN_DEBOUNCE_S = 0.5  # gossip changes arrive in bursts (a join, a hash); plan once per burst
# The pool's timers (a cold replica's retirement) and decaying demand move without any gossip change.
POOL_TICK_S = 2.0
TRANSFER_PUBLISH_MIN_S = 1.0  # progress in gossip at most once a second per node

_ROLE_TO_PROTO = {
    Role.SOLO: placement_pb2.ASSIGNMENT_ROLE_SOLO,
    Role.SPLIT_HOST: placement_pb2.ASSIGNMENT_ROLE_SPLIT_HOST,
    Role.SPLIT_WORKER: placement_pb2.ASSIGNMENT_ROLE_SPLIT_WORKER,
    Role.STANDBY: placement_pb2.ASSIGNMENT_ROLE_STANDBY,
    Role.WAITING: placement_pb2.ASSIGNMENT_ROLE_WAITING,
    Role.DOES_NOT_FIT: placement_pb2.ASSIGNMENT_ROLE_DOES_NOT_FIT,
    Role.FETCHING: placement_pb2.ASSIGNMENT_ROLE_FETCHING,
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


class PublishedPool(NamedTuple):
    """The pool fields of our gossip record as last published."""

    adopted: list[gossip_pb2.Adoption]
    seen: list[gossip_pb2.SeenModel]
    fetching: list[gossip_pb2.FileTransfer]
    wanted: tuple[str, ...]


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
        self.pool = load_pool(tuple(m.name for m in config.models), config.home)
        downloadable = downloadable_models(config.model_store)
        self._pool_settings = PoolSettings(
            retire_after_cold_s=config.retire_after_s, downloadable=frozenset(downloadable)
        )
        self.fetcher = ModelFetcher(mesh, config.model_store, downloadable, self._soon, self._fetch_failed)
        self._published_pool: PublishedPool | None = None
        self._transfers_published_s = 0.0
        self._decision: PoolDecision | None = None
        self.nodes: list[MeshNode] = []
        # By model file: the draft paired with it (services/runner/speculation_pairing.py).
        self._drafts: dict[str, str] = {}
        configured = [m.path for m in config.models]
        self._pairing = DraftPairing(
            config.speculation, config.draft, config.no_draft, config.model_store, configured
        )

    def _soon(self) -> None:
        if self._view is not None and (self._replan_pending is None or self._replan_pending.done()):
            self._replan_pending = asyncio.ensure_future(self._replan_soon())

    def _fetch_failed(self, model: str, error: str) -> None:
        logger.warning("fetching a model file failed", extra={"model": model, "reason": error})
        self.pool.note(time.time(), model, "fetch_failed", error)
        self._soon()

    async def on_view(self, view: gossip_pb2.MeshView) -> None:
        self._view = view
        if self._config.client:
            return
        if not self.plan.node_id:  # the first plan at once: a solo model should not wait
            await self._replan()
        else:
            self._soon()

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(POOL_TICK_S)
            if self._view is not None and not self._config.client:
                await self._replan()

    async def _replan_soon(self) -> None:
        await asyncio.sleep(PLAN_DEBOUNCE_S)
        await self._replan()

    def _pool_pass(self, view: gossip_pb2.MeshView, local_id: str) -> list[MeshNode]:
        """Apply the pool rules to our own row; the view as the planner should see it."""
        now = time.time()
        files = configured_files(self._config)
        nodes = self.pool.overlay(with_local_files(mesh_nodes_from_view(view), local_id, files), local_id)
        decision = plan_pool(nodes, local_id, now, self._pool_settings, self.pool.cold_since)
        changed = self.pool.apply(decision, local_id, now)
        if changed:
            for event in changed:
                logger.info("pool: %s %s", event.kind, event.model, extra={"reason": event.reason})
            nodes = self.pool.overlay(nodes, local_id)
            decision = plan_pool(nodes, local_id, now, self._pool_settings, self.pool.cold_since)
            save_pool(self.pool, self._config.home)
        self.pool.update_seen(nodes, now, self._pool_settings.lost_model_memory_s)
        self._decision = decision
        return nodes

    async def _replan(self) -> None:
        view = self._view
        local = next((n for n in view.nodes if n.node_id == view.local_node_id), None) if view else None
        if view is None or local is None:
            return
        nodes = self._pool_pass(view, local.node_id)
        self.nodes = nodes
        me = next(n for n in nodes if n.node_id == local.node_id)
        needed = {m: self.pool.seen[m].sha256 if m in self.pool.seen else "" for m in self.pool.adopted}
        self.fetcher.follow(
            nodes, local.node_id, {m: s for m, s in needed.items() if m not in me.models_on_disk}
        )
        await self._publish_pool()
        # --split arrives in the local record (force_split), like every other input to the plan.
        fresh = plan_for_node(nodes, local.node_id)
        assignments = fetching_assignments(fresh, self.pool, me.models_on_disk, self.fetcher.transfers)
        if self.plan.node_id and not assignment_changed(self._assignments, assignments):
            # Same processes; keep the current assignments (and the host's --rpc order) but show
            # the latest reasons and roles.
            latest = {a.model: a for a in assignments}
            assignments = [
                replace(a, reasons=latest[a.model].reasons, role=latest[a.model].role)
                for a in self._assignments
                if a.model in latest
            ]
            assignments += [a for a in latest.values() if a.model not in {b.model for b in assignments}]
            self._assignments = assignments
            await self._publish_plan(local)
            await self._reconcile(view)
            return
        self._assignments = assignments
        for a in assignments:
            logger.info("plan: %s → %s", a.model, a.role.value, extra={"reason": a.reasons[0]})
        await self._publish_plan(local)
        await self._reconcile(view)

    async def _publish_pool(self) -> None:
        """Our adoptions, what we saw served, and transfer progress (at most once a second) in gossip."""
        now = time.monotonic()
        published = self._published_pool
        transfers = [self.fetcher.transfers[m] for m in sorted(self.fetcher.transfers)]
        if published is not None and now - self._transfers_published_s < TRANSFER_PUBLISH_MIN_S:
            transfers = published.fetching  # progress waits for its second; the rest goes now
        state = PublishedPool(
            adopted_records(self.pool), seen_records(self.pool), transfers, self.pool.wanted
        )
        if state == published:
            return
        record = gossip_pb2.NodeRecord(
            adopted=state.adopted, models_seen=state.seen, fetching=state.fetching, models_wanted=state.wanted
        )
        try:
            await self._gossip.UpdateLocal(
                gossip_pb2.UpdateLocalRequest(
                    record=record, fields=["adopted", "models_seen", "fetching", "models_wanted"]
                ),
                timeout=GOSSIP_UPDATE_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            logger.info("gossip not reachable to publish the pool (%s)", error.code().name)
            return
        if published is None or state.fetching != published.fetching:
            self._transfers_published_s = now
        self._published_pool = state

    async def _pair_drafts(self, plan: placement_pb2.Plan) -> None:
        """The draft for each model this node runs llama-server for (hashes vocabularies in a thread,
        once per file), shown in the plan; _reconcile passes them to the runner."""
        serving = (placement_pb2.ASSIGNMENT_ROLE_SOLO, placement_pb2.ASSIGNMENT_ROLE_SPLIT_HOST)
        paths = [a.model_path for a in plan.assignments if a.role in serving and a.model_path]
        self._drafts = await self._pairing.drafts(paths, catalog_drafts(paths, self._config.model_store))
        for a in plan.assignments:
            if a.role in serving:
                a.speculation = requested_label(self._config.speculation, self._drafts.get(a.model_path, ""))

    async def _publish_plan(self, local: gossip_pb2.NodeRecord) -> None:
        plan = plan_message(self.plan.generation + 1, local.node_id, local.vram_bytes, self._assignments)
        await self._pair_drafts(plan)
        if self._decision is not None:
            pools, events = pool_messages(self._decision, list(self.pool.events))
            plan.pool.extend(pools)
            plan.events.extend(events)
            plan.standby_reason = self._decision.standby_reason
            plan.standby = bool(self._decision.standby_reason)
        comparable = placement_pb2.Plan()
        comparable.CopyFrom(plan)
        comparable.generation = self.plan.generation
        if comparable == self.plan:
            return
        self.plan = plan
        async with self.plan_changed:
            self.plan_changed.notify_all()

    async def _reconcile(self, view: gossip_pb2.MeshView) -> None:
        """Desired processes from the plan and what the split workers report; apply when they differ."""
        endpoints = await self._split_endpoints(view)
        budgets = memory_budgets(self._assignments, self.plan.node_id, self.plan.vram_bytes)
        desired = desired_processes(
            self._assignments,
            self._config.context_size,
            endpoints,
            budgets,
            self._config.device,
            self._config.parallel_slots,
            self._config.max_output_tokens,
            self._config.threads,
        )
        desired = with_speculation(desired, self._config.speculation, self._drafts)
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

    def _known_models(self) -> set[str]:
        """Models this node could load: on some node's disk, seen served, or in the catalog."""
        known = {m for n in self.nodes for m in n.models_on_disk} | set(self.pool.seen)
        return known | set(self._pool_settings.downloadable) | {m.name for m in self._config.models}

    async def load(self, model: str) -> str:
        if self._config.client:
            raise PoolRequestError(grpc.StatusCode.FAILED_PRECONDITION, "a client node serves no models")
        if model not in self._known_models():
            known = ", ".join(sorted(self._known_models())) or "none"
            raise PoolRequestError(grpc.StatusCode.NOT_FOUND, f"no node has {model!r}; models known: {known}")
        message = self.pool.load(model, time.time())
        save_pool(self.pool, self._config.home)
        await self._replan()
        return message

    async def drop(self, model: str, force: bool) -> str:
        if model not in self.pool.wanted:
            raise PoolRequestError(grpc.StatusCode.NOT_FOUND, f"this node does not serve {model!r}")
        part = [n for n in self.nodes if not (n.is_client or n.leaving)]
        others = [s for s in servers_of(part, model) if s != self.plan.node_id]
        if not others and not force:
            raise PoolRequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this node is the last server of {model} in the mesh: dropping it makes {model} "
                "unavailable everywhere and standby nodes will not take it up; --force drops it anyway",
            )
        message = self.pool.drop(model, time.time(), last_in_mesh=not others)
        save_pool(self.pool, self._config.home)
        await self._replan()
        return message

    async def on_gossip_lost(self) -> None:
        """A restarted gossip service starts from a fresh record: report served models again."""
        self._served = None
        self._published_pool = None

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
        await run_until_signalled(server, watch_gossip, watch_runner, controller.tick())
    finally:
        controller.fetcher.close()
        await gossip_channel.close()
        await runner_channel.close()
        await mesh_channel.close()
