"""The node's other services as the gateway sees them: channels, reachability, and the node identity.

Used by the admin surfaces only (`meshctl status`, `/api/status`); the request path never calls these.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import grpc

from services.node.grpc_link import open_channel
from services.node.home import NodeHome
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc

PEER_SERVICES = ("mesh", "gossip", "placement", "runner")
# A local service on a Unix socket answers in well under a millisecond; anything slower is down.
PROBE_TIMEOUT_S = 0.5
# Every /api/status and every new console event stream asks; probing at most this often keeps it cheap.
PROBE_CACHE_S = 1.0
IDENTITY_TIMEOUT_S = 1.0

_logger = logging.getLogger("gateway.peers")


@dataclass(frozen=True)
class ServiceHealth:
    name: str
    reachable: bool
    detail: str


@dataclass(frozen=True)
class NodeIdentity:
    node_id: str
    short_id: str
    name: str


class PeerServices:
    """One channel per sibling service, opened once; gRPC reconnects them as the services restart."""

    def __init__(self, home: NodeHome, services: tuple[str, ...] = PEER_SERVICES) -> None:
        self._home = home
        self._services = services
        self.channels: dict[str, grpc.aio.Channel] = {name: open_channel(home, name) for name in services}
        self._health: tuple[ServiceHealth, ...] = ()
        self._health_at = 0.0
        self._identity: NodeIdentity | None = None

    async def _probe(self, name: str) -> ServiceHealth:
        if not self._home.socket(name).exists():
            return ServiceHealth(name, False, "not running (no socket)")
        channel = self.channels[name]
        if channel.get_state(try_to_connect=True) == grpc.ChannelConnectivity.READY:
            return ServiceHealth(name, True, "ok")
        try:
            await asyncio.wait_for(channel.channel_ready(), PROBE_TIMEOUT_S)
        except TimeoutError:
            return ServiceHealth(name, False, f"not answering within {PROBE_TIMEOUT_S:g} s")
        return ServiceHealth(name, True, "ok")

    async def health(self) -> tuple[ServiceHealth, ...]:
        if time.monotonic() - self._health_at > PROBE_CACHE_S:
            self._health = tuple(await asyncio.gather(*(self._probe(name) for name in self._services)))
            self._health_at = time.monotonic()
        return self._health

    async def identity(self) -> NodeIdentity | None:
        """From the mesh service, once; None while it is down (the status shows that, nothing fails)."""
        if self._identity is not None:
            return self._identity
        stub = mesh_pb2_grpc.MeshStub(self.channels["mesh"])
        try:
            reply = await stub.GetIdentity(mesh_pb2.GetIdentityRequest(), timeout=IDENTITY_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            _logger.debug("mesh identity unavailable: %s", exc.code().name)
            return None
        self._identity = NodeIdentity(reply.node_id, reply.short_id, reply.name)
        return self._identity

    async def invite_token(self) -> str:
        """Asked each time: rotate-key changes it. Empty while the mesh service is down."""
        stub = mesh_pb2_grpc.MeshStub(self.channels["mesh"])
        try:
            reply = await stub.GetInvite(mesh_pb2.GetInviteRequest(), timeout=IDENTITY_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            return ""
        return reply.token

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self.channels.values()))
