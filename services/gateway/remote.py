"""Requests for models served elsewhere: through a mesh tunnel to a serving peer's gateway.

The tunnel port per peer is asked of the mesh service once and cached, so a request makes no gRPC
call once a peer has been used. Among the peers serving a model the one with the fewest requests
in flight from here wins; if it fails before any byte reached the client, the next one is tried.
A forwarded request carries FORWARDED_HEADER and is never forwarded again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc
from starlette.responses import Response

from services.gateway.proxy import UpstreamProxy, UpstreamUnavailable
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


class RemoteForwarder:
    def __init__(self, tunnels: TunnelDirectory, proxy: UpstreamProxy) -> None:
        self._tunnels = tunnels
        self._proxy = proxy
        self._in_flight: dict[str, int] = {}

    def candidates(self, route: RemoteRoute, preferred: str = "") -> list[str]:
        ordered = sorted(route.node_ids, key=lambda n: (self._in_flight.get(n, 0), n))
        if preferred in ordered:
            ordered.remove(preferred)
            ordered.insert(0, preferred)
        return ordered

    async def forward(
        self, route: RemoteRoute, path: str, body: bytes, on_close: Callable[[], None], preferred: str = ""
    ) -> Response:
        last_error: Exception | None = None
        for node_id in self.candidates(route, preferred):
            try:
                port = await self._tunnels.port_for(node_id)
            except NoTunnel as exc:
                last_error = exc
                continue
            self._in_flight[node_id] = self._in_flight.get(node_id, 0) + 1

            def finished(node_id: str = node_id) -> None:
                self._in_flight[node_id] -= 1
                on_close()

            try:
                return await self._proxy.forward(
                    Route(route.model, "127.0.0.1", port), path, body, finished, forwarded=True
                )
            except UpstreamUnavailable as exc:
                # Nothing reached the client yet: the next server may answer.
                logger.info("peer %s failed before answering; trying the next", node_id[:8])
                self._tunnels.forget(node_id)
                last_error = exc
        on_close()
        if isinstance(last_error, UpstreamUnavailable):
            raise last_error
        raise UpstreamUnavailable(
            Route(route.model, "", 0), last_error or NoTunnel("no serving peer reachable")
        )
