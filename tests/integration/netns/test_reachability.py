"""Hosts that cannot all see each other (issue 12): a host reachable only through another is served
through a relay; one this node reaches by no path is shown as unreachable and never routed to,
whatever the others gossip about it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.netns import Testbed
from tests.support.netns_mesh import (
    launch,
    listed_models,
    meshctl,
    model_copy,
    node_id,
    peers_of,
    start_on,
    wait_answers,
    wait_path,
    wait_started,
)
from tests.support.node import RunningNode, wait_until

pytestmark = pytest.mark.integration

STEADY_WATCH_S = 8.0
SAMPLE_EVERY_S = 0.5


def test_a_host_reachable_only_through_another_is_served_through_it(
    testbed: Testbed, nodes: list[RunningNode], tmp_path: Path, tiny_gguf: Path
) -> None:
    left, right = testbed.lan("left"), testbed.lan("right")
    a, b, c = testbed.host("a"), testbed.host("b"), testbed.host("c")
    a.attach(left, "10.77.21.1/24")
    b.attach(left, "10.77.21.2/24")
    b.attach(right, "10.77.22.2/24")  # b has a leg on each LAN and routes nothing
    c.attach(right, "10.77.22.3/24")

    middle = launch(nodes, b, tmp_path, "b", ["--model", str(model_copy(tiny_gguf, tmp_path, "tiny-b"))])
    token = middle.invite()
    west = start_on(
        a, tmp_path, "a", ["--join", token, "--model", str(model_copy(tiny_gguf, tmp_path, "tiny-a"))]
    )
    east = start_on(
        c, tmp_path, "c", ["--join", token, "--model", str(model_copy(tiny_gguf, tmp_path, "tiny-c"))]
    )
    nodes += [west, east]
    wait_started(west)
    wait_started(east)

    wait_path(west, east, "relayed")
    wait_path(east, west, "relayed")
    wait_answers(west, "tiny-c")
    wait_answers(east, "tiny-a")
    assert f"relayed via {node_id(middle)[:8]}" in meshctl(west, "peers")


def test_a_peer_no_path_reaches_is_unreachable_from_here_and_never_listed(
    testbed: Testbed, nodes: list[RunningNode], tmp_path: Path, tiny_gguf: Path
) -> None:
    """A line: w — x — y — z. Gossip about z reaches w (through x and y), but no node links to both
    w and z, so no relay joins them."""
    lans = [testbed.lan(f"l{i}") for i in range(3)]
    w, x, y, z = (testbed.host(name) for name in "wxyz")
    w.attach(lans[0], "10.77.31.1/24")
    x.attach(lans[0], "10.77.31.2/24")
    x.attach(lans[1], "10.77.32.2/24")
    y.attach(lans[1], "10.77.32.3/24")
    y.attach(lans[2], "10.77.33.3/24")
    z.attach(lans[2], "10.77.33.4/24")

    node_x = launch(nodes, x, tmp_path, "x", ["--model", str(model_copy(tiny_gguf, tmp_path, "tiny-x"))])
    node_w = start_on(w, tmp_path, "w", ["--join", node_x.invite()])
    node_y = start_on(y, tmp_path, "y", ["--join", node_x.invite()])
    nodes += [node_w, node_y]
    wait_started(node_y)
    node_z = start_on(
        z,
        tmp_path,
        "z",
        ["--join", node_y.invite(), "--model", str(model_copy(tiny_gguf, tmp_path, "tiny-z"))],
    )
    nodes.append(node_z)
    wait_started(node_w)
    wait_started(node_z)
    wait_answers(node_y, "tiny-z")
    z_id = node_id(node_z)
    wait_until(lambda: "unreachable from here" in meshctl(node_w, "peers"), 30, "w to show z unreachable")
    assert z_id[:8] in meshctl(node_w, "peers")

    deadline = time.monotonic() + STEADY_WATCH_S
    seen: list[set[str]] = []
    while time.monotonic() < deadline:
        seen.append(listed_models(node_w))
        time.sleep(SAMPLE_EVERY_S)
    assert all("tiny-x" in models and "tiny-z" not in models for models in seen), seen
    assert z_id not in peers_of(node_w)
    status = node_w.http("GET", f"http://127.0.0.1:{node_w.console_port}/api/status", timeout=5).json()
    [z_summary] = [p for p in status["peers"] if p["node_id"] == z_id]
    assert z_summary["path"] == "unreachable"
