"""The mesh service process: identity, admission, QUIC peers, gossip transport and tunnels.

Its gRPC contract (protos/meshllm/mesh/v1/mesh.proto) is all the other services see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator

import grpc

from services.mesh.addresses import OwnAddresses, bind_host, dial_host, interface_hosts
from services.mesh.endpoint import MeshEndpoint
from services.mesh.fast_path import FastPathListener
from services.mesh.file_fetch import FileFetcher
from services.mesh.file_pacing import TunnelActivity
from services.mesh.file_source import REFRESH_TIMEOUT_S, FileSource
from services.mesh.handshake import Credentials
from services.mesh.identity import NodeIdentity
from services.mesh.invite import InviteToken
from services.mesh.link import PeerLink
from services.mesh.membership import MeshMembership, load_or_create_mesh_files
from services.mesh.reconnect import PeerKeeper
from services.mesh.rpc_tunnel import LocalRpcServer, RpcTunnels
from services.mesh.tunnels import TunnelListeners, splice_to_local_socket
from services.node.config import NodeConfig
from services.node.grpc_link import follow_stream, open_channel, run_until_signalled, start_server
from services.node.home_files import write_home_file
from services.proto.meshllm.gossip.v1 import gossip_pb2, gossip_pb2_grpc
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc, wire_pb2
from services.proto.meshllm.runner.v1 import runner_pb2, runner_pb2_grpc

logger = logging.getLogger("mesh")

MAX_INVITE_ADDRESSES = 8  # InviteToken.MAX_ADDRESSES
# Interfaces come and go (Wi-Fi, VPN, DHCP): re-read them this often for the addresses we advertise.
INTERFACE_REFRESH_S = 30.0
PEER_WATCH_REFRESH_S = 2.0
GOSSIP_INBOX_MAX = 1024
KNOWN_PEERS_FILE = "peers.json"
# An operator's cap on the bytes/s this node sends of model files to each peer (a slow uplink;
# tests use it to watch a transfer mid-way). Unset or 0: full speed unless inference is running.
FILE_SEND_CAP_ENV = "MESH_LLM_FILE_SEND_BYTES_PER_S"


def file_send_cap_bytes_per_s() -> float:
    try:
        return max(0.0, float(os.environ.get(FILE_SEND_CAP_ENV) or 0))
    except ValueError:
        logger.warning("ignoring a malformed %s", FILE_SEND_CAP_ENV)
        return 0.0


class MeshNode:
    """The endpoint plus what the gRPC contract needs: peer change notifications, gossip inbox, tunnels."""

    def __init__(
        self, config: NodeConfig, identity: NodeIdentity, membership: MeshMembership, bootstrap: list[str]
    ) -> None:
        self.config = config
        self.identity = identity
        self.membership = membership
        self.bootstrap = bootstrap
        self.peers_changed = asyncio.Condition()
        self.gossip_subscribers: set[asyncio.Queue[mesh_pb2.GossipMessage]] = set()
        credentials = Credentials(
            identity,
            membership.mesh_id,
            membership.secret,
            config.name or socket.gethostname(),
            (),
            config.client,
        )
        # Clients never run an rpc-server, so they never need the RPC fast path's listener.
        fast_path = None if config.client else FastPathListener(identity, config.node_home.run)
        dial_from = dial_host(config.bind_ip)
        self.rpc = RpcTunnels(fast_path, dial_from)
        # Open inference tunnels per peer: file bytes to a peer yield to them (file_pacing.py).
        self.activity = TunnelActivity()
        self.files = FileSource(fast_path, self.activity, file_send_cap_bytes_per_s())
        self.endpoint = MeshEndpoint(
            credentials,
            {
                wire_pb2.STREAM_KIND_HTTP: self.activity.counting(self._serve_http_stream),
                wire_pb2.STREAM_KIND_RPC: self.activity.counting(self.rpc.serve_stream),
                wire_pb2.STREAM_KIND_FILE: self.files.serve_stream,
            },
            self._on_frame,
            self._peers_changed,
            self._on_observed,
        )
        self.keeper = PeerKeeper(self.endpoint, bootstrap, config.home / KNOWN_PEERS_FILE)
        self.own: OwnAddresses | None = None
        self.tunnels = TunnelListeners(
            self.endpoint.current_link, self.rpc.carry_from_llama_server, self.activity, self.rpc.arm
        )
        self.fetcher = FileFetcher(self.endpoint.links.get, identity.node_id, dial_from=dial_from)
        self._known_links: set[str] = set()
        self._notifications: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        host = bind_host(self.config.bind_ip)
        port = await self.endpoint.listen(host, self.config.bind_port or self._previous_port())
        self.own = OwnAddresses(host, port, self.config.advertise, await asyncio.to_thread(interface_hosts))
        self._advertise()
        write_home_file(self.config.node_home.run / "mesh-port", str(port).encode())
        if self.rpc.fast_path is not None:
            # Same number as the QUIC port only when the user pinned it (one number to forward on
            # a router); otherwise any free TCP port, so the fast path never takes a TCP port that
            # happens to share the ephemeral QUIC port's number (another service's, say).
            ours = frozenset((self.config.api_port, self.config.console_port))
            await self.rpc.fast_path.start(host, port if self.config.bind_port else 0, ours)
        logger.info("listening", extra={"addresses": ",".join(self.endpoint.credentials.addresses)})

    def _advertise(self) -> None:
        assert self.own is not None, "listening"
        self.endpoint.credentials.addresses = self.own.current
        logger.info("advertising", extra={"addresses": ",".join(self.own.current)})

    def _on_observed(self, host: str) -> None:
        """A peer saw our packets come from `host`: behind a NAT, our public side (STUN-like)."""
        if self.own is not None and self.own.observed(host):
            self._advertise()

    async def follow_interfaces(self) -> None:
        while True:
            await asyncio.sleep(INTERFACE_REFRESH_S)
            hosts = await asyncio.to_thread(interface_hosts)
            if self.own is not None and self.own.interfaces(hosts):
                self._advertise()

    def _previous_port(self) -> int:
        """Come back on the same UDP port after a restart, so peers that remember us can redial."""
        with contextlib.suppress(OSError, ValueError):
            return int((self.config.node_home.run / "mesh-port").read_text())
        return 0

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.endpoint.credentials.addresses

    def _peers_changed(self) -> None:
        self.keeper.links_changed()
        current = set(self.endpoint.links) | set(self.endpoint.recovering)
        for gone in self._known_links - current:
            self.tunnels.peer_gone(gone)
            self.rpc.peer_gone(gone)
        self._known_links = current
        task = asyncio.ensure_future(self._notify_peers())
        self._notifications.add(task)
        task.add_done_callback(self._notifications.discard)

    async def _notify_peers(self) -> None:
        async with self.peers_changed:
            self.peers_changed.notify_all()

    async def _on_frame(self, link: PeerLink, frame: wire_pb2.WireFrame) -> None:
        kind = frame.WhichOneof("body")
        if kind == "gossip":
            message = mesh_pb2.GossipMessage(peer_node_id=link.node_id, payload=frame.gossip.payload)
            for queue in self.gossip_subscribers:
                if queue.qsize() < GOSSIP_INBOX_MAX:
                    queue.put_nowait(message)
        elif kind == "peer_announce":
            self.endpoint.learn_from_announce(link, frame.peer_announce)
        elif kind == "secret_update":
            self._apply_secret_update(link, frame.secret_update)

    def _apply_secret_update(self, link: PeerLink, update: wire_pb2.SecretUpdate) -> None:
        if update.mesh_id != self.membership.mesh_id or update.epoch <= self.membership.epoch:
            return
        self.membership = MeshMembership(
            self.membership.mesh_id, update.secret, self.membership.name, update.epoch
        )
        self.membership.save(self.config.node_home.mesh_config)
        self.endpoint.credentials.secret = update.secret
        logger.info("mesh secret rotated by a peer", extra={"peer": link.node_id[:8]})

    def rotate_secret(self) -> None:
        fresh = InviteToken.new_mesh()
        epoch = max(self.membership.epoch + 1, int(time.time()))
        self.membership = MeshMembership(self.membership.mesh_id, fresh.secret, self.membership.name, epoch)
        self.membership.save(self.config.node_home.mesh_config)
        self.endpoint.credentials.secret = fresh.secret
        update = wire_pb2.WireFrame(
            secret_update=wire_pb2.SecretUpdate(
                mesh_id=self.membership.mesh_id, secret=fresh.secret, epoch=epoch
            )
        )
        for link in self.endpoint.links.values():
            link.send(update)
        logger.info("mesh secret rotated; old invite tokens no longer admit new nodes")

    async def on_view(self, view: gossip_pb2.MeshView) -> None:
        await self.keeper.on_view(view)
        self.share_own_files(view)

    def share_own_files(self, view: gossip_pb2.MeshView) -> None:
        """What this node shares with peers: exactly what its own record advertises."""
        for record in view.nodes:
            if record.node_id == view.local_node_id:
                self.files.share(record.models_on_disk)

    async def on_runner_status(self, status: runner_pb2.RunnerStatus) -> None:
        """The rpc-servers a split host may reach through us: READY ones only."""
        self.rpc.local_servers = {
            p.spec.model: LocalRpcServer(p.port, p.spec.model_path, p.spec.host_node_id, p.pid)
            for p in status.processes
            if p.spec.kind == runner_pb2.PROCESS_KIND_RPC_SERVER and p.state == runner_pb2.PROCESS_STATE_READY
        }

    async def _serve_http_stream(
        self, source: str, initial: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # The gateway's mesh ingress, not its TCP port: arriving there is the proof that this mesh
        # admitted the sender, so the request needs no API key (services/gateway/mesh_ingress.py).
        await splice_to_local_socket(self.config.mesh_ingress_socket, initial, reader, writer)

    def invite(self) -> mesh_pb2.Invite:
        # Our own addresses first, then a few peers': the token still works if we go away.
        peers = [
            a for link in self.endpoint.links.values() if not link.is_relayed for a in link.peer.addresses[:1]
        ]
        # Ours first (up to 5), then peers': the token still works if we go away.
        addresses = tuple(dict.fromkeys((*self.addresses[:5], *peers)))
        token = self.membership.invite(addresses[:MAX_INVITE_ADDRESSES])
        return mesh_pb2.Invite(
            mesh_id=token.mesh_id_hex, token=token.encode(), mesh_name=self.membership.name
        )

    def peer_list(self) -> mesh_pb2.ListPeersResponse:
        peers = []
        # A peer whose link was just lost and is being rerouted through a relay is still a peer.
        links = {**self.endpoint.recovering, **self.endpoint.links}
        for link in sorted(links.values(), key=lambda other: other.node_id):
            dialed = link.dialed_by == self.identity.node_id and link.address
            peers.append(
                mesh_pb2.Peer(
                    node_id=link.node_id,
                    name=link.peer.name,
                    address=link.address if dialed else (link.peer.addresses or (link.address,))[0],
                    rtt_ms=round(link.rtt_ms + (link.via.rtt_ms if link.via else 0.0), 3),
                    path=mesh_pb2.PEER_PATH_RELAYED if link.is_relayed else mesh_pb2.PEER_PATH_DIRECT,
                    relay_node_id=link.via.node_id if link.via else "",
                    connected_unix_s=link.connected_at,
                )
            )
        return mesh_pb2.ListPeersResponse(peers=peers)


class MeshServicer(mesh_pb2_grpc.MeshServicer):
    def __init__(self, node: MeshNode) -> None:
        self._node = node

    async def GetIdentity(
        self, request: mesh_pb2.GetIdentityRequest, context: grpc.aio.ServicerContext
    ) -> mesh_pb2.Identity:
        identity = self._node.identity
        return mesh_pb2.Identity(
            node_id=identity.node_id,
            short_id=identity.short_id,
            public_key=identity.public_bytes,
            name=self._node.endpoint.credentials.name,
            addresses=list(self._node.addresses),
        )

    async def GetInvite(
        self, request: mesh_pb2.GetInviteRequest, context: grpc.aio.ServicerContext
    ) -> mesh_pb2.Invite:
        return self._node.invite()

    async def RotateSecret(
        self, request: mesh_pb2.RotateSecretRequest, context: grpc.aio.ServicerContext
    ) -> mesh_pb2.Invite:
        self._node.rotate_secret()
        return self._node.invite()

    async def ListPeers(
        self, request: mesh_pb2.ListPeersRequest, context: grpc.aio.ServicerContext
    ) -> mesh_pb2.ListPeersResponse:
        return self._node.peer_list()

    async def WatchPeers(
        self, request: mesh_pb2.WatchPeersRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[mesh_pb2.ListPeersResponse]:
        while True:
            yield self._node.peer_list()
            async with self._node.peers_changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._node.peers_changed.wait(), PEER_WATCH_REFRESH_S)

    async def SendGossip(
        self, request: mesh_pb2.GossipMessage, context: grpc.aio.ServicerContext
    ) -> mesh_pb2.SendGossipResponse:
        link = self._node.endpoint.links.get(request.peer_node_id)
        if link is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no connected peer {request.peer_node_id[:8]}")
            raise AssertionError("abort raises")
        link.send(wire_pb2.WireFrame(gossip=wire_pb2.GossipPayload(payload=request.payload)))
        return mesh_pb2.SendGossipResponse()

    async def ReceiveGossip(
        self, request: mesh_pb2.ReceiveGossipRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[mesh_pb2.GossipMessage]:
        queue: asyncio.Queue[mesh_pb2.GossipMessage] = asyncio.Queue()
        self._node.gossip_subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._node.gossip_subscribers.discard(queue)

    async def OpenTunnel(
        self, request: mesh_pb2.OpenTunnelRequest, context: grpc.aio.ServicerContext
    ) -> mesh_pb2.Tunnel:
        if request.peer_node_id not in self._node.endpoint.links:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no connected peer {request.peer_node_id[:8]}")
        kind = {
            mesh_pb2.TUNNEL_KIND_HTTP: wire_pb2.STREAM_KIND_HTTP,
            mesh_pb2.TUNNEL_KIND_RPC: wire_pb2.STREAM_KIND_RPC,
        }.get(request.kind)
        if kind is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unknown tunnel kind")
            raise AssertionError("abort raises")
        if kind == wire_pb2.STREAM_KIND_RPC and not (request.model and request.model_path):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an RPC tunnel needs model and model_path")
        port = await self._node.tunnels.listener_for(
            request.peer_node_id, kind, request.model, request.model_path
        )
        return mesh_pb2.Tunnel(host="127.0.0.1", port=port)

    async def ListTunnels(
        self, request: mesh_pb2.ListTunnelsRequest, context: grpc.aio.ServicerContext
    ) -> mesh_pb2.ListTunnelsResponse:
        return mesh_pb2.ListTunnelsResponse(tunnels=self._node.rpc.stats())

    async def FetchFile(
        self, request: mesh_pb2.FetchFileRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[mesh_pb2.FetchProgress]:
        async for progress in self._node.fetcher.fetch(request):
            yield progress


async def run_mesh(config: NodeConfig) -> None:
    home = config.node_home
    home.ensure()
    identity, membership = await asyncio.to_thread(load_or_create_mesh_files, home, config.join_tokens)
    tokens = [InviteToken.decode(t) for t in config.join_tokens]
    bootstrap = [a for t in tokens for a in t.addresses]
    node = MeshNode(config, identity, membership, bootstrap)
    await node.start()
    server = await start_server(
        home, "mesh", lambda s: mesh_pb2_grpc.add_MeshServicer_to_server(MeshServicer(node), s)
    )
    logger.info("node %s ready", identity.short_id, extra={"node_id": identity.node_id})
    gossip_channel = open_channel(home, "gossip")
    gossip = gossip_pb2_grpc.GossipStub(gossip_channel)

    async def refresh_shared() -> None:
        node.share_own_files(await gossip.GetView(gossip_pb2.GetViewRequest(), timeout=REFRESH_TIMEOUT_S))

    node.files.refresh_shared = refresh_shared
    view = follow_stream("gossip view", lambda: gossip.Watch(gossip_pb2.WatchRequest()), node.on_view, logger)
    tasks = [node.keeper.keep_joined(), node.keeper.keep_redialing(), node.follow_interfaces(), view]
    runner_channel = None
    if not config.client:
        runner_channel = open_channel(home, "runner")
        runner = runner_pb2_grpc.RunnerStub(runner_channel)
        tasks.append(
            follow_stream(
                "runner", lambda: runner.Watch(runner_pb2.WatchRequest()), node.on_runner_status, logger
            )
        )
    try:
        await run_until_signalled(server, *tasks)
    finally:
        node.keeper.close()
        node.tunnels.close()
        node.rpc.armed.close()
        if node.rpc.fast_path is not None:
            node.rpc.fast_path.close()
        await node.endpoint.close()
        await gossip_channel.close()
        if runner_channel is not None:
            await runner_channel.close()
