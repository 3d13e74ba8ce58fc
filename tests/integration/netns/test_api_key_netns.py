"""The API key on real addresses (issue 13): nodes with `--listen-all` in their own network namespaces,
asked from another machine on the LAN. Without a key only the node's own machine is served (others
get a 401 that says how to set one), `--api-key` admits whoever has the key, `--no-api-key` opens
it up, and a request a node forwards through the mesh to a keyed node needs only the first node's key:
the mesh, not the user's key, authenticates it there."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.netns import Host, Testbed
from tests.support.netns_mesh import NODE_READY_TIMEOUT_S, launch, model_copy, wait_path
from tests.support.node import RunningNode, wait_until

pytestmark = pytest.mark.integration

KEY_ONE = "sk-node-one-0123456789"
KEY_TWO = "sk-node-two-9876543210"
MAX_TOKENS = 4


def chat(user: Host, ip: str, node: RunningNode, model: str, key: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_TOKENS}
    return user.http("POST", f"http://{ip}:{node.api_port}/v1/chat/completions", json=body, headers=headers)


def test_without_a_key_other_machines_are_told_how_to_set_one(
    testbed: Testbed, nodes: list[RunningNode], tmp_path: Path
) -> None:
    lan = testbed.lan("lan")
    one, two = testbed.host("one"), testbed.host("two")
    ip_one = one.attach(lan, "10.77.13.1/24")
    two.attach(lan, "10.77.13.2/24")
    node = launch(nodes, one, tmp_path, "one", ["--client", "--listen-all"])
    assert "open to this machine only" in node.cli_output()

    api = f"http://{ip_one}:{node.api_port}"
    refused = two.http("GET", f"{api}/v1/models")  # Host: the node's LAN address, which it answers
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["code"] == "invalid_api_key" and "--api-key" in refused.text
    assert two.http("GET", f"{api}/health").status_code == 200
    assert one.http("GET", f"http://127.0.0.1:{node.api_port}/v1/models").status_code == 200
    assert two.http("GET", f"{api}/v1/models", headers={"host": "evil.example"}).status_code == 421

    console = f"http://{ip_one}:{node.console_port}"
    remote_view = two.http("GET", f"{console}/api/status").json()
    assert remote_view["invite_token"] == "" and remote_view["invite_token_hidden"]
    assert two.http("GET", f"{console}/api/status", headers={"host": "evil.example"}).status_code == 421


def test_keys_per_node_and_forwarded_requests_authenticated_by_the_mesh(
    testbed: Testbed, nodes: list[RunningNode], tmp_path: Path, tiny_gguf: Path
) -> None:
    lan = testbed.lan("lan")
    one, two, three, user = (testbed.host(name) for name in ("one", "two", "three", "user"))
    ip_one = one.attach(lan, "10.77.14.1/24")
    ip_two = two.attach(lan, "10.77.14.2/24")
    ip_three = three.attach(lan, "10.77.14.3/24")
    user.attach(lan, "10.77.14.9/24")
    model = model_copy(tiny_gguf, tmp_path, "tiny-key")

    first = launch(nodes, one, tmp_path, "one", ["--model", str(model), "--listen-all", "--api-key", KEY_ONE])
    assert "API key  required" in first.cli_output() and KEY_ONE not in first.cli_output()
    wait_until(
        lambda: chat(user, ip_one, first, "tiny-key", KEY_ONE).status_code == 200,
        NODE_READY_TIMEOUT_S,
        "the keyed node to answer with its key",
    )
    assert chat(user, ip_one, first, "tiny-key").status_code == 401
    assert chat(user, ip_one, first, "tiny-key", KEY_TWO).status_code == 401

    token = first.invite()
    client_args = ["--client", "--join", token, "--listen-all"]
    second = launch(nodes, two, tmp_path, "two", [*client_args, "--api-key", KEY_TWO])
    third = launch(nodes, three, tmp_path, "three", [*client_args, "--no-api-key"])
    assert "open to the network (--no-api-key)" in third.cli_output()
    wait_path(second, first, "direct")
    wait_path(third, first, "direct")

    # Served by the first node, entered at the second with the second's key only.
    wait_until(
        lambda: chat(user, ip_two, second, "tiny-key", KEY_TWO).status_code == 200,
        NODE_READY_TIMEOUT_S,
        "the second node to forward to the first",
    )
    assert chat(user, ip_two, second, "tiny-key", KEY_TWO).json()["choices"]
    assert chat(user, ip_two, second, "tiny-key", KEY_ONE).status_code == 401  # each node its own key
    assert chat(user, ip_two, second, "tiny-key").status_code == 401
    # The open node needs no key from anyone, and forwards to the keyed one just the same.
    wait_until(
        lambda: chat(user, ip_three, third, "tiny-key").status_code == 200,
        NODE_READY_TIMEOUT_S,
        "the open node to forward to the keyed one",
    )
