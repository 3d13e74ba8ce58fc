"""The agents' APIs across the mesh on real, separate addresses: a client node with no model answers
Anthropic Messages (streamed), OpenAI Responses, embeddings and tokenize for models served on
another machine, through the QUIC tunnel; what a model is (chat or embedding) and its context travel
in gossip, so the client's /v1/models says so and a model of the wrong kind is refused there with a
400 naming one that can answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.netns import Testbed
from tests.support.netns_mesh import launch, wait_answers, wait_path
from tests.support.node import RunningNode, wait_until
from tests.support.tiny_gguf import write_tiny_embedding_gguf

pytestmark = pytest.mark.integration

EMBED = "tiny-embed"
CHAT = "smollm2-135m"
FACTS_TIMEOUT_S = 20.0


def test_a_client_node_speaks_every_agent_api_for_models_served_elsewhere(
    testbed: Testbed, nodes: list[RunningNode], tmp_path: Path, smollm2_path: Path
) -> None:
    lan = testbed.lan("lan")
    server_host, client_host = testbed.host("server"), testbed.host("client")
    server_host.attach(lan, "10.77.9.1/24")
    client_host.attach(lan, "10.77.9.2/24")
    embed = write_tiny_embedding_gguf(tmp_path / "models" / f"{EMBED}.gguf")
    server = launch(nodes, server_host, tmp_path, "server", ["--model", CHAT, "--model", str(embed)])
    client = launch(nodes, client_host, tmp_path, "client", ["--join", server.invite(), "--client"])
    wait_path(client, server, "direct")
    assert smollm2_path.is_file()  # the catalog name resolves to this file on the server
    chat = CHAT
    wait_answers(client, chat)
    api = client.api_base

    def facts() -> dict[str, dict[str, object]]:
        data = client.http("GET", f"{api}/models", timeout=5).json()["data"]
        return {entry["id"]: entry["meshllm"] for entry in data}

    wait_until(lambda: facts().get(EMBED, {}).get("kind") == "embedding", FACTS_TIMEOUT_S, "kinds in gossip")
    listed = facts()
    assert listed[chat]["kind"] == "chat" and int(listed[chat]["context_tokens"]) >= 2048  # type: ignore[call-overload]
    assert listed[chat]["local"] is False

    hello = [{"role": "user", "content": "Say hello."}]
    streamed = client.http(
        "POST",
        f"{api}/messages",
        json={"model": chat, "max_tokens": 8, "stream": True, "messages": hello},
        timeout=60,
    )
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    assert "event: message_start" in streamed.text and "event: message_stop" in streamed.text

    response = client.http(
        "POST",
        f"{api}/responses",
        json={"model": chat, "input": "Say hello.", "max_output_tokens": 8},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"

    vectors = client.http("POST", f"{api}/embeddings", json={"model": EMBED, "input": ["a", "b"]}, timeout=60)
    assert vectors.status_code == 200, vectors.text
    assert len(vectors.json()["data"]) == 2

    tokens = client.http("POST", f"{api}/tokenize", json={"model": chat, "content": "Hello"}, timeout=30)
    assert tokens.status_code == 200 and tokens.json()["tokens"]

    wrong = client.http("POST", f"{api}/embeddings", json={"model": chat, "input": "a"}, timeout=30)
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "model_kind_mismatch"
    assert EMBED in wrong.json()["error"]["message"]
    wrong = client.http(
        "POST", f"{api}/messages", json={"model": EMBED, "max_tokens": 4, "messages": hello}, timeout=30
    )
    assert wrong.status_code == 400 and wrong.json()["error"]["type"] == "invalid_request_error"
