"""One real node started by the `mesh-llm` CLI under supervisord: it serves, recovers and stops cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.node import RunningNode, free_port, llama_processes_under, pid_alive, wait_until

pytestmark = pytest.mark.integration

MODEL = "gemma3-270m"
RECOVERY_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    home = tmp_path_factory.mktemp("node") / "home"
    running = RunningNode(home, free_port(), free_port(), ["--model", MODEL]).start()
    try:
        running.wait_ready([MODEL])
        yield running
    finally:
        running.stop()


def test_ready_screen_shows_api_console_model_and_node_id(node: RunningNode) -> None:
    screen = node.cli_output()
    node_id = node.status().node_id
    assert f"http://localhost:{node.api_port}/v1" in screen
    assert f"http://localhost:{node.console_port}" in screen
    assert MODEL in screen and node_id[:8] in screen
    assert "mesh1-" in screen  # the invite token
    # What the model is and the context the runner chose (Gemma 3 270M: trained on 32k tokens).
    assert "chat, 32768-token context" in screen
    # The slots the runner chose for it (services/runner/slots.py: one per 2k tokens, at most 16).
    assert "32768-token context, 16 at once" in screen


def test_models_say_what_each_model_is_and_its_context(node: RunningNode) -> None:
    entry = next(
        e for e in httpx.get(f"{node.api_base}/models", timeout=10).json()["data"] if e["id"] == MODEL
    )
    assert entry["meshllm"]["kind"] == "chat" and entry["meshllm"]["context_tokens"] == 32768
    assert entry["meshllm"]["slots"] == 16


def test_chat_completion_answers_with_and_without_streaming(node: RunningNode) -> None:
    body = node.chat(MODEL, "What is the capital of France?", max_tokens=24)
    assert body["choices"][0]["message"]["content"].strip()
    assert body["model"] == MODEL

    chunks = []
    with httpx.stream(
        "POST",
        f"{node.api_base}/chat/completions",
        timeout=60,
        json={
            "model": MODEL,
            "stream": True,
            "max_tokens": 16,
            "temperature": 0,
            "messages": [{"role": "user", "content": "Count to five."}],
        },
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert len(chunks) > 3 and text.strip()


def test_openai_sdk_sync_and_async_streaming_and_not(node: RunningNode) -> None:
    client = openai.OpenAI(base_url=node.api_base, api_key="dummy")
    assert MODEL in [m.id for m in client.models.list()]
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8
    )
    assert reply.choices[0].message.content
    streamed = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)

    async def run_async() -> str:
        async_client = openai.AsyncOpenAI(base_url=node.api_base, api_key="dummy")
        completion = await async_client.completions.create(
            model=MODEL, prompt="Once upon a time", max_tokens=8
        )
        stream = await async_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        await async_client.close()
        return completion.choices[0].text + "".join(parts)

    import asyncio

    assert asyncio.run(run_async()).strip()


def test_unknown_model_is_a_404_listing_known_models(node: RunningNode) -> None:
    response = httpx.post(
        f"{node.api_base}/chat/completions",
        timeout=10,
        json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 404
    assert MODEL in response.json()["error"]["message"]


def test_meshctl_status_shows_services_model_and_process(node: RunningNode) -> None:
    meshctl = Path(sys.executable).parent / "meshctl"
    out = subprocess.run(
        [str(meshctl), "--home", str(node.home), "status"],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, COLUMNS="200"),
    )
    assert out.returncode == 0, out.stderr
    for service in ("mesh", "gossip", "placement", "runner", "gateway"):
        assert service in out.stdout
    assert MODEL in out.stdout and "ready" in out.stdout and "32768" in out.stdout
    assert re.search(r"32768[\s│|]+16[\s│|]", out.stdout), out.stdout  # context, then slots
    plan = subprocess.run(
        [str(meshctl), "--home", str(node.home), "plan"],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, COLUMNS="200"),
    )
    assert plan.returncode == 0 and "solo" in plan.stdout and "fits" in plan.stdout
    assert re.search(r"solo[\s│|]+\S+ [KMG]B[\s│|]+16[\s│|]", plan.stdout), plan.stdout  # role, size, slots


def test_killed_llama_server_is_restarted_and_serves_again(node: RunningNode) -> None:
    old = node.llama_server_pid()
    os.kill(old, signal.SIGKILL)
    new = wait_until(
        lambda: (p := node.llama_server_pid()) != old and p, RECOVERY_TIMEOUT_S, "a new llama-server"
    )
    assert new != old
    wait_until(lambda: node.chat(MODEL), RECOVERY_TIMEOUT_S, "the node to answer again")


@pytest.mark.parametrize("service", ["runner", "gateway", "placement", "gossip", "mesh"])
def test_killed_service_is_restarted_and_node_answers_again(node: RunningNode, service: str) -> None:
    old = node.service_pid(service)
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: node.service_pid(service) != old, RECOVERY_TIMEOUT_S, f"{service} to restart")
    wait_until(lambda: node.chat(MODEL), RECOVERY_TIMEOUT_S, f"the node to answer after {service} restarted")
    # Exactly one llama-server: a restarted runner must not leave its predecessor's behind.
    wait_until(lambda: len(llama_processes_under(node.home)) == 1, RECOVERY_TIMEOUT_S, "one llama-server")


def test_ctrl_c_stops_the_node_and_leaves_no_llama_process(tmp_path: Path) -> None:
    running = RunningNode(tmp_path / "home", free_port(), free_port(), ["--model", MODEL]).start()
    running.wait_ready([MODEL])
    llama = llama_processes_under(running.home)
    assert llama, "expected a llama-server while serving"
    assert running.stop(signal.SIGINT) == 0
    wait_until(lambda: not any(pid_alive(p) for p in llama), 10, "llama-server to exit")
    assert llama_processes_under(running.home) == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{running.api_base}/models", timeout=2)
