"""Public meshes on Nostr, end to end: real nodes, the real `mesh-llm` CLI, a real relay.

The relay is nostr-sdk's LocalRelay in its own process on 127.0.0.1 (tests/support/nostr_relay.py):
public relays are not reachable from test machines, so every command gets `--relay ws://127.0.0.1:P`.
`--no-lan` keeps mDNS out of these tests (test_lan.py covers it), so what is found here was found
through the relay. The tests run in file order against one set of nodes:

  A  --auto --mesh-name poker-night --max-clients 1 --model tiny  finds nothing: creates, publishes
                                                                    to two relays (--relay twice)
  C  --client --auto                                              joins A's mesh; A is full, delisted
  D  --mesh-name other-game --model tiny --max-vram 4             a bigger mesh of another name
  B  --auto --mesh-name poker-night --model tiny                  joins A's mesh, never D's
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli.node_status import node_peers
from services.mesh.invite import InviteToken
from tests.support.node import MESH_LLM, RunningNode, free_port, wait_until
from tests.support.nostr_relay import RunningRelay, start_relay, stop_all

pytestmark = pytest.mark.integration

LISTED_WITHIN_S = 10.0
DELIST_WITHIN_S = 10.0
TAKEOVER_WITHIN_S = 15.0


@pytest.fixture(scope="module")
def relay() -> Iterator[RunningRelay]:
    running = start_relay()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def second_relay() -> Iterator[RunningRelay]:
    running = start_relay()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningNode]]:
    started: dict[str, RunningNode] = {}
    yield started
    stop_all(list(started.values()))


def discover(relay: RunningRelay, *args: str) -> list[dict]:
    out = subprocess.run(
        [str(MESH_LLM), "discover", "--relay", relay.url, "--no-lan", "--json", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(out.stdout)


def listed(relay: RunningRelay, name: str) -> dict | None:
    matches = [m for m in discover(relay) if m["name"] == name]
    return matches[0] if matches else None


def start(root: Path, nodes: dict[str, RunningNode], name: str, args: list[str]) -> RunningNode:
    node = RunningNode(root / name, free_port(), free_port(), ["--name", name, "--no-lan", *args]).start()
    nodes[name] = node
    return node


def mesh_id(node: RunningNode) -> str:
    from services.cli.node_status import node_invite

    return InviteToken.decode(node_invite(node.node_home).token).mesh_id_hex


def peer_names(node: RunningNode) -> set[str]:
    return {p.name for p in node_peers(node.node_home).peers}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nostr")


def test_first_auto_mesh_name_creates_and_publishes_and_discover_lists_it(
    relay: RunningRelay,
    second_relay: RunningRelay,
    nodes: dict[str, RunningNode],
    root: Path,
    tiny_gguf: Path,
) -> None:
    a = start(
        root,
        nodes,
        "a",
        [
            *("--auto", "--mesh-name", "poker-night", "--max-clients", "1", "--region", "AU"),
            *("--model", str(tiny_gguf), "--max-vram", "1", "--relay", relay.url),
            *("--relay", second_relay.url),
        ],
    )
    a.wait_ready(["tiny-llama"])
    assert '--auto: no joinable mesh named "poker-night" among 0 meshes on 2 relays' in a.cli_output()
    assert 'starting a new public mesh "poker-night"' in a.cli_output()
    ready_at = time.monotonic()
    entry = wait_until(lambda: listed(relay, "poker-night"), LISTED_WITHIN_S, "poker-night on the relay")
    assert time.monotonic() - ready_at < LISTED_WITHIN_S
    assert entry["mesh_id"] == mesh_id(a)
    assert entry["region"] == "AU" and entry["max_clients"] == 1
    assert entry["nodes"] == 1 and entry["clients"] == 0 and entry["vram_bytes"] == 1 << 30
    wait_until(
        lambda: listed(relay, "poker-night")["models_served"] == ["tiny-llama"],  # type: ignore[index]
        LISTED_WITHIN_S,
        "the served model in the listing",
    )
    assert [m["name"] for m in discover(relay, "--model", "tiny-llama", "--region", "au")] == ["poker-night"]
    assert discover(relay, "--region", "US-West") == []
    # --relay is repeatable: the listing is on every relay named.
    assert [m["mesh_id"] for m in discover(second_relay)] == [entry["mesh_id"]]
    assert discover(relay, "--model", "no-such-model") == []
    table = subprocess.run(
        [str(MESH_LLM), "discover", "--relay", relay.url, "--no-lan"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    header, row = table.splitlines()[:2]
    assert header.split() == ["MESH", "WHERE", "REGION", "MODELS", "NODES", "CLIENTS", "VRAM", "AGE"]
    assert row.split()[:6] == ["poker-night", "nostr", "AU", "tiny-llama", "1", "0/1"]


def test_client_auto_joins_then_max_clients_delists_until_it_leaves(
    relay: RunningRelay, nodes: dict[str, RunningNode], root: Path
) -> None:
    c = start(root, nodes, "c", ["--client", "--auto", "--relay", relay.url])
    c.wait_ready([])
    assert '--auto: joining "poker-night" (nostr)' in c.cli_output()
    assert mesh_id(c) == mesh_id(nodes["a"])
    wait_until(lambda: peer_names(c) == {"a"}, 10, "C connected to A")
    # One client of at most one: the listing is taken down (replaced by a stub without the token).
    wait_until(
        lambda: listed(relay, "poker-night") is None, DELIST_WITHIN_S, "poker-night delisted while full"
    )
    c.stop()
    entry = wait_until(lambda: listed(relay, "poker-night"), DELIST_WITHIN_S + 5, "poker-night relisted")
    assert entry["clients"] == 0


def test_auto_mesh_name_never_joins_a_mesh_of_another_name(
    relay: RunningRelay, nodes: dict[str, RunningNode], root: Path, tiny_gguf: Path
) -> None:
    d = start(
        root,
        nodes,
        "d",
        ["--mesh-name", "other-game", "--model", str(tiny_gguf), "--max-vram", "4", "--relay", relay.url],
    )
    d.wait_ready(["tiny-llama"])
    wait_until(lambda: listed(relay, "other-game"), LISTED_WITHIN_S, "other-game on the relay")
    b = start(
        root,
        nodes,
        "b",
        [
            *("--auto", "--mesh-name", "poker-night", "--model", str(tiny_gguf), "--max-vram", "1"),
            *("--relay", relay.url),
        ],
    )
    b.wait_ready(["tiny-llama"])
    assert '--auto: joining "poker-night" (nostr)' in b.cli_output()
    assert mesh_id(b) == mesh_id(nodes["a"]) != mesh_id(d)
    wait_until(lambda: peer_names(b) == {"a"}, 10, "B connected to A only")
    assert "b" not in peer_names(d)


def test_stopping_the_publisher_lets_another_member_take_over(
    relay: RunningRelay, nodes: dict[str, RunningNode]
) -> None:
    a, b = nodes["a"], nodes["b"]
    a_id, b_id = a.status().node_id, b.status().node_id
    expected_first = min(a_id, b_id)
    entry = wait_until(
        lambda: listed(relay, "poker-night")["nodes"] == 2 and listed(relay, "poker-night"),  # type: ignore[index]
        LISTED_WITHIN_S,
        "the listing to count both nodes",
    )
    assert entry["publisher_node_id"] == expected_first
    publisher, survivor = (a, b) if expected_first == a_id else (b, a)
    assert publisher.stop() == 0
    survivor_id = survivor.status().node_id
    entry = wait_until(
        lambda: (m := listed(relay, "poker-night")) and m["publisher_node_id"] == survivor_id and m,
        TAKEOVER_WITHIN_S,
        "the survivor to publish the listing",
    )
    assert entry["mesh_id"] == mesh_id(survivor)
    assert entry["nodes"] == 1
    # The listed token now dials the survivor (the publisher's own invite), so newcomers still get in.
    assert set(InviteToken.decode(survivor.invite()).addresses) <= set(
        InviteToken.decode(entry["token"]).addresses
    )


def test_bad_discovery_arguments_are_one_line_and_exit_2(tmp_path: Path) -> None:
    cases = [
        (["--auto", "--join", "mesh1-x"], "--auto finds a mesh to join"),
        (["--model", "x.gguf", "--max-clients", "2"], "--max-clients only applies to a listed mesh"),
        (["--publish", "--relay", "http://nope"], "is not a relay URL"),
        (["--max-clients", "0", "--publish"], "must be at least 1"),
        (["--lan", "--no-lan", "--auto"], "not allowed with argument"),
        (["--auto", "--lan", "--relay", "ws://127.0.0.1:1"], "--lan keeps to the local network"),
        (["--mesh-name", "bad\x07name"], "control characters"),
    ]
    for args, message in cases:
        out = subprocess.run(
            [str(MESH_LLM), "--home", str(tmp_path), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 2, (args, out.stderr)
        assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, (args, out.stderr)


def test_discover_says_when_no_relay_could_be_reached(tmp_path: Path) -> None:
    """An unreachable relay (here: a closed local port) is said, not reported as an empty mesh list."""
    dead = f"ws://127.0.0.1:{free_port()}"
    out = subprocess.run(
        [str(MESH_LLM), "discover", "--relay", dead, "--no-lan"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert f"no Nostr relay could be reached: {dead}" in out.stderr
    assert "Traceback" not in out.stderr
