"""Pre-armed RPC paths (services/mesh/rpc_armed.py): ready ahead, taken once, replaced, never stale.

The paths are real local socket pairs; the link is a stand-in with what ArmedPaths reads of one
(its node id and whether it closed), since no network is involved.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.mesh.link import StreamPair
from services.mesh.rpc_armed import ArmedPaths, first_request

MODEL = "m"
POLL_S = 0.01
WAIT_S = 5.0


@dataclass
class FakeLink:
    node_id: str = "worker"
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class Opener:
    """Opens socket pairs as paths; keeps the far ends so a test can close them (the worker)."""

    def __init__(self) -> None:
        self.far: list[socket.socket] = []
        self.fail = False

    async def __call__(self, link: Any, model: str) -> tuple[StreamPair, bool, str]:
        if self.fail:
            raise ConnectionError("no rpc-server yet")
        near, far = socket.socketpair()
        self.far.append(far)
        return await asyncio.open_connection(sock=near), True, "rpc-server 1"


async def until(predicate: Any) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(POLL_S)


async def test_paths_are_armed_ahead_and_each_is_taken_once() -> None:
    opener, link = Opener(), FakeLink()
    armed = ArmedPaths(opener, size=2)
    assert armed.take(link, MODEL) is None  # nothing ready yet: the caller sets one up itself
    await until(lambda: armed.ready(link.node_id, MODEL) == 2)
    first, second = armed.take(link, MODEL), armed.take(link, MODEL)
    assert first is not None and second is not None and first is not second
    await until(lambda: armed.ready(link.node_id, MODEL) == 2)  # refilled behind them
    assert len(opener.far) == 4  # the empty take armed two, each later take one more
    armed.close()


async def test_a_path_the_worker_closed_is_never_handed_out() -> None:
    opener, link = Opener(), FakeLink()
    armed = ArmedPaths(opener, size=1)
    armed.arm(link, MODEL)
    await until(lambda: armed.ready(link.node_id, MODEL) == 1)
    opener.far[0].close()
    await until(lambda: armed.ready(link.node_id, MODEL) == 0)  # its EOF arrived
    assert armed.take(link, MODEL) is None
    await until(lambda: armed.ready(link.node_id, MODEL) == 1)
    assert armed.take(link, MODEL) is not None
    armed.close()


async def test_idle_paths_are_closed_and_replaced() -> None:
    opener, link = Opener(), FakeLink()
    armed = ArmedPaths(opener, size=1, idle_s=0.05)
    armed.arm(link, MODEL)
    await until(lambda: len(opener.far) >= 2)  # the first expired, a second was armed
    opener.far[0].settimeout(WAIT_S)
    assert opener.far[0].recv(1) == b""  # the expired one was closed, not left open
    armed.close()


async def test_a_gone_peer_or_a_failing_worker_leaves_nothing_armed() -> None:
    opener, link = Opener(), FakeLink()
    armed = ArmedPaths(opener, size=2)
    armed.arm(link, MODEL)
    await until(lambda: armed.ready(link.node_id, MODEL) == 2)
    armed.peer_gone(link.node_id)
    assert armed.ready(link.node_id, MODEL) == 0
    link.closed.set()
    armed.arm(link, MODEL)  # a closed link arms nothing
    opener.fail = True
    armed.arm(FakeLink("other"), MODEL)
    await asyncio.sleep(0)
    assert armed.ready("other", MODEL) == 0
    armed.close()


@pytest.mark.parametrize("send", [b"hello", b""])
async def test_the_worker_waits_for_the_first_request(send: bytes) -> None:
    near, far = socket.socketpair()
    reader, _ = await asyncio.open_connection(sock=near)
    if send:
        far.sendall(send)
    else:
        far.close()
    assert await first_request(reader, asyncio.Event()) == send


async def test_a_path_waiting_for_its_first_request_ends_when_its_rpc_server_goes() -> None:
    near, far = socket.socketpair()
    reader, _ = await asyncio.open_connection(sock=near)
    gone = asyncio.Event()
    waiting = asyncio.ensure_future(first_request(reader, gone))
    await asyncio.sleep(POLL_S)
    assert not waiting.done()
    gone.set()
    assert await asyncio.wait_for(waiting, WAIT_S) == b""  # never connected to another rpc-server
    far.close()
