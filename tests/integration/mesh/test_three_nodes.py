"""Three real nodes on one machine: A serves X, B serves Y, C is an API-only client (issue: the mesh)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from services.mesh.invite import InviteToken
from tests.support.node import RunningNode, free_port, wait_until
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.integration

PEER_GONE_DEADLINE_S = 5.0


def start_node(root: Path, name: str, args: list[str]) -> RunningNode:
    return RunningNode(root / name, free_port(), free_port(), ["--name", name, *args]).start()


def models_listed(node: RunningNode) -> set[str]:
    return {m["id"] for m in httpx.get(f"{node.api_base}/models", timeout=5).json()["data"]}


def peer_ids(node: RunningNode) -> set[str]:
    from services.cli.node_status import node_peers

    return {p.node_id for p in node_peers(node.node_home).peers}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "tiny-x": write_tiny_llama_gguf(root / "tiny-x.gguf", seed=1),
        "tiny-y": write_tiny_llama_gguf(root / "tiny-y.gguf", seed=2),
    }


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]
) -> Iterator[dict[str, RunningNode]]:
    root = tmp_path_factory.mktemp("mesh")
    a = start_node(root, "a", ["--model", str(models["tiny-x"])])
    nodes = {"a": a}
    try:
        a.wait_ready(["tiny-x"])
        token = a.invite()
        nodes["b"] = start_node(root, "b", ["--join", token, "--model", str(models["tiny-y"])])
        nodes["c"] = start_node(root, "c", ["--join", token, "--client"])
        nodes["b"].wait_ready(["tiny-y"])
        nodes["c"].wait_ready([])
        for node in nodes.values():
            wait_until(
                lambda n=node: models_listed(n) >= {"tiny-x", "tiny-y"},
                30,
                f"{node.home.name} to list X and Y",
            )
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


def test_every_node_lists_both_models_with_their_servers(mesh: dict[str, RunningNode]) -> None:
    ids = {name: node.status().node_id for name, node in mesh.items()}
    for node in mesh.values():
        listing = httpx.get(f"{node.api_base}/models", timeout=5).json()["data"]
        by_id = {m["id"]: m for m in listing}
        assert set(by_id) == {"tiny-x", "tiny-y"}
        assert by_id["tiny-x"]["meshllm"]["nodes"] == [ids["a"]]
        assert by_id["tiny-y"]["meshllm"]["nodes"] == [ids["b"]]


def test_every_node_answers_for_both_models_with_the_openai_sdk(mesh: dict[str, RunningNode]) -> None:
    for node in mesh.values():
        client = openai.OpenAI(base_url=node.api_base, api_key="dummy")
        for model in ("tiny-x", "tiny-y"):
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0
            )
            assert reply.choices[0].message.content
            stream = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=8,
                temperature=0,
                stream=True,
            )
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_remote_answer_equals_local_answer(mesh: dict[str, RunningNode]) -> None:
    """Forwarding changes nothing in the bytes of the answer (temperature 0, same server)."""
    body = {"model": "tiny-y", "prompt": "abc", "max_tokens": 12, "temperature": 0}
    local = httpx.post(f"{mesh['b'].api_base}/completions", json=body, timeout=30).json()
    remote = httpx.post(f"{mesh['c'].api_base}/completions", json=body, timeout=30).json()
    assert remote["choices"][0]["text"] == local["choices"][0]["text"]


def test_status_and_peers_show_node_ids_and_invite(mesh: dict[str, RunningNode]) -> None:
    ids = {name: node.status().node_id for name, node in mesh.items()}
    for name, node in mesh.items():
        status = httpx.get(f"http://127.0.0.1:{node.console_port}/api/status", timeout=5).json()
        assert status["node_id"] == ids[name]
        assert status["invite_token"].startswith("mesh1-")
        assert {p["node_id"] for p in status["peers"]} == set(ids.values()) - {ids[name]}
        assert peer_ids(node) == set(ids.values()) - {ids[name]}


def test_wrong_or_missing_secret_is_refused_and_never_listed(
    mesh: dict[str, RunningNode], tmp_path: Path
) -> None:
    real = InviteToken.decode(mesh["a"].invite())
    wrong_secret = InviteToken(real.mesh_id, os.urandom(32), real.addresses).encode()
    other_mesh = InviteToken.new_mesh(real.addresses).encode()
    before = {name: peer_ids(node) for name, node in mesh.items()}
    intruders = [
        start_node(tmp_path, f"intruder{i}", ["--join", token, "--client"])
        for i, token in enumerate([wrong_secret, other_mesh])
    ]
    try:
        for intruder in intruders:
            intruder.wait_ready([])
            wait_until(lambda i=intruder: i.log_contains("mesh", "refused"), 30, "the intruder to be refused")
        intruder_ids = {i.status().node_id for i in intruders}
        time.sleep(2)  # give a wrongly admitted intruder every chance to show up
        for name, node in mesh.items():
            assert not (peer_ids(node) & intruder_ids)
            assert peer_ids(node) == before[name]
        for intruder in intruders:
            assert peer_ids(intruder) == set()
    finally:
        for intruder in intruders:
            intruder.stop()


def test_killed_server_leaves_every_view_within_5s_and_streams_end_cleanly(
    mesh: dict[str, RunningNode], models: dict[str, Path], tmp_path: Path
) -> None:
    # A second server of Y, so Y stays available after B dies.
    b2 = start_node(tmp_path, "b2", ["--join", mesh["a"].invite(), "--model", str(models["tiny-y"])])
    try:
        b2.wait_ready(["tiny-y"])
        b2_id, b_id = b2.status().node_id, mesh["b"].status().node_id
        for node in (mesh["a"], mesh["c"]):
            wait_until(lambda n=node: len(n.servers_of("tiny-y")) == 2, 30, "two servers of Y")

        events: list[str] = []
        stream_done = threading.Event()

        def long_stream() -> None:
            body = {
                "model": "tiny-y",
                "stream": True,
                "max_tokens": 100000,
                "temperature": 0,
                "messages": [{"role": "user", "content": "go on forever"}],
                "ignore_eos": True,
            }
            url = mesh["c"].api_base
            try:
                with httpx.stream(
                    "POST",
                    f"{url}/chat/completions",
                    json=body,
                    timeout=30,
                    headers={"x-mesh-llm-prefer-node": b_id},
                ) as response:
                    for line in response.iter_lines():
                        if line.startswith("data: "):
                            events.append(line[6:])
            except httpx.HTTPError as exc:
                events.append(f"transport error: {exc!r}")
            finally:
                stream_done.set()

        streamer = threading.Thread(target=long_stream, daemon=True)
        streamer.start()
        wait_until(lambda: len(events) > 5, 30, "the stream through C to be flowing")
        mesh["b"].kill_hard()
        killed_at = time.monotonic()
        for node in (mesh["a"], mesh["c"], b2):
            wait_until(
                lambda n=node: b_id not in peer_ids(n), PEER_GONE_DEADLINE_S, "B to leave the peer list"
            )
            wait_until(
                lambda n=node: n.servers_of("tiny-y") == [b2_id],
                PEER_GONE_DEADLINE_S,
                "B to leave the routes",
            )
        assert time.monotonic() - killed_at <= PEER_GONE_DEADLINE_S + 1
        assert stream_done.wait(PEER_GONE_DEADLINE_S + 5), "the in-flight stream hung"
        last = json.loads(events[-1]) if events[-1].startswith("{") else {}
        assert "error" in last, f"stream did not end with an error event: {events[-3:]}"
        for node in (mesh["a"], mesh["c"]):
            reply = httpx.post(
                f"{node.api_base}/chat/completions",
                timeout=30,
                json={"model": "tiny-y", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            )
            assert reply.status_code == 200
    finally:
        b2.stop()
        mesh.pop("b", None)
