"""The gossip service process: owns this node's record, spreads it over the mesh, serves the view.

Transport is the mesh service (SendGossip / ReceiveGossip); the decisions are the sans-IO
GossipProtocol. Connected peers come from the mesh's WatchPeers: a peer the mesh drops (silent or
said goodbye) is tombstoned here and the tombstone is pushed, so it leaves every view quickly.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from services import __version__
from services.gossip.dissemination import GOSSIP_ROUND_S, GossipProtocol, Outgoing
from services.gossip.model_hashes import content_hash
from services.gossip.model_store import MODEL_STORE_RESCAN_S, StoreFile, advertised_files, scan_store
from services.gossip.state import GossipState
from services.gossip.traffic import KIND_MALFORMED, GossipTraffic
from services.gossip.wire import GossipDecodeError
from services.node.config import NodeConfig
from services.node.grpc_link import follow_stream, open_channel, run_until_signalled, start_server
from services.node.hardware import device_vram_bytes, effective_vram_bytes
from services.proto.meshllm.gossip.v1 import gossip_pb2, gossip_pb2_grpc
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc

logger = logging.getLogger("gossip")

IDENTITY_RETRY_S = 0.1
SEND_TIMEOUT_S = 2.0
GOODBYE_FLUSH_S = 0.3
# RTTs travel in our record; republish only when one moves this much, not on every ping.
RTT_REPUBLISH_MIN_DELTA_MS = 5.0
RTT_REPUBLISH_MIN_RATIO = 0.3
UPDATABLE_FIELDS = frozenset(
    {
        "served",
        "models_on_disk",
        "models_wanted",
        "vram_bytes",
        "request_rate_per_min",
        "rtt_ms",
        "addresses",
        "adopted",
        "models_seen",
        "fetching",
        "metrics",  # the gateway's MetricsSummary (services/gateway/metrics_summary.py)
    }
)


def patched_record(
    base: gossip_pb2.NodeRecord, patch: gossip_pb2.NodeRecord, fields: list[str]
) -> gossip_pb2.NodeRecord:
    unknown = set(fields) - UPDATABLE_FIELDS
    if unknown:
        raise ValueError(f"fields not updatable: {sorted(unknown)}")
    fresh = gossip_pb2.NodeRecord()
    fresh.CopyFrom(base)
    for name in fields:
        fresh.ClearField(name)
        value = getattr(patch, name)
        if name in ("request_rate_per_min", "rtt_ms"):
            getattr(fresh, name).update(value)
        elif name == "vram_bytes":
            fresh.vram_bytes = value
        elif name == "metrics":
            fresh.metrics.CopyFrom(value)
        else:
            getattr(fresh, name).extend(value)
    return fresh


MIN_RTT_MS = 0.1


def rtts_moved(old: dict[str, float], new: dict[str, float]) -> bool:
    if set(old) != set(new):
        return True
    for peer, rtt in new.items():
        delta = abs(rtt - old[peer])
        if delta >= RTT_REPUBLISH_MIN_DELTA_MS and delta >= RTT_REPUBLISH_MIN_RATIO * max(old[peer], 1.0):
            return True
    return False


class GossipNode:
    """The protocol, its transport through the mesh service, and the watchers of the view."""

    def __init__(self, protocol: GossipProtocol, mesh: mesh_pb2_grpc.MeshStub) -> None:
        self.protocol = protocol
        self.mesh = mesh
        self.connected: list[str] = []
        self.view_changed = asyncio.Condition()
        self.decode_errors = 0
        self.traffic = GossipTraffic()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def state(self) -> GossipState:
        return self.protocol.state

    async def notify(self) -> None:
        async with self.view_changed:
            self.view_changed.notify_all()

    def send(self, outgoing: list[Outgoing]) -> None:
        for item in outgoing:
            task = asyncio.ensure_future(self._send_one(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send_one(self, item: Outgoing) -> None:
        try:
            await self.mesh.SendGossip(
                mesh_pb2.GossipMessage(peer_node_id=item.peer_id, payload=item.payload),
                timeout=SEND_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            logger.debug("gossip send failed", extra={"peer": item.peer_id[:8], "code": error.code().name})
            return
        self.traffic.sent(item.kind, len(item.payload))

    async def update_local(self, patch: gossip_pb2.NodeRecord, fields: list[str]) -> gossip_pb2.NodeRecord:
        current = self.state.local
        fresh = patched_record(current, patch, fields)
        if fresh == current:
            return current
        self.send(self.protocol.on_local_change(fresh, time.time(), self.connected))
        await self.notify()
        return self.state.local

    async def on_gossip(self, message: mesh_pb2.GossipMessage) -> None:
        try:
            reaction = self.protocol.receive(
                message.peer_node_id, message.payload, time.time(), self.connected
            )
        except GossipDecodeError as exc:
            self.decode_errors += 1
            self.traffic.received(KIND_MALFORMED, len(message.payload))
            logger.warning(
                "dropped malformed gossip", extra={"peer": message.peer_node_id[:8], "reason": str(exc)}
            )
            return
        self.traffic.received(reaction.kind, len(message.payload))
        self.send(reaction.outgoing)
        if reaction.merge.view_changed:
            await self.notify()

    async def on_peers(self, peers: mesh_pb2.ListPeersResponse) -> None:
        now = time.time()
        current = [p.node_id for p in peers.peers]
        joined = [p for p in current if p not in self.connected]
        left = [p for p in self.connected if p not in current]
        self.connected = current
        for peer in current:
            self.state.mark_heard(peer, now)
        for peer in left:
            self.send(self.protocol.on_peer_left(peer, now, current))
        if joined:
            self.send(self.protocol.on_peers_joined(joined))
            self.send(self.protocol.announce(joined))
            await self._refresh_addresses()
        # A link reports 0 until its first pong: unmeasured is not "0 ms away" (placement would
        # take a far peer as the nearest split worker). A measured loopback RTT rounds to 0.1.
        rtts = {p.node_id: max(round(p.rtt_ms, 1), MIN_RTT_MS) for p in peers.peers if p.rtt_ms > 0}
        if rtts_moved(dict(self.state.local.rtt_ms), rtts):
            await self.update_local(gossip_pb2.NodeRecord(rtt_ms=rtts), ["rtt_ms"])
        elif left or joined:
            await self.notify()

    async def _refresh_addresses(self) -> None:
        """The mesh learns addresses after start (how peers see us through a NAT): publish them, so a
        peer that lost us redials where we can be reached."""
        try:
            identity = await self.mesh.GetIdentity(mesh_pb2.GetIdentityRequest(), timeout=SEND_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            return
        if list(identity.addresses) != list(self.state.local.addresses):
            patch = gossip_pb2.NodeRecord(addresses=list(identity.addresses))
            await self.update_local(patch, ["addresses"])

    async def rounds(self) -> None:
        while True:
            await asyncio.sleep(GOSSIP_ROUND_S)
            before = self.state.digest()
            self.send(self.protocol.on_round(time.time(), self.connected))
            if self.state.digest() != before:
                await self.notify()

    async def goodbye(self) -> None:
        if self.connected:
            outgoing = self.protocol.on_goodbye(time.time(), self.connected)
            await asyncio.gather(*(self._send_one(item) for item in outgoing), return_exceptions=True)


class GossipServicer(gossip_pb2_grpc.GossipServicer):
    def __init__(self, node: GossipNode) -> None:
        self._node = node

    async def GetView(
        self, request: gossip_pb2.GetViewRequest, context: grpc.aio.ServicerContext
    ) -> gossip_pb2.MeshView:
        return self._node.state.mesh_view()

    async def Watch(
        self, request: gossip_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gossip_pb2.MeshView]:
        while True:
            yield self._node.state.mesh_view()
            async with self._node.view_changed:
                await self._node.view_changed.wait()

    async def UpdateLocal(
        self, request: gossip_pb2.UpdateLocalRequest, context: grpc.aio.ServicerContext
    ) -> gossip_pb2.NodeRecord:
        try:
            return await self._node.update_local(request.record, list(request.fields))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise

    async def GetStats(
        self, request: gossip_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> gossip_pb2.GossipStats:
        return self._node.traffic.stats()


async def fetch_identity(mesh: mesh_pb2_grpc.MeshStub) -> mesh_pb2.Identity:
    """Gossip starts alongside mesh: wait for it rather than fail."""
    while True:
        try:
            return await mesh.GetIdentity(mesh_pb2.GetIdentityRequest(), wait_for_ready=True, timeout=5)
        except grpc.aio.AioRpcError:
            await asyncio.sleep(IDENTITY_RETRY_S)


def initial_record(config: NodeConfig, identity: mesh_pb2.Identity) -> gossip_pb2.NodeRecord:
    vram = 0
    if not config.client:
        detected = device_vram_bytes(config.device, config.llama_bin_dir)
        vram = effective_vram_bytes(detected, config.max_vram_gb)
    return gossip_pb2.NodeRecord(
        node_id=identity.node_id,
        name=identity.name,
        # A restarted gossip service must out-version what the mesh remembers of us.
        version=int(time.time() * 1000),
        software_version=__version__,
        addresses=list(identity.addresses),
        is_client=config.client,
        region=config.region,
        vram_bytes=vram,
        models_wanted=[] if config.client else [m.name for m in config.models],
        force_split=config.split and not config.client,
        publishing=config.publish and bool(config.relays),
        updated_unix_s=time.time(),
    )


async def publish_models_on_disk(config: NodeConfig, node: GossipNode) -> None:
    """Hashing a multi-GB file takes a while: publish the record first, the hashes when known; then
    follow the model store, so a file fetched from a peer (or deleted) shows within a rescan."""
    if config.client:
        return
    hashes: dict[StoreFile, str] = {}
    published: list[gossip_pb2.ModelFile] | None = None
    while True:
        store_paths = await asyncio.to_thread(scan_store, config.model_store)
        listing = await asyncio.to_thread(advertised_files, config.models, store_paths)
        files = []
        for item in listing:
            if item not in hashes:
                try:
                    hashes[item] = await asyncio.to_thread(content_hash, Path(item.path))
                except OSError as exc:
                    logger.warning("cannot hash model file", extra={"path": item.path, "reason": str(exc)})
                    continue
            files.append(
                gossip_pb2.ModelFile(name=item.name, path=item.path, bytes=item.bytes, sha256=hashes[item])
            )
        if files != published:
            await node.update_local(gossip_pb2.NodeRecord(models_on_disk=files), ["models_on_disk"])
            published = files
        await asyncio.sleep(MODEL_STORE_RESCAN_S)


async def run_gossip(config: NodeConfig) -> None:
    channel = open_channel(config.node_home, "mesh")
    mesh = mesh_pb2_grpc.MeshStub(channel)
    identity = await fetch_identity(mesh)
    state = GossipState(initial_record(config, identity), time.time())
    node = GossipNode(GossipProtocol(state, random.Random()), mesh)
    server = await start_server(
        config.node_home,
        "gossip",
        lambda s: gossip_pb2_grpc.add_GossipServicer_to_server(GossipServicer(node), s),
    )
    logger.info("gossip ready", extra={"node_id": identity.node_id, "vram_bytes": state.local.vram_bytes})
    peers = follow_stream(
        "mesh peers", lambda: mesh.WatchPeers(mesh_pb2.WatchPeersRequest()), node.on_peers, logger
    )
    inbox = follow_stream(
        "mesh gossip", lambda: mesh.ReceiveGossip(mesh_pb2.ReceiveGossipRequest()), node.on_gossip, logger
    )
    try:
        await run_until_signalled(server, publish_models_on_disk(config, node), peers, inbox, node.rounds())
    finally:
        await node.goodbye()
        await asyncio.sleep(GOODBYE_FLUSH_S)
        await channel.close()
