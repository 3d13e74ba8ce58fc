"""The mesh service process: identity and membership now; QUIC peers plug in behind the same contract."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator

import grpc

from services.mesh.identity import NodeIdentity, load_or_create_identity
from services.mesh.invite import InviteToken
from services.mesh.membership import MeshMembership, load_or_create_membership
from services.node.config import NodeConfig
from services.node.grpc_link import run_until_signalled, start_server
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc

logger = logging.getLogger("mesh")


class MeshServicer(mesh_pb2_grpc.MeshServicer):
    def __init__(self, config: NodeConfig, identity: NodeIdentity, membership: MeshMembership) -> None:
        self._config = config
        self._identity = identity
        self._membership = membership
        self._peers: dict[str, mesh_pb2.Peer] = {}
        self._peers_changed = asyncio.Condition()

    def _addresses(self) -> tuple[str, ...]:
        return ()

    async def GetIdentity(self, request: mesh_pb2.GetIdentityRequest, context: grpc.aio.ServicerContext) -> mesh_pb2.Identity:
        return mesh_pb2.Identity(
            node_id=self._identity.node_id,
            short_id=self._identity.short_id,
            public_key=self._identity.public_bytes,
            name=self._config.name or socket.gethostname(),
            addresses=list(self._addresses()),
        )

    def _invite(self) -> mesh_pb2.Invite:
        token = self._membership.invite(self._addresses())
        return mesh_pb2.Invite(mesh_id=token.mesh_id_hex, token=token.encode(), mesh_name=self._membership.name)

    async def GetInvite(self, request: mesh_pb2.GetInviteRequest, context: grpc.aio.ServicerContext) -> mesh_pb2.Invite:
        return self._invite()

    async def RotateSecret(self, request: mesh_pb2.RotateSecretRequest, context: grpc.aio.ServicerContext) -> mesh_pb2.Invite:
        fresh = InviteToken.new_mesh()
        self._membership = MeshMembership(self._membership.mesh_id, fresh.secret, self._membership.name)
        self._membership.save(self._config.node_home.mesh_config)
        logger.info("mesh secret rotated; old invite tokens no longer admit new nodes")
        return self._invite()

    def _peer_list(self) -> mesh_pb2.ListPeersResponse:
        return mesh_pb2.ListPeersResponse(peers=sorted(self._peers.values(), key=lambda p: p.node_id))

    async def ListPeers(self, request: mesh_pb2.ListPeersRequest, context: grpc.aio.ServicerContext) -> mesh_pb2.ListPeersResponse:
        return self._peer_list()

    async def WatchPeers(self, request: mesh_pb2.WatchPeersRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[mesh_pb2.ListPeersResponse]:
        while True:
            yield self._peer_list()
            async with self._peers_changed:
                await self._peers_changed.wait()

    async def SendGossip(self, request: mesh_pb2.GossipMessage, context: grpc.aio.ServicerContext) -> mesh_pb2.SendGossipResponse:
        if request.peer_node_id not in self._peers:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no connected peer {request.peer_node_id[:8]}")
        return mesh_pb2.SendGossipResponse()

    async def ReceiveGossip(self, request: mesh_pb2.ReceiveGossipRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[mesh_pb2.GossipMessage]:
        # No peers yet: the stream stays open so the gossip service need not poll.
        await asyncio.Event().wait()
        yield mesh_pb2.GossipMessage()

    async def OpenTunnel(self, request: mesh_pb2.OpenTunnelRequest, context: grpc.aio.ServicerContext) -> mesh_pb2.Tunnel:
        await context.abort(grpc.StatusCode.NOT_FOUND, f"no connected peer {request.peer_node_id[:8]}")
        return mesh_pb2.Tunnel()


async def run_mesh(config: NodeConfig) -> None:
    home = config.node_home
    home.ensure()
    identity = await asyncio.to_thread(load_or_create_identity, home.identity_key)
    join = InviteToken.decode(config.join_tokens[0]) if config.join_tokens else None
    membership = load_or_create_membership(home.mesh_config, join)
    servicer = MeshServicer(config, identity, membership)
    server = await start_server(home, "mesh", lambda s: mesh_pb2_grpc.add_MeshServicer_to_server(servicer, s))
    logger.info("node %s ready", identity.short_id, extra={"node_id": identity.node_id})
    await run_until_signalled(server)
