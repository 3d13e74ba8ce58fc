"""`mesh-llm load` / `drop` on running nodes: start and stop serving by hand, and a last server that
is only dropped with --force (two real nodes on this machine, each with its own model store)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netns_mesh import answers, node_id, wait_answers
from tests.support.node import RunningNode, free_port, wait_until

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
X = "tiny-hand"
FETCHED_WITHIN_S = 60.0


def cli(node: RunningNode, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mesh-llm"), *argv, "--home", str(node.home)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def servers_listed(node: RunningNode, model: str) -> set[str]:
    data = node.http("GET", f"{node.api_base}/models", timeout=5).json()["data"]
    entry = next((e for e in data if e["id"] == model), None)
    return set(entry["meshllm"]["nodes"]) if entry and entry["meshllm"]["state"] == "ready" else set()


@pytest.fixture
def pair(tmp_path: Path, tiny_gguf: Path) -> Iterator[tuple[RunningNode, RunningNode]]:
    source = tmp_path / "a-files" / f"{X}.gguf"
    source.parent.mkdir()
    source.write_bytes(tiny_gguf.read_bytes())
    started: list[RunningNode] = []
    try:
        a = RunningNode(
            tmp_path / "a", free_port(), free_port(), ["--name", "a", "--model", str(source)]
        ).start()
        started.append(a)
        wait_answers(a, X)
        b = RunningNode(
            tmp_path / "b", free_port(), free_port(), ["--name", "b", "--join", a.invite()]
        ).start()
        started.append(b)
        wait_until(lambda: "Ctrl-C" in b.cli_output(), 60, "b to start")
        yield a, b
    finally:
        for node in started:
            node.stop()


def test_load_and_drop_by_hand_and_the_last_server_needs_force(pair: tuple[RunningNode, RunningNode]) -> None:
    a, b = pair
    refused = cli(a, "drop", X)
    assert refused.returncode == 1
    assert "last server" in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    unknown = cli(b, "load", "no-such-model")
    assert unknown.returncode == 1 and "no node has 'no-such-model'" in unknown.stderr

    loaded = cli(b, "load", X)
    assert loaded.returncode == 0, loaded.stderr
    assert f"loading {X}" in loaded.stdout
    wait_until(lambda: servers_listed(a, X) == {node_id(a), node_id(b)}, FETCHED_WITHIN_S, "b to serve X")
    assert (b.home / "models" / f"{X}.gguf").exists()  # fetched from a into b's own store

    dropped = cli(a, "drop", X)
    assert dropped.returncode == 0, dropped.stderr
    assert "other nodes keep serving it" in dropped.stdout
    # Both views must have caught up: b decides "last server" from its own.
    wait_until(lambda: servers_listed(a, X) == servers_listed(b, X) == {node_id(b)}, 30, "only b to serve X")
    assert answers(a, X)

    forced = cli(b, "drop", X, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "no longer serves it" in forced.stdout
    wait_until(lambda: not servers_listed(a, X) and not servers_listed(b, X), 30, "X to leave the mesh")
    # Dropped by hand is not lost: nobody takes it up again.
    for _ in range(5):  # absence over time: nothing to poll for
        time.sleep(1)
        assert not servers_listed(a, X)
