"""Wiring: the routing watchers, the API and console servers (uvicorn, one event loop) and gRPC Admin.

SIGTERM stops accepting connections, gives in-flight requests a grace period, then cancels the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import signal
import socket
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
import uvicorn
from starlette.types import ASGIApp

from services.gateway.admin import register_admin
from services.gateway.api_key import ApiAccess, ApiKeyGuard
from services.gateway.connection_limits import ConnectionLimits, protocol_for
from services.gateway.console import build_console_app
from services.gateway.console_feed import (
    ConsoleFeed,
    LogEventHandler,
    install_log_events,
    remove_log_events,
)
from services.gateway.demand_publisher import DemandPublisher
from services.gateway.events import EventBus
from services.gateway.host_check import HostAllowList, HostGuard
from services.gateway.in_flight import InFlightLimit
from services.gateway.mesh_ingress import bind_mesh_ingress
from services.gateway.metrics_collector import MetricsCollector
from services.gateway.metrics_http import MetricsEndpoint
from services.gateway.metrics_requests import RequestMetrics
from services.gateway.openai_api import build_api_app
from services.gateway.peers import PEER_SERVICES, PeerServices
from services.gateway.proxy import UpstreamProxy
from services.gateway.remote import RemoteForwarder, TunnelDirectory
from services.gateway.sources import RoutingSources
from services.gateway.status import RequestCounters, StatusReporter
from services.node.config import NodeConfig
from services.node.fd_limit import open_files_limit
from services.node.grpc_link import follow_stream, start_server
from services.proto.meshllm.gossip.v1 import gossip_pb2, gossip_pb2_grpc
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc
from services.proto.meshllm.placement.v1 import placement_pb2, placement_pb2_grpc
from services.proto.meshllm.runner.v1 import runner_pb2, runner_pb2_grpc

# In-flight completions get this long to finish after SIGTERM (supervisord waits 10 s by default).
GRACEFUL_SHUTDOWN_S = 5
GRPC_STOP_GRACE_S = 0.25  # as services/node/grpc_link.py's SERVER_GRACE_S
LISTEN_BACKLOG = 2048
CLIENT_MODE_PEERS = ("mesh", "gossip")  # DESIGN §1: clients run no placement or runner
# The HTTP servers sharing this process's descriptors (API, console, mesh ingress), each sized to its share.
GATEWAY_SERVERS = 3


class PortUnavailable(Exception):
    """The API or console port is taken or not bindable."""


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket, bound here so a taken port is a clear error and port 0 works in tests."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
    # and without it Nagle + delayed ACK add ~40 ms to every response (measured).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
        raise PortUnavailable(f"{host}:{port} {why}") from exc
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that shares the event loop with others; signals are the gateway's to handle."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


def embedded_server(app: ASGIApp, limits: ConnectionLimits | None = None) -> EmbeddedServer:
    """`limits`: by default this server's share of the process's descriptors (see GATEWAY_SERVERS)."""
    limits = limits or ConnectionLimits.for_open_files(open_files_limit(), GATEWAY_SERVERS)
    config = uvicorn.Config(
        InFlightLimit(app, limits.max_in_flight),
        http=protocol_for(limits),
        lifespan="off",
        access_log=False,
        log_config=None,  # keep the node's logging setup (services/node/logs.py)
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    return EmbeddedServer(config)


def _watchers(
    config: NodeConfig, sources: RoutingSources, peers: PeerServices
) -> list[Coroutine[Any, Any, None]]:
    logger = logging.getLogger("gateway.watch")
    gossip = gossip_pb2_grpc.GossipStub(peers.channels["gossip"])
    mesh = mesh_pb2_grpc.MeshStub(peers.channels["mesh"])
    mesh_view = follow_stream(
        "gossip", lambda: gossip.Watch(gossip_pb2.WatchRequest()), sources.on_view, logger
    )
    mesh_peers = follow_stream(
        "mesh peers", lambda: mesh.WatchPeers(mesh_pb2.WatchPeersRequest()), sources.on_peers, logger
    )
    if config.client:
        return [mesh_view, mesh_peers]  # clients run no runner or placement (DESIGN §1)
    runner = runner_pb2_grpc.RunnerStub(peers.channels["runner"])
    placement = placement_pb2_grpc.PlacementStub(peers.channels["placement"])
    return [
        mesh_view,
        mesh_peers,
        follow_stream(
            "runner",
            lambda: runner.Watch(runner_pb2.WatchRequest()),
            sources.on_runner_status,
            logger,
            sources.on_runner_lost,
        ),
        follow_stream(
            "placement",
            lambda: placement.WatchPlan(placement_pb2.WatchPlanRequest()),
            sources.on_plan,
            logger,
            sources.on_placement_lost,
        ),
    ]


@dataclass
class Gateway:
    """Everything the gateway process owns; `stop` releases it all."""

    proxy: UpstreamProxy
    peers: PeerServices
    admin: grpc.aio.Server
    servers: tuple[EmbeddedServer, ...]
    server_tasks: list[asyncio.Task[None]]
    watch_tasks: list[asyncio.Task[None]]
    bus: EventBus | None = None
    log_events: LogEventHandler | None = None

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return [*self.server_tasks, *self.watch_tasks]

    async def stop(self) -> None:
        if self.bus is not None:
            self.bus.close()
        for server in self.servers:
            server.should_exit = True
        # uvicorn drains for GRACEFUL_SHUTDOWN_S itself; the extra second covers its own teardown.
        await asyncio.wait(self.server_tasks, timeout=GRACEFUL_SHUTDOWN_S + 1)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.log_events is not None:
            remove_log_events(self.log_events)
        await self.admin.stop(GRPC_STOP_GRACE_S)
        await self.proxy.aclose()
        await self.peers.close()


def _task(coro: Awaitable[None], name: str) -> asyncio.Task[None]:
    task = asyncio.ensure_future(coro)
    task.set_name(name)
    return task


async def start_gateway(config: NodeConfig) -> Gateway:
    """Bind both ports, start the admin socket and the watchers; raises PortUnavailable."""
    api_sock = bind_listener(config.bind_host, config.api_port)
    try:
        console_sock = bind_listener(config.bind_host, config.console_port)
    except PortUnavailable:
        api_sock.close()
        raise
    ingress_sock = bind_mesh_ingress(config.mesh_ingress_socket)
    request_metrics = RequestMetrics()
    sources, counters, proxy = RoutingSources(), RequestCounters(), UpstreamProxy(request_metrics)
    peers = PeerServices(config.node_home, CLIENT_MODE_PEERS if config.client else PEER_SERVICES)
    reporter = StatusReporter(config, sources, counters, peers)
    admin = await start_server(config.node_home, "gateway", functools.partial(register_admin, reporter))
    remote = RemoteForwarder(TunnelDirectory(mesh_pb2_grpc.MeshStub(peers.channels["mesh"])), proxy)
    api_app = build_api_app(sources, proxy, counters, remote)
    bus = EventBus()
    feed = ConsoleFeed(sources, counters, bus)
    access, hosts = ApiAccess.from_config(config), HostAllowList.for_config(config)
    api = embedded_server(HostGuard(ApiKeyGuard(api_app, access), hosts))
    gossip = gossip_pb2_grpc.GossipStub(peers.channels["gossip"])
    runner = None if config.client else runner_pb2_grpc.RunnerStub(peers.channels["runner"])
    mesh = mesh_pb2_grpc.MeshStub(peers.channels["mesh"])
    metrics = MetricsCollector(
        request_metrics, sources, mesh, gossip, runner, supervisor_socket=config.node_home.supervisor_socket
    )
    console_app = build_console_app(reporter, bus, api_app, access=access, metrics=MetricsEndpoint(metrics))
    console = embedded_server(HostGuard(console_app, hosts))
    # What peers forward through the mesh: authenticated by it, so no key, and no Host check either: no
    # browser reaches a Unix socket, and a peer may name the host it forwards for however it likes
    # (services/gateway/mesh_ingress.py).
    ingress = embedded_server(api_app)
    server_tasks = [
        _task(api.serve(sockets=[api_sock]), "api"),
        _task(console.serve(sockets=[console_sock]), "console"),
        _task(ingress.serve(sockets=[ingress_sock]), "mesh-ingress"),
    ]
    # Clients publish demand too: they are where most requests enter the mesh.
    demand = DemandPublisher(counters, sources, gossip_pb2_grpc.GossipStub(peers.channels["gossip"]))
    watchers = [*_watchers(config, sources, peers), feed.run_rates(), demand.run(), metrics.run()]
    watch_tasks = [_task(w, f"watch-{i}") for i, w in enumerate(watchers)]
    log_events = install_log_events(bus)
    return Gateway(proxy, peers, admin, (api, console, ingress), server_tasks, watch_tasks, bus, log_events)


async def run_gateway(config: NodeConfig, logger: logging.Logger) -> None:
    """Serve until SIGTERM/SIGINT, or until a server task dies (then raise its error)."""
    gateway = await start_gateway(config)
    logger.info("api on %s, console on %s", config.api_url, config.console_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait([waiter, *gateway.tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        logger.info("stopping")
        await gateway.stop()
    for task in done:
        if task is not waiter and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
