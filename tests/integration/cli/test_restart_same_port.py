"""A node stopped after serving requests starts again on the same ports at once.

The server side of a connection it closed sits in TIME-WAIT for a minute (Linux: 60 s); a port
probe that counts those as "in use" refused every restart for that long. The gateway binds with
SO_REUSEADDR, so only a live listener really takes the port.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.node import MESH_LLM, RunningNode, free_port, wait_until

pytestmark = pytest.mark.integration

REQUESTS_BEFORE_STOP = 4
CLIENT_READY_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 10.0
CLI_TIMEOUT_S = 30.0
TIME_WAIT_STATE = "06"  # /proc/net/tcp's st column (include/net/tcp_states.h: TCP_TIME_WAIT)


@pytest.fixture
def nodes() -> Iterator[list[RunningNode]]:
    started: list[RunningNode] = []
    yield started
    for node in started:
        node.stop()


def time_wait_sockets_on(port: int) -> int:
    """Connections whose local end is 127.0.0.1:port and that are in TIME-WAIT."""
    local = f"{socket.htonl(0x7F000001):08X}:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == TIME_WAIT_STATE:
            count += 1
    return count


def test_a_stopped_node_restarts_on_the_same_ports_at_once(tmp_path: Path, nodes: list[RunningNode]) -> None:
    api_port, console_port = free_port(), free_port()
    first = RunningNode(tmp_path / "node", api_port, console_port, ["--client"]).start()
    nodes.append(first)
    first.wait_ready([], timeout_s=CLIENT_READY_TIMEOUT_S)
    # "Connection: close": the server closes each connection first, so its end waits in TIME-WAIT.
    for _ in range(REQUESTS_BEFORE_STOP):
        for port, path in ((api_port, "/v1/models"), (console_port, "/")):
            response = httpx.get(
                f"http://127.0.0.1:{port}{path}", headers={"Connection": "close"}, timeout=HTTP_TIMEOUT_S
            )
            assert response.status_code == 200
    assert first.stop() == 0
    # Which end closes first is a race with the client (it may close on reading the whole answer),
    # so not every connection leaves a TIME-WAIT on the server's side; one is enough to have tripped
    # the old probe.
    assert time_wait_sockets_on(api_port) + time_wait_sockets_on(console_port) > 0

    second = RunningNode(tmp_path / "node", api_port, console_port, ["--client"]).start()
    nodes.append(second)
    second.wait_ready([], timeout_s=CLIENT_READY_TIMEOUT_S)
    assert "already in use" not in second.cli_output()
    wait_until(
        lambda: httpx.get(f"{second.api_base}/models", timeout=HTTP_TIMEOUT_S).status_code == 200,
        HTTP_TIMEOUT_S,
        "the restarted node's API",
    )


def test_a_port_with_a_live_listener_is_still_refused(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        result = subprocess.run(
            [str(MESH_LLM), "--home", str(tmp_path), "--client", "--port", str(taken)],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )
    assert result.returncode == 2
    assert f"--port {taken} is already in use" in result.stderr
