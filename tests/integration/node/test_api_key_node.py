"""A real node started with an API key (issue 13): the SDKs work with it and get their own 401 without
it, /health stays open, a DNS-rebinding Host is refused (and never sees the invite token), the
console's chat works for the person at the machine, and the key shows up nowhere: not in the logs,
the status, gossip, node.toml or the environment of the node's processes."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import grpc
import httpx
import openai
import pytest

from services.node.config import API_KEY_ENV, api_key_file
from services.proto.meshllm.gossip.v1 import gossip_pb2, gossip_pb2_grpc
from tests.support.node import RunningNode, free_port

pytestmark = pytest.mark.integration

MODEL = "tiny-llama"
KEY = f"sk-mesh-{secrets.token_hex(12)}"
HTTP_TIMEOUT_S = 30.0
MAX_TOKENS = 4
PROXY_HOST = "mesh.example.test"  # --allow-host: the name a reverse proxy in front of the node passes on


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Iterator[RunningNode]:
    root = tmp_path_factory.mktemp("api-key")
    keyed = RunningNode(
        root / "keyed", free_port(), free_port(), ["--model", str(tiny_gguf), "--allow-host", PROXY_HOST]
    )
    # Through the environment, the way agents are configured: the node's processes must not inherit it.
    with pytest.MonkeyPatch.context() as env:
        env.setenv(API_KEY_ENV, KEY)
        keyed.start()
    try:
        keyed.wait_ready([MODEL])
        yield keyed
    finally:
        keyed.stop()


def api_root(node: RunningNode) -> str:
    return f"http://127.0.0.1:{node.api_port}"


def console_root(node: RunningNode) -> str:
    return f"http://127.0.0.1:{node.console_port}"


def test_the_openai_sdk_works_with_the_key_and_gets_its_401_without(node: RunningNode) -> None:
    client = openai.OpenAI(base_url=node.api_base, api_key=KEY, max_retries=0)
    assert MODEL in {model.id for model in client.models.list()}
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=MAX_TOKENS
    )
    assert reply.choices
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=MAX_TOKENS, stream=True
    )
    assert list(stream)
    wrong = openai.OpenAI(base_url=node.api_base, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        wrong.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.code == "invalid_api_key"
    missing = httpx.get(f"{node.api_base}/models", timeout=HTTP_TIMEOUT_S)
    assert missing.status_code == 401 and "Authorization: Bearer KEY" in missing.json()["error"]["message"]


def test_the_anthropic_sdk_works_with_x_api_key(node: RunningNode) -> None:
    client = anthropic.Anthropic(base_url=api_root(node), api_key=KEY, max_retries=0)
    reply = client.messages.create(
        model=MODEL, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.content is not None
    wrong = anthropic.Anthropic(base_url=api_root(node), api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(
            model=MODEL, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "hi"}]
        )


def test_health_stays_open(node: RunningNode) -> None:
    assert httpx.get(f"{api_root(node)}/health", timeout=HTTP_TIMEOUT_S).json() == {"status": "ok"}


def test_a_rebinding_host_is_refused_and_never_gets_the_token(node: RunningNode) -> None:
    token = node.invite()
    evil = {"host": f"evil.example:{node.console_port}"}
    for path in ("/api/status", "/", "/app.js", "/v1/models"):
        response = httpx.get(console_root(node) + path, headers=evil, timeout=HTTP_TIMEOUT_S)
        assert response.status_code == 421, path
        assert token not in response.text and KEY not in response.text
    with httpx.stream(
        "GET", f"{console_root(node)}/api/events", headers=evil, timeout=HTTP_TIMEOUT_S
    ) as events:
        assert events.status_code == 421 and token not in events.read().decode()
    api = httpx.get(
        f"{node.api_base}/models",
        headers={"host": "evil.example", "authorization": f"Bearer {KEY}"},
        timeout=HTTP_TIMEOUT_S,
    )
    assert api.status_code == 421 and api.json()["error"]["code"] == "host_not_allowed"
    local = httpx.get(f"{console_root(node)}/api/status", timeout=HTTP_TIMEOUT_S).json()
    assert local["invite_token"] == token and not local["invite_token_hidden"]


def test_an_allowed_host_is_served_but_never_shown_the_token(node: RunningNode) -> None:
    """A reverse proxy named with --allow-host: the API and console answer it; the invite token stays
    for loopback Hosts (whoever reaches the proxy is not the person at the machine)."""
    proxied = {"host": PROXY_HOST, "authorization": f"Bearer {KEY}"}
    models = httpx.get(f"{node.api_base}/models", headers=proxied, timeout=HTTP_TIMEOUT_S)
    assert models.status_code == 200 and MODEL in [m["id"] for m in models.json()["data"]]
    status = httpx.get(f"{console_root(node)}/api/status", headers=proxied, timeout=HTTP_TIMEOUT_S)
    assert status.status_code == 200, status.text
    assert status.json()["invite_token_hidden"] and node.invite() not in status.text
    other = httpx.get(f"{node.api_base}/models", headers={**proxied, "host": "x." + PROXY_HOST})
    assert other.status_code == 421


def test_the_consoles_own_chat_works_for_the_person_at_the_machine(node: RunningNode) -> None:
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_TOKENS}
    with httpx.Client(base_url=console_root(node), timeout=HTTP_TIMEOUT_S) as browser:
        assert browser.post("/v1/chat/completions", json=chat).status_code == 401
        assert browser.get("/").status_code == 200  # the page sets the console session
        same_origin = {"origin": console_root(node), "sec-fetch-site": "same-origin"}
        reply = browser.post("/v1/chat/completions", json=chat, headers=same_origin)
        assert reply.status_code == 200 and reply.json()["choices"]
    # The session is the console's: :9337 still wants the key.
    cookies = browser.cookies
    assert httpx.get(f"{node.api_base}/models", cookies=cookies, timeout=HTTP_TIMEOUT_S).status_code == 401


def test_the_key_appears_nowhere(node: RunningNode) -> None:
    assert "API key  required" in node.cli_output() and KEY not in node.cli_output()
    assert api_key_file(node.home).read_text() == KEY  # where it is kept: the node's own 0600 file
    status = httpx.get(f"{console_root(node)}/api/status", timeout=HTTP_TIMEOUT_S)
    assert status.status_code == 200 and KEY not in status.text
    with grpc.insecure_channel(node.node_home.grpc_target("gossip")) as channel:
        view = gossip_pb2_grpc.GossipStub(channel).GetView(gossip_pb2.GetViewRequest(), timeout=5)
    assert view.nodes and KEY.encode() not in view.SerializeToString()
    meshctl = Path(sys.executable).parent / "meshctl"
    for command in ("status", "models", "plan"):
        shown = subprocess.run(
            [str(meshctl), "--home", str(node.home), command], capture_output=True, text=True, timeout=30
        )
        assert shown.returncode == 0 and KEY not in shown.stdout + shown.stderr, command
    assert KEY not in node.node_home.node_config.read_text()
    for log in node.node_home.logs.iterdir():
        assert KEY not in log.read_text(errors="replace"), log.name
    environments = [_environment(p) for p in Path("/proc").iterdir() if p.name.isdigit()]
    ours = [e for e in environments if f"MESH_LLM_HOME={node.home}".encode() in e]
    assert len(ours) >= 4  # supervisord, its services and the llama-server
    assert not [e for e in ours if KEY.encode() in e]


def _environment(process: Path) -> bytes:
    try:
        return (process / "environ").read_bytes()
    except OSError:  # gone meanwhile, or not ours to read
        return b""
