"""LAN meshes by mDNS, end to end: two real nodes on one machine find each other with `--auto` and no
relay configured (`--lan`: no Nostr at all), and `--auto --relay URL` joins a mesh it finds on the LAN.

mDNS here is real multicast (224.0.0.251:5353) through the machine's interfaces, with multicast
loopback, which this sandbox allows — no network namespaces needed. Other tests on the machine may
announce meshes too: the mesh name is unique per run, and `--mesh-name` joins only that name.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli.node_status import node_peers
from services.mesh.invite import InviteToken
from tests.support.node import MESH_LLM, RunningNode, free_port, wait_until
from tests.support.nostr_relay import start_relay, stop_all

pytestmark = pytest.mark.integration

ANNOUNCED_WITHIN_S = 15.0


@pytest.fixture
def nodes() -> Iterator[list[RunningNode]]:
    started: list[RunningNode] = []
    yield started
    stop_all(started)


def lan_listings(name: str) -> list[dict]:
    out = subprocess.run(
        [str(MESH_LLM), "discover", "--lan", "--json"], capture_output=True, text=True, timeout=30, check=True
    )
    return [m for m in json.loads(out.stdout) if m["name"] == name]


def test_two_nodes_find_each_other_on_the_lan_without_a_relay(
    tmp_path: Path, tiny_gguf: Path, nodes: list[RunningNode]
) -> None:
    name = f"lan-party-{uuid.uuid4().hex[:8]}"
    first = RunningNode(
        tmp_path / "first",
        free_port(),
        free_port(),
        ["--auto", "--lan", "--mesh-name", name, "--model", str(tiny_gguf), "--max-vram", "1"],
    ).start()
    nodes.append(first)
    first.wait_ready(["tiny-llama"])
    assert f'starting a new LAN mesh "{name}"' in first.cli_output()
    assert "Nostr" not in first.cli_output()
    [entry] = wait_until(lambda: lan_listings(name), ANNOUNCED_WITHIN_S, "the mDNS announcement")
    assert entry["source"] == "lan"
    assert entry["mesh_id"] == InviteToken.decode(first.invite()).mesh_id_hex

    second = RunningNode(
        tmp_path / "second", free_port(), free_port(), ["--auto", "--lan", "--client", "--mesh-name", name]
    ).start()
    nodes.append(second)
    second.wait_ready([])
    assert f'--auto: joining "{name}" (lan) — on your LAN' in second.cli_output()
    first_id = first.status().node_id
    wait_until(
        lambda: {p.node_id for p in node_peers(second.node_home).peers} == {first_id}, 10, "the LAN join"
    )
    # The client reaches the first node's model through the mesh.
    wait_until(lambda: second.servers_of("tiny-llama") == [first_id], 15, "the model routed over the mesh")

    # --relay without --lan: --auto looks on the relay and the LAN, and joins what the LAN offers
    # (the relay lists nothing). Joining a LAN mesh keeps this node to the LAN; --relay was only where
    # to look, never the user's "--lan --relay" conflict.
    relay = start_relay()
    try:
        third = RunningNode(
            tmp_path / "third",
            free_port(),
            free_port(),
            ["--auto", "--client", "--mesh-name", name, "--relay", relay.url],
        ).start()
        nodes.append(third)
        third.wait_ready([])
    finally:
        relay.stop()
    assert f'--auto: joining "{name}" (lan)' in third.cli_output()
    wait_until(
        lambda: first_id in {p.node_id for p in node_peers(third.node_home).peers}, 10, "the relay+LAN join"
    )

    # A private mesh (no --publish, --mesh-name or --lan) is never announced: its token stays secret.
    private = RunningNode(tmp_path / "private", free_port(), free_port(), ["--client"]).start()
    nodes.append(private)
    private.wait_ready([])
    private_mesh = InviteToken.decode(private.invite()).mesh_id_hex
    out = subprocess.run(
        [str(MESH_LLM), "discover", "--lan", "--json"], capture_output=True, text=True, timeout=30, check=True
    )
    assert private_mesh not in out.stdout
    assert private.log_contains("discovery", "private mesh: nothing to publish")
