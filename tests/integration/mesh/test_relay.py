"""A and C cannot reach each other; both reach B: they still see each other, through B (DESIGN §3).

A and C advertise only the addresses of link simulators that drop every packet, so every direct
dial between them fails; B joins A and C joins B on real addresses. A and C then learn each other
from B and fall back to a stream-level relay through B.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.mesh.invite import InviteToken
from services.proto.meshllm.mesh.v1 import mesh_pb2
from tests.support.link_simulator import LinkConditions, LinkSimulator
from tests.support.node import RunningNode, free_port, wait_until
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.integration

RELAY_TIMEOUT_S = 30.0
ROUTE_TIMEOUT_S = 30.0
BIN = Path(sys.executable).parent


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_node(root: Path, name: str, args: list[str]) -> RunningNode:
    return RunningNode(root / name, free_port(), free_port(), ["--name", name, *args]).start()


def peers_of(node: RunningNode) -> dict[str, mesh_pb2.Peer]:
    from services.cli.node_status import node_peers

    return {p.node_id: p for p in node_peers(node.node_home).peers}


def relayed(viewer: RunningNode, target_id: str, relay_id: str) -> bool:
    peer = peers_of(viewer).get(target_id)
    return peer is not None and peer.path == mesh_pb2.PEER_PATH_RELAYED and peer.relay_node_id == relay_id


def mesh_address(node: RunningNode) -> str:
    return f"127.0.0.1:{(node.node_home.run / 'mesh-port').read_text().strip()}"


def models_listed(node: RunningNode) -> set[str]:
    return {m["id"] for m in httpx.get(f"{node.api_base}/models", timeout=5).json()["data"]}


@dataclass
class RelayedMesh:
    nodes: dict[str, RunningNode]
    simulators: list[LinkSimulator]  # in front of A, in front of C


@pytest.fixture(scope="module")
def relayed_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayedMesh]:
    root = tmp_path_factory.mktemp("relay")
    model = write_tiny_llama_gguf(root / "tiny-x.gguf", seed=1)
    a_port, c_port = free_udp_port(), free_udp_port()
    blackhole = LinkConditions(blackhole=True)
    simulators = [LinkSimulator(a_port, blackhole).start(), LinkSimulator(c_port, blackhole).start()]
    sim_a, sim_c = simulators
    nodes: dict[str, RunningNode] = {}
    try:
        nodes["a"] = start_node(
            root,
            "a",
            ["--model", str(model), "--bind-port", str(a_port), "--advertise", f"127.0.0.1:{sim_a.port}"],
        )
        nodes["a"].wait_ready(["tiny-x"])
        advertised = InviteToken.decode(nodes["a"].invite())
        assert f"127.0.0.1:{a_port}" not in advertised.addresses
        direct_to_a = InviteToken(advertised.mesh_id, advertised.secret, (f"127.0.0.1:{a_port}",))
        nodes["b"] = start_node(root, "b", ["--client", "--join", direct_to_a.encode()])
        nodes["b"].wait_ready([])
        direct_to_b = InviteToken(advertised.mesh_id, advertised.secret, (mesh_address(nodes["b"]),))
        nodes["c"] = start_node(
            root,
            "c",
            [
                "--client",
                "--join",
                direct_to_b.encode(),
                "--bind-port",
                str(c_port),
                "--advertise",
                f"127.0.0.1:{sim_c.port}",
            ],
        )
        nodes["c"].wait_ready([])
        yield RelayedMesh(nodes, simulators)
    finally:
        if nodes:
            with ThreadPoolExecutor(len(nodes)) as pool:
                list(pool.map(lambda node: node.stop(), nodes.values()))
        for simulator in simulators:
            simulator.close()


def test_a_and_c_see_each_other_relayed_through_b(relayed_mesh: RelayedMesh) -> None:
    nodes = relayed_mesh.nodes
    a, c = nodes["a"], nodes["c"]
    ids = {name: node.status().node_id for name, node in nodes.items()}
    wait_until(lambda: relayed(c, ids["a"], ids["b"]), RELAY_TIMEOUT_S, "C to reach A through B")
    wait_until(lambda: relayed(a, ids["c"], ids["b"]), RELAY_TIMEOUT_S, "A to reach C through B")
    for name, node in nodes.items():
        assert set(peers_of(node)) == set(ids.values()) - {ids[name]}
    for viewer, target in (("a", "b"), ("b", "a"), ("b", "c"), ("c", "b")):
        assert peers_of(nodes[viewer])[ids[target]].path == mesh_pb2.PEER_PATH_DIRECT

    table = subprocess.run(
        [str(BIN / "meshctl"), "--home", str(c.home), "peers"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env=dict(os.environ, COLUMNS="200"),
    ).stdout
    rows = {line.strip("│ ")[:8]: line for line in table.splitlines()}
    assert f"relayed via {ids['b'][:8]}" in rows[ids["a"][:8]]
    assert "direct" in rows[ids["b"][:8]]
    assert "relayed" not in rows[ids["b"][:8]]


def test_direct_dials_between_a_and_c_died_at_the_simulators(relayed_mesh: RelayedMesh) -> None:
    # Every packet A and C sent towards each other's advertised address was dropped: none got through.
    wait_until(
        lambda: sum(s.packets_dropped for s in relayed_mesh.simulators) > 0,
        RELAY_TIMEOUT_S,
        "a direct dial between A and C",
    )
    assert relayed_mesh.simulators[0].packets_forwarded == 0
    assert relayed_mesh.simulators[1].packets_forwarded == 0


def test_c_answers_for_a_model_served_only_on_a_through_the_relay(relayed_mesh: RelayedMesh) -> None:
    a, c = relayed_mesh.nodes["a"], relayed_mesh.nodes["c"]
    a_id, b_id = a.status().node_id, relayed_mesh.nodes["b"].status().node_id
    wait_until(lambda: relayed(c, a_id, b_id), RELAY_TIMEOUT_S, "C to reach A through B")
    wait_until(lambda: c.servers_of("tiny-x") == [a_id], ROUTE_TIMEOUT_S, "C to route X to A")
    assert "tiny-x" in models_listed(c)
    reply = c.chat("tiny-x", max_tokens=8)
    assert reply["model"] == "tiny-x"
    assert reply["choices"][0]["message"]["content"]
    # The same bytes as asking A itself (temperature 0, same server): nothing lost on the way.
    body = {"model": "tiny-x", "prompt": "abc", "max_tokens": 12, "temperature": 0}
    local = httpx.post(f"{a.api_base}/completions", json=body, timeout=30).json()
    through_b = httpx.post(f"{c.api_base}/completions", json=body, timeout=30).json()
    assert through_b["choices"][0]["text"] == local["choices"][0]["text"]
    assert relayed(c, a_id, b_id)
