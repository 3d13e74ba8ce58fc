"""The pool on a real mesh, as `/api/status` and `/api/events` show it: a node started without a model
is a standby (on its own console and its peers'), requests are shared between a model's replicas, and
a standby taking up a hot model is a live event on every console.

A serves tiny-x; S joins with no model (a standby); R joins for a while serving tiny-x too. The tests
run in file order: the last one makes tiny-x hot.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from services.proto.meshllm.gossip.v1 import gossip_pb2, gossip_pb2_grpc
from tests.support.node import RunningNode, free_port, wait_until
from tests.support.sse import EventStream, SseEvent
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.integration

X = "tiny-x"
MESH_READY_TIMEOUT_S = 60.0
ROLE_TIMEOUT_S = 30.0
# Few enough that no placement takes tiny-x for hot (≥ 10 req/min per server, DESIGN §5)...
SEQUENTIAL_REQUESTS = 4
# ... and then enough that it does.
HOT_REQUESTS = 20
# Demand goes into gossip at most every few seconds (services/gateway/demand.py).
DEMAND_TIMEOUT_S = 15.0
PROMOTED_WITHIN_S = 60.0  # demand decays in over ~10 s, then a fetch and a llama-server start


def start_node(root: Path, name: str, args: list[str]) -> RunningNode:
    return RunningNode(root / name, free_port(), free_port(), ["--name", name, *args]).start()


def console(node: RunningNode) -> str:
    return f"http://127.0.0.1:{node.console_port}"


def status_of(node: RunningNode) -> dict:
    response = httpx.get(f"{console(node)}/api/status", timeout=5)
    response.raise_for_status()
    return response.json()


def peer_in(status: dict, node_id: str) -> dict:
    return next(p for p in status["peers"] if p["node_id"] == node_id)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / f"{X}.gguf"
    return write_tiny_llama_gguf(path, seed=1)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Iterator[dict[str, RunningNode]]:
    root = tmp_path_factory.mktemp("pool")
    nodes = {"a": start_node(root, "a", ["--model", str(models)])}
    try:
        nodes["a"].wait_ready([X])
        nodes["s"] = start_node(root, "s", ["--join", nodes["a"].invite()])
        nodes["s"].wait_ready([])
        wait_until(lambda: nodes["s"].servers_of(X), MESH_READY_TIMEOUT_S, "S to route tiny-x to A")
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


def test_a_node_without_a_model_is_a_standby_here_and_on_its_peers(mesh: dict[str, RunningNode]) -> None:
    a, s = mesh["a"], mesh["s"]
    s_id = s.status().node_id

    def standby_here() -> dict:
        status = status_of(s)
        return status if status["standby"] else {}

    status = wait_until(standby_here, ROLE_TIMEOUT_S, "S's console to say standby")
    assert status["role"] == "standby" and status["standby_reason"]
    assert status["served"] == [] and status["adopted"] == [] and status["fetching"] == []

    def s_seen_from_a() -> dict:
        peer = peer_in(status_of(a), s_id)
        return peer if peer["standby"] else {}

    peer = wait_until(s_seen_from_a, ROLE_TIMEOUT_S, "A's console to show S as a standby")
    assert peer["role"] == "standby" and peer["standby_reason"]
    assert status_of(a)["role"] == "serving"
    assert peer_in(status_of(s), a.status().node_id)["role"] == "serving"


async def test_the_event_stream_starts_with_the_pool(mesh: dict[str, RunningNode]) -> None:
    async with EventStream(f"{console(mesh['s'])}/api/events") as stream:
        first = await stream.wait_for(lambda e: True, 10, "the first event")
    assert first.kind == "snapshot" and first.data["standby"]
    assert isinstance(first.data["pool"], list) and isinstance(first.data["pool_events"], list)


def test_sequential_requests_are_shared_between_replicas(
    mesh: dict[str, RunningNode], models: Path, tmp_path: Path
) -> None:
    a, s = mesh["a"], mesh["s"]
    r = start_node(tmp_path, "r", ["--join", a.invite(), "--model", str(models)])
    try:
        r.wait_ready([X])
        a_id, r_id = a.status().node_id, r.status().node_id
        for node in (a, s):
            wait_until(lambda n=node: n.servers_of(X) == sorted([a_id, r_id]), 30, "two servers of tiny-x")
        before = {key: status_of(node)["requests_by_model"].get(X, 0) for key, node in (("a", a), ("r", r))}
        # Through A, which serves tiny-x itself: one at a time, its idle llama-server answers (no
        # mesh hop); R gets A's requests only when A is busier (fewest in flight, unit-tested).
        for _ in range(SEQUENTIAL_REQUESTS):
            a.chat(X, "hi", 2)
        assert status_of(r)["requests_by_model"].get(X, 0) == before["r"]
        assert status_of(a)["requests_by_model"][X] - before["a"] == SEQUENTIAL_REQUESTS
        # Through S, a standby: both replicas get a share; each request counted as demand once (at S).
        before_r = status_of(r)["requests_by_model"].get(X, 0)
        for _ in range(SEQUENTIAL_REQUESTS):
            s.chat(X, "hi", 2)
        assert status_of(r)["requests_by_model"].get(X, 0) - before_r >= SEQUENTIAL_REQUESTS // 2 - 1
        assert X not in status_of(r)["request_rate_per_min"]
    finally:
        r.stop()


def gossiped_rates(node: RunningNode) -> dict[str, float]:
    """This node's own record as its gossip service holds it."""
    with grpc.insecure_channel(node.node_home.grpc_target("gossip")) as channel:
        view = gossip_pb2_grpc.GossipStub(channel).GetView(gossip_pb2.GetViewRequest(), timeout=2)
    local = next(n for n in view.nodes if n.node_id == view.local_node_id)
    return dict(local.request_rate_per_min)


