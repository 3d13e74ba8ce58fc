"""Is a freshly started process ready? llama-server: GET /health == 200; rpc-server: TCP accepts."""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from services.runner.spec import LOOPBACK_HOST, ProcessKind

HEALTH_POLL_INTERVAL_S = 0.1
HEALTH_REQUEST_TIMEOUT_S = 2.0
# Loading a 20 GB model from a cold disk, or over RPC to several workers, takes minutes.
READY_DEADLINE_S = 900.0


class NotReady(Exception):
    """The process did not become healthy before the deadline."""


async def _llama_server_healthy(client: httpx.AsyncClient, port: int) -> bool:
    try:
        response = await client.get(f"http://{LOOPBACK_HOST}:{port}/health")
    except httpx.HTTPError:
        return False
    # 503 while the model loads.
    return response.status_code == 200


async def _tcp_accepts(port: int) -> bool:
    # rpc-server serves one client at a time: connect and close at once, before the host connects.
    try:
        _, writer = await asyncio.open_connection(LOOPBACK_HOST, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def wait_until_ready(kind: ProcessKind, port: int, deadline_s: float = READY_DEADLINE_S) -> None:
    """Poll until healthy; raises NotReady at the deadline. The caller races this with process exit."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + deadline_s
    async with httpx.AsyncClient(timeout=HEALTH_REQUEST_TIMEOUT_S, trust_env=False) as client:
        while loop.time() < give_up_at:
            if kind is ProcessKind.LLAMA_SERVER:
                healthy = await _llama_server_healthy(client, port)
            else:
                healthy = await _tcp_accepts(port)
            if healthy:
                return
            await asyncio.sleep(HEALTH_POLL_INTERVAL_S)
    raise NotReady(f"not healthy after {deadline_s:.0f} s")
