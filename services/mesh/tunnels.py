"""Tunnels: loopback TCP listeners whose connections are spliced onto QUIC streams to a peer,
and the receiving side that splices an arriving stream onto a local service's Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from services.mesh.file_pacing import TunnelActivity
from services.mesh.link import PeerLink, StreamPair
from services.mesh.splice import splice
from services.proto.meshllm.mesh.v1 import wire_pb2

logger = logging.getLogger("mesh.tunnels")

LOOPBACK = "127.0.0.1"
LOCAL_CONNECT_TIMEOUT_S = 5.0


# An RPC connection from llama-server: (link, model, host's model path, the connection).
CarryRpc = Callable[[PeerLink, str, str, StreamPair], Awaitable[None]]
# An RPC listener was created: get connections to its worker ready (link, model).
ArmRpc = Callable[[PeerLink, str], None]


class TunnelListeners:
    """One listener per (peer, kind, model), created on first use and closed when the peer goes.

    HTTP connections are spliced onto a QUIC stream as they are; RPC connections (a split host's
    llama-server to one worker, one listener per worker and model) go to `carry_rpc`.
    """

    def __init__(
        self,
        find_link: Callable[[str], Awaitable[PeerLink | None]],
        carry_rpc: CarryRpc,
        activity: TunnelActivity | None = None,
        arm_rpc: ArmRpc | None = None,
    ) -> None:
        self._find_link = find_link
        self._carry_rpc = carry_rpc
        self._arm_rpc = arm_rpc
        # Open connections per peer: file transfers to that peer yield to them (file_pacing.py).
        self._activity = activity or TunnelActivity()
        self._servers: dict[tuple[str, int, str, str], asyncio.Server] = {}
        self._connections: dict[str, set[asyncio.Task[None]]] = {}

    async def listener_for(self, peer_id: str, kind: int, model: str = "", model_path: str = "") -> int:
        key = (peer_id, kind, model, model_path)
        server = self._servers.get(key)
        if server is None:
            server = await asyncio.start_server(lambda r, w: self._accept(key, r, w), LOOPBACK, 0)
            self._servers[key] = server
        if kind == wire_pb2.STREAM_KIND_RPC and self._arm_rpc is not None:
            # Every time: placement asks again before each llama-server start, and arming tops up.
            link = await self._find_link(peer_id)
            if link is not None:
                self._arm_rpc(link, model)
        return int(server.sockets[0].getsockname()[1])

    def _accept(
        self, key: tuple[str, int, str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.ensure_future(self._carry(key, reader, writer))
        tasks = self._connections.setdefault(key[0], set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _carry(
        self, key: tuple[str, int, str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with self._activity.carrying(key[0]):
            await self._carry_connection(key, reader, writer)

    async def _carry_connection(
        self, key: tuple[str, int, str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer_id, kind, model, model_path = key
        _no_delay(writer)
        link = await self._find_link(peer_id)
        if link is None:
            writer.close()
            return
        if kind == wire_pb2.STREAM_KIND_RPC:
            await self._carry_rpc(link, model, model_path, (reader, writer))
            return
        try:
            remote = await link.open_stream(kind)
        except ConnectionError:
            writer.close()
            return
        await splice((reader, writer), remote)

    def peer_gone(self, peer_id: str) -> None:
        """Close its listeners and cut its in-flight connections: callers see an error, not a hang."""
        for key in [k for k in self._servers if k[0] == peer_id]:
            self._servers.pop(key).close()
        for task in self._connections.pop(peer_id, set()):
            task.cancel()

    def close(self) -> None:
        for server in self._servers.values():
            server.close()
        for tasks in self._connections.values():
            for task in tasks:
                task.cancel()


async def splice_to_local_socket(
    path: Path, initial: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        local_reader, local_writer = await asyncio.wait_for(
            asyncio.open_unix_connection(path), LOCAL_CONNECT_TIMEOUT_S
        )
    except (OSError, TimeoutError) as exc:
        logger.info("local service not reachable for a tunnel", extra={"path": str(path), "error": str(exc)})
        with contextlib.suppress(Exception):
            writer.close()
        return
    if initial:
        local_writer.write(initial)
    await splice((reader, writer), (local_reader, local_writer))


def _no_delay(writer: asyncio.StreamWriter) -> None:
    import socket

    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