def test_demand_is_published_again_after_gossip_restarts(mesh: dict[str, RunningNode]) -> None:
    a = mesh["a"]
    a.chat(X, "hi", 2)
    wait_until(lambda: X in gossiped_rates(a), DEMAND_TIMEOUT_S, "A's demand in its gossip record")
    gossip_pid = a.service_pid("gossip")
    os.kill(gossip_pid, signal.SIGKILL)  # supervisord starts a fresh one, with a fresh record
    wait_until(lambda: a.service_pid("gossip") != gossip_pid, 30, "gossip to be restarted")
    rates = wait_until(
        lambda: gossiped_rates(a), DEMAND_TIMEOUT_S, "A's demand back in the new gossip's record"
    )
    assert rates[X] > 0
    # The fresh record lists tiny-x as served again once placement re-reports it: S routes to A.
    wait_until(lambda: mesh["s"].servers_of(X), MESH_READY_TIMEOUT_S, "S to route tiny-x to A again")


async def test_a_promotion_shows_on_both_consoles_as_it_happens(mesh: dict[str, RunningNode]) -> None:
    a, s = mesh["a"], mesh["s"]
    s_id = s.status().node_id

    def promoted(event: SseEvent) -> bool:
        return (
            event.kind == "pool_event" and event.data["kind"] == "promoted" and event.data["node_id"] == s_id
        )

    async with (
        EventStream(f"{console(s)}/api/events") as on_s,
        EventStream(f"{console(a)}/api/events") as on_a,
    ):
        await on_s.wait_for(lambda e: e.kind == "snapshot", 10, "S's snapshot")
        await on_a.wait_for(lambda e: e.kind == "snapshot", 10, "A's snapshot")
        # Hot: well over 10 req/min on A, tiny-x's only server. S takes it up (and fetches the file).
        for _ in range(HOT_REQUESTS):
            await asyncio.to_thread(s.chat, X, "hi", 2)
        here = await on_s.wait_for(promoted, PROMOTED_WITHIN_S, "S's own promotion event")
        assert here.data["model"] == X and here.data["reason"] and here.data["name"] == "s"
        seen = await on_a.wait_for(promoted, PROMOTED_WITHIN_S, "S's promotion on A's console")
        assert seen.data["model"] == X and seen.data["reason"]

    def serving_now() -> dict:
        status = status_of(s)
        return status if status["role"] == "serving" else {}

    status = await asyncio.to_thread(wait_until, serving_now, PROMOTED_WITHIN_S, "S to serve tiny-x")
    assert not status["standby"] and [a["model"] for a in status["adopted"]] == [X]
    assert [e["kind"] for e in status["pool_events"] if e["model"] == X][-1] == "promoted"
