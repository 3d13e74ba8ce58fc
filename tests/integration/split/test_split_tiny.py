"""Split inference of a tiny 8-layer GGUF over 2 and 3 real nodes on one machine (issue 4).

Every node gets its own copy of the file and a --max-vram too small to hold it alone, so the mesh
must split it. What a user sees: any node's API answers, with exactly the completion llama.cpp
gives for the same split loaded the stock way; `meshctl plan` shows who holds which share; and
the weights never cross the mesh (the tunnel counts them).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.mesh.invite import InviteToken
from tests.support.link_simulator import LinkConditions, LinkSimulator
from tests.support.node import RunningNode, free_port, wait_until
from tests.support.split import (
    SPLIT_READY_TIMEOUT_S,
    answers,
    completion,
    copies_of,
    meshctl,
    plan_text,
    split_mesh,
    start,
    stock_split,
    tunnels,
)
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.integration

MODEL = "tiny-split"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("split-model") / f"{MODEL}.gguf", n_layers=8, seed=7)


def host_of(nodes: list[RunningNode]) -> RunningNode:
    [host] = [n for n in nodes if "split_host" in plan_text(n)]
    return host


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[list[RunningNode]]:
    nodes: list[RunningNode] = []
    try:
        split_mesh(tmp_path_factory.mktemp("pair"), tiny_model, 2, 0.6, nodes)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def test_two_nodes_answer_with_the_stock_splits_completion(
    pair: list[RunningNode], llama_bin_dir: Path, tmp_path: Path
) -> None:
    host = host_of(pair)
    with stock_split(host, llama_bin_dir, tmp_path) as stock_api:
        expected = completion(stock_api, MODEL)
    assert expected
    for node in pair:
        assert completion(node.api_base, MODEL) == expected


def test_meshctl_plan_shows_roles_and_shares_on_both_nodes(pair: list[RunningNode]) -> None:
    plans = [plan_text(node) for node in pair]
    assert sum("split_host" in text for text in plans) == 1
    assert sum("split_worker" in text for text in plans) == 1
    for text in plans:
        assert f"split of {MODEL}" in text
        assert "host" in text and "worker" in text and "0.50" in text  # equal memory, equal shares


def test_no_weight_bytes_cross_the_mesh(pair: list[RunningNode], tiny_model: Path) -> None:
    host = host_of(pair)
    [to_worker] = [t for t in tunnels(host) if t.host_side and t.model == MODEL]
    assert to_worker.weight_bytes_raw == 0
    # Half the layers live on the worker; they went as references to its own copy.
    assert to_worker.weight_bytes_by_reference > tiny_model.stat().st_size * 0.3
    # Everything sent so far, decode traffic of earlier requests included, is less than the
    # worker's weights alone would have been (for this tiny model graphs are as big as layers).
    assert to_worker.bytes_to_peer < to_worker.weight_bytes_by_reference
    # Each of llama-server's connections took the TLS fast path, or asked only what the worker's
    # rpc-server had answered before (a load repeats its static queries): those never left the host.
    assert to_worker.connections_answered_here > 0
    assert to_worker.fast_path_connections + to_worker.connections_answered_here == to_worker.connections
    shown = meshctl(host, "tunnels")
    assert MODEL in shown and "host" in shown
    assert f"{to_worker.connections} ({to_worker.fast_path_connections} TLS" in shown
    assert f"{to_worker.connections_answered_here} answered here" in shown


def test_three_nodes_split_and_match_the_stock_split(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, llama_bin_dir: Path, tmp_path: Path
) -> None:
    nodes: list[RunningNode] = []
    try:
        # 0.4 of the model each: two nodes hold 0.8 < 1.1, so all three are needed.
        split_mesh(tmp_path_factory.mktemp("trio"), tiny_model, 3, 0.4, nodes)
        host = host_of(nodes)
        assert sum("split_worker" in plan_text(n) for n in nodes) == 2
        with stock_split(host, llama_bin_dir, tmp_path) as stock_api:
            expected = completion(stock_api, MODEL)
        for node in nodes:
            assert completion(node.api_base, MODEL) == expected
        assert all(t.weight_bytes_raw == 0 for t in tunnels(host))
        assert len([t for t in tunnels(host) if t.host_side]) == 2
    finally:
        for node in nodes:
            node.stop()


def test_a_node_past_the_rtt_cap_is_left_out_of_the_split_but_uses_the_api(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
) -> None:
    """C reaches A and B only through 50 ms one-way links (100 ms RTT > the 80 ms cap)."""
    root = tmp_path_factory.mktemp("far")
    disks = copies_of(tiny_model, root, ["a", "b", "c"])
    ports = {name: free_port() for name in "abc"}
    far = LinkConditions(delay_ms=50)
    to_a, to_b, to_c = (LinkSimulator(ports[n], far).start() for n in "abc")
    nodes: list[RunningNode] = []
    try:
        a = start(root, "a", disks["a"], 0.6, ["--bind-port", str(ports["a"])])
        nodes.append(a)
        wait_until(lambda: "Ctrl-C" in a.cli_output(), 60, "A to start")
        token = InviteToken.decode(a.invite())
        # B joins A directly, but anyone who dials B (only C will) goes through the slow link.
        b_args = ["--join", token.encode(), "--bind-port", str(ports["b"])]
        nodes.append(start(root, "b", disks["b"], 0.6, [*b_args, "--advertise", f"127.0.0.1:{to_b.port}"]))
        via_slow_link = InviteToken(token.mesh_id, token.secret, (f"127.0.0.1:{to_a.port}",)).encode()
        c_args = ["--join", via_slow_link, "--bind-port", str(ports["c"])]
        # C has less memory, so it never hosts; it would be a worker but for its RTT.
        c = start(root, "c", disks["c"], 0.5, [*c_args, "--advertise", f"127.0.0.1:{to_c.port}"])
        nodes.append(c)
        for node in nodes:
            wait_until(lambda n=node: answers(n, MODEL), SPLIT_READY_TIMEOUT_S, f"{node.home.name} to answer")
        host = host_of(nodes)
        assert host is not c
        wait_until(lambda: "above the 80 ms cap" in plan_text(host), 30, "the host to name C's RTT")
        assert "split_worker" not in plan_text(c) and "split_host" not in plan_text(c)
        assert not [t for t in tunnels(host) if t.peer_node_id == c.status().node_id]
        assert completion(c.api_base, MODEL)  # C still uses the split through the API
    finally:
        for node in nodes:
            node.stop()
        for simulator in (to_a, to_b, to_c):
            simulator.close()
