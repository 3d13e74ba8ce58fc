"""gRPC between a node's services: Unix-socket servers, channels, and Watch streams that survive restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc

from services.node.home import NodeHome

RECONNECT_INITIAL_S = 0.05
RECONNECT_MAX_S = 1.0
# What in-flight RPCs get at shutdown. Unary ones on loopback end in milliseconds; the watch streams
# other services hold never end by themselves and are cancelled once it is over, and supervisord
# stops the services one after another, so this is paid once per service at every stop.
SERVER_GRACE_S = 0.25

Message = TypeVar("Message")


async def start_server(
    home: NodeHome, service: str, register: Callable[[grpc.aio.Server], None]
) -> grpc.aio.Server:
    """Serve `service` on <home>/run/<service>.sock (a stale socket from a crash is replaced)."""
    home.ensure()
    path = home.socket(service)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = grpc.aio.server()
    register(server)
    server.add_insecure_port(f"unix://{path}")
    await server.start()
    os.chmod(path, 0o600)
    return server


def open_channel(home: NodeHome, service: str) -> grpc.aio.Channel:
    # Reconnect fast: a restarted local service should be found again within a few tens of ms.
    options = [
        ("grpc.initial_reconnect_backoff_ms", 50),
        ("grpc.min_reconnect_backoff_ms", 50),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    return grpc.aio.insecure_channel(home.grpc_target(service), options=options)


async def follow_stream(
    name: str,
    open_stream: Callable[[], AsyncIterator[Message]],
    on_message: Callable[[Message], Awaitable[None]],
    logger: logging.Logger,
    on_disconnect: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Consume a server-streaming Watch forever; resubscribe with backoff when the peer service restarts.

    Each (re)subscription starts with the full state, so nothing is lost across a restart.
    """
    delay = RECONNECT_INITIAL_S
    connected_once = False
    while True:
        try:
            async for message in open_stream():
                if not connected_once:
                    logger.debug("watching %s", name)
                connected_once = True
                delay = RECONNECT_INITIAL_S
                await on_message(message)
        except grpc.aio.AioRpcError as error:
            if connected_once:
                logger.info("lost %s watch (%s); resubscribing", name, error.code().name)
                connected_once = False
                if on_disconnect is not None:
                    await on_disconnect()
        await asyncio.sleep(delay)
        delay = min(delay * 2, RECONNECT_MAX_S)


async def run_until_signalled(server: grpc.aio.Server, *background: Awaitable[None]) -> None:
    """Run the server and its background tasks until SIGTERM/SIGINT, then stop everything.

    A background task that finishes normally is done; one that raises stops the service (and
    supervisord restarts it), so a failure is never silently swallowed.
    """
    stop = asyncio.Event()
    failures: list[BaseException] = []
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def on_done(task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())  # type: ignore[arg-type]
            stop.set()

    tasks = [asyncio.ensure_future(b) for b in background]
    for task in tasks:
        task.add_done_callback(on_done)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await server.stop(SERVER_GRACE_S)
    if failures:
        raise failures[0]
