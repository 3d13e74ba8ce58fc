"""The living mesh (issue 10) on real, separate addresses: standby nodes take up demand, fetch the
model file from a peer, replace a lost last server within 15 s, and retire when they go cold.

Every host is its own network namespace on one LAN; each node keeps its files in its own store.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.netns import Testbed
from tests.support.netns_mesh import answers, launch, meshctl, node_id, peers_of, wait_answers
from tests.support.node import RunningNode, wait_until

pytestmark = pytest.mark.integration

X = "tiny-x"
DEMAND_INTERVAL_S = 2.0  # ~30 requests/min through the client (the issue: ≥ 20 req/min)
# A killed node is gone from its peers' views within ~4.4 s (bench/RESULTS.md, issue 12).
GONE_WITHIN_S = 15.0
PROMOTED_WITHIN_S = 60.0  # demand decays in over ~10 s, then a fetch and a llama-server start
REPLACED_WITHIN_S = 15.0  # the bar: from kill -9 of the last server to an answer
RETIRE_AFTER_S = 8


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def models_entry(node: RunningNode, model: str) -> dict:
    data = node.http("GET", f"{node.api_base}/models", timeout=5).json()["data"]
    return next((e for e in data if e["id"] == model), {})


def servers_listed(node: RunningNode, model: str) -> set[str]:
    entry = models_entry(node, model)
    if not entry or entry["meshllm"]["state"] != "ready":
        return set()
    return set(entry["meshllm"]["nodes"])


def requests_served(node: RunningNode, model: str) -> int:
    """Requests this node's gateway handled for `model`: for a server no client uses directly, the
    ones the client's gateway forwarded to it."""
    status = node.http("GET", f"http://127.0.0.1:{node.console_port}/api/status", timeout=5).json()
    return int(status["requests_by_model"].get(model, 0))


class Demand:
    """Requests for a model through one node, in the background, counting failures."""

    def __init__(self, node: RunningNode, model: str) -> None:
        self.node, self.model = node, model
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(DEMAND_INTERVAL_S):
            try:
                self.node.chat(self.model, max_tokens=2)
                self.ok += 1
            except (httpx.HTTPError, AssertionError, KeyError) as exc:
                self.failed.append(f"{time.monotonic():.1f} {exc}")

    def __enter__(self) -> Demand:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_standbys_take_up_demand_fetch_from_peers_and_replace_lost_servers(
    testbed: Testbed, tmp_path: Path, tiny_gguf: Path, nodes: list[RunningNode]
) -> None:
    lan = testbed.lan("lan")
    hosts = {name: testbed.host(name) for name in ("ha", "hb", "hc", "hd", "he")}
    for i, host in enumerate(hosts.values()):
        host.attach(lan, f"10.77.50.{i + 1}/24")
    source = tmp_path / "a-store" / f"{X}.gguf"
    source.parent.mkdir()
    source.write_bytes(tiny_gguf.read_bytes())
    a = launch(nodes, hosts["ha"], tmp_path, "a", ["--model", str(source)])
    token = a.invite()
    b = launch(nodes, hosts["hb"], tmp_path, "b", ["--join", token])  # standby, empty store
    c = launch(nodes, hosts["hc"], tmp_path, "c", ["--client", "--join", token])
    assert "Standby" in b.cli_output()
    assert "standby" in meshctl(b, "plan") and "standby" in meshctl(b, "status")
    wait_answers(c, X)

    # 1. Demand through the client: B fetches X from A, serves it, requests are shared.
    with Demand(c, X) as demand:
        wait_until(lambda: len(servers_listed(c, X)) == 2, PROMOTED_WITHIN_S, "B to add a replica of X")
        fetched = b.home / "models" / f"{X}.gguf"
        assert fetched.exists() and sha256(fetched) == sha256(source)
        assert not list((b.home / "models").glob("*.part"))
        assert "promoted" in meshctl(b, "plan")
        assert "standby" not in meshctl(b, "status")
        wait_until(lambda: f"Pool     promoted {X}" in b.cli_output(), 5, "B's terminal to say it took X up")
        wait_until(lambda: requests_served(b, X) >= 3, 30, "B to answer some of the requests")
        served_by_a = requests_served(a, X)
        assert served_by_a >= 3

        # 2. kill -9 A: X keeps answering through C, B serves it.
        failed_before = len(demand.failed)
        a.kill_hard()
        wait_until(lambda: servers_listed(c, X) == {node_id(b)}, 30, "C to route X only to B")
        answered_before = demand.ok
        wait_until(lambda: demand.ok >= answered_before + 3, 10, "demand to keep flowing through B")
    # Only requests in flight on A when it died may fail: at most one in flight at a time.
    lost = demand.failed[failed_before:]
    assert len(lost) <= 1, lost
    assert demand.failed[:failed_before] == []
    assert answers(c, X)

    # 3. D must join as a standby, not as a replica for hot demand. C counts that demand, and a
    # live client's rate takes ~80 s to decay below hot (τ = 60 s); a client that dies takes its
    # demand with it. So C goes (kill -9) and a new client, E, joins.
    c_id = node_id(c)
    c.kill_hard()
    e = launch(nodes, hosts["he"], tmp_path, "e", ["--client", "--join", b.invite()])
    wait_until(lambda: c_id not in peers_of(b) and c_id not in peers_of(e), GONE_WITHIN_S, "C to be gone")
    wait_answers(e, X)
    # D joins with X already in its store; kill -9 B (now the last server): X answers again
    # through E within 15 s, and D's plan says why.
    d_store = tmp_path / "d" / "models"
    d_store.mkdir(parents=True)
    (d_store / f"{X}.gguf").write_bytes(tiny_gguf.read_bytes())
    d = launch(nodes, hosts["hd"], tmp_path, "d", ["--join", e.invite()])
    wait_until(lambda: "standby" in meshctl(d, "plan"), 30, "D to be a standby")
    b.kill_hard()
    died_at = time.monotonic()
    wait_until(lambda: answers(e, X), REPLACED_WITHIN_S, "X to answer again after its last server died")
    replaced_after = time.monotonic() - died_at
    plan = meshctl(d, "plan")
    assert f"{X} lost its last server" in plan, plan
    print(f"X answered again {replaced_after:.1f} s after its last server was killed")


