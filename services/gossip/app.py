"""The gossip service process: owns this node's record and serves the mesh view to the other services."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from services import __version__
from services.gossip.model_hashes import content_hash
from services.node.config import NodeConfig
from services.node.grpc_link import open_channel, run_until_signalled, start_server
from services.node.hardware import detect_vram_bytes, effective_vram_bytes
from services.proto.meshllm.gossip.v1 import gossip_pb2, gossip_pb2_grpc
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc

logger = logging.getLogger("gossip")

IDENTITY_RETRY_S = 0.1
UPDATABLE_FIELDS = frozenset(
    {"served", "models_on_disk", "models_wanted", "vram_bytes", "request_rate_per_min", "rtt_ms"}
)


class LocalRecord:
    """This node's record; every change bumps the version and wakes watchers."""

    def __init__(self, record: gossip_pb2.NodeRecord) -> None:
        self._record = record
        self.changed = asyncio.Condition()

    @property
    def record(self) -> gossip_pb2.NodeRecord:
        return self._record

    async def update(self, patch: gossip_pb2.NodeRecord, fields: list[str]) -> gossip_pb2.NodeRecord:
        unknown = set(fields) - UPDATABLE_FIELDS
        if unknown:
            raise ValueError(f"fields not updatable: {sorted(unknown)}")
        fresh = gossip_pb2.NodeRecord()
        fresh.CopyFrom(self._record)
        for name in fields:
            fresh.ClearField(name)
            value = getattr(patch, name)
            if name in ("request_rate_per_min", "rtt_ms"):
                getattr(fresh, name).update(value)
            elif name == "vram_bytes":
                fresh.vram_bytes = value
            else:
                getattr(fresh, name).extend(value)
        if fresh == self._record:
            return self._record
        fresh.version = self._record.version + 1
        fresh.updated_unix_s = time.time()
        self._record = fresh
        async with self.changed:
            self.changed.notify_all()
        return fresh


class GossipServicer(gossip_pb2_grpc.GossipServicer):
    def __init__(self, local: LocalRecord) -> None:
        self._local = local

    def _view(self) -> gossip_pb2.MeshView:
        return gossip_pb2.MeshView(local_node_id=self._local.record.node_id, nodes=[self._local.record])

    async def GetView(self, request: gossip_pb2.GetViewRequest, context: grpc.aio.ServicerContext) -> gossip_pb2.MeshView:
        return self._view()

    async def Watch(self, request: gossip_pb2.WatchRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[gossip_pb2.MeshView]:
        while True:
            yield self._view()
            async with self._local.changed:
                await self._local.changed.wait()

    async def UpdateLocal(self, request: gossip_pb2.UpdateLocalRequest, context: grpc.aio.ServicerContext) -> gossip_pb2.NodeRecord:
        try:
            return await self._local.update(request.record, list(request.fields))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise


async def fetch_identity(config: NodeConfig) -> mesh_pb2.Identity:
    """Gossip starts alongside mesh: wait for it rather than fail."""
    async with open_channel(config.node_home, "mesh") as channel:
        stub = mesh_pb2_grpc.MeshStub(channel)
        while True:
            try:
                return await stub.GetIdentity(mesh_pb2.GetIdentityRequest(), wait_for_ready=True, timeout=5)
            except grpc.aio.AioRpcError:
                await asyncio.sleep(IDENTITY_RETRY_S)


def initial_record(config: NodeConfig, identity: mesh_pb2.Identity) -> gossip_pb2.NodeRecord:
    vram = 0 if config.client else effective_vram_bytes(detect_vram_bytes(), config.max_vram_gb)
    return gossip_pb2.NodeRecord(
        node_id=identity.node_id,
        name=identity.name,
        version=1,
        software_version=__version__,
        addresses=list(identity.addresses),
        is_client=config.client,
        region=config.region,
        vram_bytes=vram,
        models_wanted=[] if config.client else [m.name for m in config.models],
        updated_unix_s=time.time(),
    )


async def publish_models_on_disk(config: NodeConfig, local: LocalRecord) -> None:
    """Hashing a multi-GB file takes a while: publish the record first, the hashes when known."""
    files = []
    for model in config.models:
        path = Path(model.path)
        digest = await asyncio.to_thread(content_hash, path)
        files.append(gossip_pb2.ModelFile(name=model.name, path=model.path, bytes=path.stat().st_size, sha256=digest))
    await local.update(gossip_pb2.NodeRecord(models_on_disk=files), ["models_on_disk"])


async def run_gossip(config: NodeConfig) -> None:
    identity = await fetch_identity(config)
    local = LocalRecord(initial_record(config, identity))
    servicer = GossipServicer(local)
    server = await start_server(
        config.node_home, "gossip", lambda s: gossip_pb2_grpc.add_GossipServicer_to_server(servicer, s)
    )
    logger.info("local record ready", extra={"node_id": identity.node_id, "vram_bytes": local.record.vram_bytes})
    await run_until_signalled(server, publish_models_on_disk(config, local))
