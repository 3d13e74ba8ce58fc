"""Requests for models served elsewhere: through a mesh tunnel to a serving peer's gateway.

The tunnel port per peer is asked of the mesh service once and cached, so a request makes no gRPC
call once a peer has been used. Among the servers of a model (the peers, and this node when it is a
replica too) the one with the fewest requests in flight from here wins, ties taking turns
(services/gateway/replicas.py); if it fails before any byte reached the client, the next one is
tried. A forwarded request carries FORWARDED_HEADER and is never forwarded again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc
from starlette.responses import Response

from services.gateway.body import Endpoint
from services.gateway.proxy import UpstreamProxy, UpstreamUnavailable
from services.gateway.replicas import ReplicaBalancer
from services.gateway.routing import RemoteRoute, Route
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc

FORWARDED_HEADER = "x-mesh-llm-forwarded"
PREFER_NODE_HEADER = "x-mesh-llm-prefer-node"
OPEN_TUNNEL_TIMEOUT_S = 3.0

logger = logging.getLogger("gateway.remote")


class NoTunnel(Exception):
    """The mesh has no connection to that peer (it left, or the mesh service is restarting)."""


class TunnelDirectory:
    """Loopback ports of the mesh's HTTP tunnels, one per peer."""

    def __init__(self, mesh: mesh_pb2_grpc.MeshStub) -> None:
        self._mesh = mesh
        self._ports: dict[str, int] = {}

    async def port_for(self, node_id: str) -> int:
        port = self._ports.get(node_id)
        if port is not None:
            return port
        try:
            tunnel = await self._mesh.OpenTunnel(
                mesh_pb2.OpenTunnelRequest(peer_node_id=node_id, kind=mesh_pb2.TUNNEL_KIND_HTTP),
                timeout=OPEN_TUNNEL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            raise NoTunnel(f"no tunnel to {node_id[:8]}: {error.details() or error.code().name}") from error
        self._ports[node_id] = tunnel.port
        return tunnel.port

    def forget(self, node_id: str) -> None:
        self._ports.pop(node_id, None)

    def keep_only(self, node_ids: set[str]) -> None:
        for node_id in set(self._ports) - node_ids:
            del self._ports[node_id]


# The balancer's key for this node's own llama-server when the table does not know the node id yet.
LOCAL_SERVER_KEY = "local"


def _local_key(route: RemoteRoute) -> str:
    return route.local_node_id or LOCAL_SERVER_KEY


class RemoteForwarder:
    def __init__(self, tunnels: TunnelDirectory, proxy: UpstreamProxy) -> None:
        self._tunnels = tunnels
        self._proxy = proxy
        self.balancer = ReplicaBalancer()

    def candidates(self, route: RemoteRoute, preferred: str = "") -> list[str]:
        """Node ids in the order to try them; this node's own key among them when it is a replica."""
        if route.local is None:
            return self.balancer.order(route.node_ids, preferred)
        local = _local_key(route)
        return self.balancer.order([*route.node_ids, local], preferred, local)

    async def forward(
        self,
        route: RemoteRoute,
        endpoint: Endpoint,
        body: bytes,
        on_close: Callable[[], None],
        preferred: str = "",
    ) -> Response:
        last_error: Exception | None = None
        for node_id in self.candidates(route, preferred):
            try:
                return await self._forward_to(route, node_id, endpoint, body, on_close)
            except NoTunnel as exc:
                last_error = exc
            except UpstreamUnavailable as exc:
                # Nothing reached the client yet: the next server may answer.
                logger.info("server %s failed before answering; trying the next", node_id[:8])
                self._tunnels.forget(node_id)
                last_error = exc
        on_close()
        if isinstance(last_error, UpstreamUnavailable):
            raise last_error
        raise UpstreamUnavailable(
            Route(route.model, "", 0), last_error or NoTunnel("no serving peer reachable")
        )

    async def _forward_to(
        self,
        route: RemoteRoute,
        node_id: str,
        endpoint: Endpoint,
        body: bytes,
        on_close: Callable[[], None],
    ) -> Response:
        """One try on one server; raises NoTunnel or UpstreamUnavailable before any byte went back.

        The proxy calls its close callback on a failed try too; the caller's `on_close` must run once
        per request, so it runs only for the try that answered (`forward` runs it when all failed).
        """
        local = route.local is not None and node_id == _local_key(route)
        port = 0 if local else await self._tunnels.port_for(node_id)
        self.balancer.started(node_id)
        answered = closed = False

        def close() -> None:
            nonlocal closed
            closed = True
            self.balancer.finished(node_id)
            if answered:
                on_close()

        try:
            if local:
                assert route.local is not None
                response = await self._proxy.forward(route.local, endpoint, body, close)
            else:
                target = Route(route.model, "127.0.0.1", port)
                response = await self._proxy.forward(target, endpoint, body, close, forwarded=True)
        except UpstreamUnavailable:
            raise  # the caller tries the next server
        except BaseException:
            on_close()  # cancelled (shutdown, client gone): no other try follows
            raise
        answered = True
        if closed:  # a whole (non-streamed) answer was read already
            on_close()
        return response
