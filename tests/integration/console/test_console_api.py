"""The console's contract on a real mesh: `/api/status` fields and types, `/api/events` typed SSE.

A serves tiny-x, B joins serving tiny-y; a client C joins and is killed while A's event stream watches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.node import RunningNode, free_port, wait_until
from tests.support.sse import EventStream
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.integration

MESH_READY_TIMEOUT_S = 60.0
PEER_EVENT_TIMEOUT_S = 30.0
# Liveness declares a silent peer dead within a few seconds (DESIGN §3); the event follows at once.
PEER_LEFT_TIMEOUT_S = 8.0
# request_rate events go out every 5 s when rates moved (services/gateway/console_feed.py).
RATE_EVENT_TIMEOUT_S = 12.0
SHORT_ID_CHARS = 8


def start_node(root: Path, name: str, args: list[str]) -> RunningNode:
    return RunningNode(root / name, free_port(), free_port(), ["--name", name, *args]).start()


def console(node: RunningNode) -> str:
    return f"http://127.0.0.1:{node.console_port}"


def status_of(node: RunningNode) -> dict:
    response = httpx.get(f"{console(node)}/api/status", timeout=5)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningNode]]:
    models = tmp_path_factory.mktemp("models")
    tiny_x = write_tiny_llama_gguf(models / "tiny-x.gguf", seed=1)
    tiny_y = write_tiny_llama_gguf(models / "tiny-y.gguf", seed=2)
    root = tmp_path_factory.mktemp("mesh")
    nodes = {"a": start_node(root, "a", ["--model", str(tiny_x)])}
    try:
        nodes["a"].wait_ready(["tiny-x"])
        nodes["b"] = start_node(root, "b", ["--join", nodes["a"].invite(), "--model", str(tiny_y)])
        nodes["b"].wait_ready(["tiny-y"])
        wait_until(
            lambda: (
                {m["model"]: m["state"] for m in status_of(nodes["a"])["mesh_models"]}
                == {"tiny-x": "ready", "tiny-y": "ready"}
            ),
            MESH_READY_TIMEOUT_S,
            "A's console to show both models ready",
        )
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


def assert_types(obj: dict, fields: dict[str, type | tuple[type, ...]]) -> None:
    for name, kind in fields.items():
        assert name in obj, f"missing field {name!r} in {sorted(obj)}"
        assert isinstance(obj[name], kind), f"{name}={obj[name]!r} is not {kind}"


NODE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "node_id": str,
    "short_id": str,
    "name": str,
    "version": str,
    "api_url": str,
    "console_url": str,
    "invite_token": str,
    "invite_token_hidden": bool,
    "is_client": bool,
    "vram_bytes": int,
    "roles": list,
    "served": list,
    "models_on_disk": list,
    "services": list,
    "models": list,
    "mesh_models": list,
    "peers": list,
    "requests_total": int,
    "requests_in_flight": int,
    "requests_by_model": dict,
    "request_rate_per_min": dict,
    "role": str,
    "standby": bool,
    "standby_reason": str,
    "adopted": list,
    "fetching": list,
    "pool": list,
    "pool_events": list,
}
PEER_FIELDS: dict[str, type | tuple[type, ...]] = {
    "node_id": str,
    "short_id": str,
    "name": str,
    "rtt_ms": (int, float),
    "vram_bytes": int,
    "is_client": bool,
    "models_served": list,
    "served": list,
    "models_on_disk": list,
    "request_rate_per_min": dict,
    "version": str,
    "role": str,
    "standby": bool,
    "standby_reason": str,
    "adopted": list,
    "fetching": list,
}
# Demand goes into gossip at most every few seconds (services/gateway/demand.py), then one round.
DEMAND_GOSSIP_TIMEOUT_S = 15.0


def test_status_describes_this_node(mesh: dict[str, RunningNode]) -> None:
    status = status_of(mesh["a"])
    assert_types(status, NODE_FIELDS)
    assert status["node_id"] == mesh["a"].status().node_id
    assert status["short_id"] == status["node_id"][:SHORT_ID_CHARS]
    assert status["name"] == "a" and not status["is_client"]
    assert status["role"] == "serving" and not status["standby"] and status["fetching"] == []
    assert status["invite_token"].startswith("mesh1-") and not status["invite_token_hidden"]
    assert status["api_url"].endswith(f":{mesh['a'].api_port}/v1")
    assert status["vram_bytes"] > 0
    assert [(r["model"], r["role"]) for r in status["roles"]] == [("tiny-x", "solo")]
    assert [(s["model"], s["role"], s["state"]) for s in status["served"]] == [("tiny-x", "solo", "ready")]
    assert [d["name"] for d in status["models_on_disk"]] == ["tiny-x"]
    assert {s["name"] for s in status["services"]} == {"mesh", "gossip", "placement", "runner", "gateway"}


def test_status_describes_peers_and_mesh_models(mesh: dict[str, RunningNode]) -> None:
    status = status_of(mesh["a"])
    b_id = mesh["b"].status().node_id
    [peer] = status["peers"]
    assert_types(peer, PEER_FIELDS)
    assert peer["node_id"] == b_id and peer["short_id"] == b_id[:SHORT_ID_CHARS] and peer["name"] == "b"
    assert peer["vram_bytes"] > 0 and peer["rtt_ms"] >= 0 and not peer["is_client"]
    assert peer["models_served"] == ["tiny-y"]
    assert [(s["model"], s["role"], s["state"]) for s in peer["served"]] == [("tiny-y", "solo", "ready")]
    assert [d["name"] for d in peer["models_on_disk"]] == ["tiny-y"]
    by_model = {m["model"]: m for m in status["mesh_models"]}
    for model in by_model.values():
        assert_types(model, {"model": str, "state": str, "nodes": list, "placements": list, "detail": str})
    assert by_model["tiny-x"]["nodes"] == [status["node_id"]]
    assert by_model["tiny-y"]["nodes"] == [b_id]
    assert by_model["tiny-y"]["placements"] == [{"node_id": b_id, "role": "solo", "state": "ready"}]


async def test_events_start_with_a_snapshot_and_carry_request_rates(mesh: dict[str, RunningNode]) -> None:
    a = mesh["a"]
    async with EventStream(f"{console(a)}/api/events") as stream:
        first = await stream.wait_for(lambda e: True, 10, "the first event")
        assert stream.content_type.startswith("text/event-stream")
        assert first.kind == "snapshot"
        assert_types(first.data, NODE_FIELDS)
        await asyncio.to_thread(a.chat, "tiny-y", "hi", 4)  # routed to B through the mesh
        rate = await stream.wait_for(
            lambda e: e.kind == "request_rate", RATE_EVENT_TIMEOUT_S, "a request_rate event"
        )
        assert rate.data["request_rate_per_min"]["tiny-y"] > 0
    assert status_of(a)["request_rate_per_min"]["tiny-y"] > 0


def test_demand_is_gossiped_from_where_requests_enter_and_counted_once(mesh: dict[str, RunningNode]) -> None:
    a, b = mesh["a"], mesh["b"]
    a_id = a.status().node_id
    served_before = status_of(b)["requests_by_model"].get("tiny-y", 0)
    for _ in range(3):
        a.chat("tiny-y", "hi", 2)  # enters at A, served by B

    def a_rates_seen_by_b() -> dict:
        [peer] = [p for p in status_of(b)["peers"] if p["node_id"] == a_id]
        # The earlier test's request too: four in the last minute, decayed a little.
        return peer["request_rate_per_min"] if peer["request_rate_per_min"].get("tiny-y", 0) >= 3 else {}

    rates = wait_until(a_rates_seen_by_b, DEMAND_GOSSIP_TIMEOUT_S, "A's demand in B's view of A")
    assert set(rates) == {"tiny-y"}
    b_status = status_of(b)
    # B served them (forwarded through the mesh), but the demand is A's: not counted again at B.
    assert b_status["requests_by_model"]["tiny-y"] >= served_before + 3
    assert "tiny-y" not in b_status["request_rate_per_min"]
    # The pool mesh-wide: tiny-y served by B, with demand.
    b_id = b.status().node_id

    def tiny_y_pool() -> dict:
        pool = {m["model"]: m for m in status_of(a)["pool"]}.get("tiny-y", {})
        return pool if b_id in pool.get("servers", []) and pool["requests_per_min"] > 0 else {}

    pool = wait_until(tiny_y_pool, DEMAND_GOSSIP_TIMEOUT_S, "tiny-y's pool entry with demand")
    assert pool["requests_per_min_per_server"] > 0


async def test_a_node_joining_and_leaving_are_events(mesh: dict[str, RunningNode], tmp_path: Path) -> None:
    a = mesh["a"]
    async with EventStream(f"{console(a)}/api/events") as stream:
        await stream.wait_for(lambda e: e.kind == "snapshot", 10, "the snapshot")
        c = await asyncio.to_thread(start_node, tmp_path, "c", ["--join", a.invite(), "--client"])
        try:
            await asyncio.to_thread(c.wait_ready, [])
            c_id = c.status().node_id
            joined = await stream.wait_for(
                lambda e: e.kind == "peer_joined" and e.data["node_id"] == c_id,
                PEER_EVENT_TIMEOUT_S,
                "C's peer_joined",
            )
            assert_types(joined.data, PEER_FIELDS)
            assert joined.data["name"] == "c" and joined.data["is_client"]
            mark = len(stream.events)
            await asyncio.to_thread(c.kill_hard)
            left = await stream.wait_for(
                lambda e: e.kind == "peer_left" and e.data["node_id"] == c_id,
                PEER_LEFT_TIMEOUT_S,
                "C's peer_left",
                start=mark,
            )
            assert left.data == {"node_id": c_id, "short_id": c_id[:SHORT_ID_CHARS], "name": "c"}
        finally:
            await asyncio.to_thread(c.stop)
    assert [p["name"] for p in status_of(a)["peers"]] == ["b"]
