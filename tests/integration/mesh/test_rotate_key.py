"""`rotate-key` (DESIGN §3): members get the new secret and stay; old tokens stop admitting."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services.mesh.invite import InviteToken
from services.mesh.membership import MeshMembership
from tests.support.node import RunningNode, free_port, wait_until

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
SECRET_SPREAD_TIMEOUT_S = 10.0
JOIN_TIMEOUT_S = 30.0
CLI_TIMEOUT_S = 30.0


def start_node(root: Path, name: str, args: list[str]) -> RunningNode:
    return RunningNode(root / name, free_port(), free_port(), ["--name", name, *args]).start()


def stop_all(nodes: list[RunningNode]) -> None:
    """In parallel: each node takes seconds to stop its services."""
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(lambda node: node.stop(), nodes))


def peers_by_id(node: RunningNode) -> dict[str, float]:
    """Peer id -> when its link was made (a reconnect would change it)."""
    from services.cli.node_status import node_peers

    return {p.node_id: p.connected_unix_s for p in node_peers(node.node_home).peers}


def stored_secret(node: RunningNode) -> bytes:
    membership = MeshMembership.load(node.node_home.mesh_config)
    assert membership is not None
    return membership.secret


def rotate(argv: list[str]) -> InviteToken:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr
    assert "old invite tokens no longer admit" in result.stdout
    return InviteToken.decode(result.stdout.strip().splitlines()[-1])


def test_rotate_key_keeps_members_and_only_the_new_token_admits(tmp_path: Path) -> None:
    a = start_node(tmp_path, "a", ["--client"])
    nodes = [a]
    try:
        a.wait_ready([])
        first = InviteToken.decode(a.invite())
        b = start_node(tmp_path, "b", ["--client", "--join", first.encode()])
        nodes.append(b)
        b.wait_ready([])
        a_id, b_id = a.status().node_id, b.status().node_id
        wait_until(lambda: b_id in peers_by_id(a) and a_id in peers_by_id(b), JOIN_TIMEOUT_S, "B to join A")
        link_made = peers_by_id(a)[b_id]

        # Both spellings: the node's home before and after the command.
        second = rotate([str(BIN / "meshctl"), "--home", str(a.home), "rotate-key"])
        assert second.mesh_id == first.mesh_id and second.secret != first.secret
        wait_until(lambda: stored_secret(b) == second.secret, SECRET_SPREAD_TIMEOUT_S, "B to get secret 2")
        third = rotate([str(BIN / "mesh-llm"), "rotate-key", "--home", str(a.home)])
        assert third.secret not in (first.secret, second.secret)
        wait_until(lambda: stored_secret(b) == third.secret, SECRET_SPREAD_TIMEOUT_S, "B to get secret 3")
        assert stored_secret(a) == third.secret
        assert InviteToken.decode(a.invite()).secret == third.secret
        # B never dropped: same link, made before the rotations.
        assert peers_by_id(a) == {b_id: link_made}
        assert set(peers_by_id(b)) == {a_id}

        stale = [
            start_node(tmp_path, f"stale{i}", ["--client", "--join", token.encode()])
            for i, token in enumerate((first, second))
        ]
        nodes.extend(stale)
        fresh = start_node(tmp_path, "fresh", ["--client", "--join", third.encode()])
        nodes.append(fresh)
        for node in [*stale, fresh]:
            node.wait_ready([])
        fresh_id = fresh.status().node_id
        stale_ids = {node.status().node_id for node in stale}
        for node in (a, b):
            wait_until(lambda n=node: fresh_id in peers_by_id(n), JOIN_TIMEOUT_S, "the new token's node")
        for node in stale:
            # The stale node reports the refusal once it has been told "wrong mesh secret".
            wait_until(
                lambda n=node: n.log_contains("mesh", "wrong mesh secret"),
                JOIN_TIMEOUT_S,
                f"{node.home.name} to be refused",
            )
            assert peers_by_id(node) == {}
        assert a.log_contains("mesh", "refused a node")
        for node in (a, b, fresh):
            assert not set(peers_by_id(node)) & stale_ids
        assert set(peers_by_id(a)) == {b_id, fresh_id}
        assert set(peers_by_id(b)) == {a_id, fresh_id}
        assert stored_secret(fresh) == third.secret
    finally:
        stop_all(nodes)