def test_an_extra_replica_retires_when_cold_and_the_last_server_never_does(
    testbed: Testbed, tmp_path: Path, tiny_gguf: Path, nodes: list[RunningNode]
) -> None:
    lan = testbed.lan("lan")
    ha, hb = testbed.host("ra"), testbed.host("rb")
    ha.attach(lan, "10.77.51.1/24")
    hb.attach(lan, "10.77.51.2/24")
    source = tmp_path / "a-store" / f"{X}.gguf"
    source.parent.mkdir()
    source.write_bytes(tiny_gguf.read_bytes())
    retire = ["--retire-after", str(RETIRE_AFTER_S)]
    a = launch(nodes, ha, tmp_path, "a", ["--model", str(source), *retire])
    b_store = tmp_path / "b" / "models"
    b_store.mkdir(parents=True)
    (b_store / f"{X}.gguf").write_bytes(tiny_gguf.read_bytes())
    b = launch(nodes, hb, tmp_path, "b", ["--join", a.invite(), *retire])
    wait_answers(b, X)
    # A dies: B takes X up (a loss adoption) and, as its last server, keeps it however cold.
    a.kill_hard()
    wait_until(lambda: node_id(b) in servers_listed(b, X), REPLACED_WITHIN_S + 5, "B to take X up")
    time.sleep(RETIRE_AFTER_S + 4)
    assert servers_listed(b, X) == {node_id(b)}, "the last server retired"
    # A comes back serving X: B's replica is now extra and cold, so it retires.
    nodes.remove(a)
    a2 = launch(nodes, ha, tmp_path, "a2", ["--model", str(source), "--join", b.invite(), *retire])
    wait_until(lambda: servers_listed(b, X) == {node_id(a2), node_id(b)}, 30, "both to serve X")
    wait_until(lambda: servers_listed(b, X) == {node_id(a2)}, RETIRE_AFTER_S + 20, "B's replica to retire")
    assert "retired" in meshctl(b, "plan")
    assert "standby" in meshctl(b, "plan")
    assert answers(b, X)
