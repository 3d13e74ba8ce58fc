"""What agents send, through a real llama-server started with the runner's argv, for each kind of template:
Gemma 3 270M (ours, services/runner/templates/gemma.jinja), SmolLM2 135M (the ChatML template in its
GGUF), the tiny random GGUF (its own ChatML), and SmolLM2 with our chatml.jinja (what
services/runner/chat_templates.py picks for tool-blind ChatML once it has the template text). One
server per model, shared by the module."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.runner.commands import TEMPLATES_DIR, build_argv
from services.runner.gguf_meta import read_model_traits
from services.runner.spec import ProcessKind, ProcessSpec
from tests.support.agent_turns import CALL, WEATHER_TOOL
from tests.support.node import free_port

pytestmark = pytest.mark.integration

READY_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.05
MAX_TOKENS = 8
LOG_TAIL_BYTES = 4000

Message = dict[str, Any]
LONDON_CALL = {
    "id": "call_2",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "London"}'},
}


def text(role: str, content: str) -> Message:
    return {"role": role, "content": content}


def parts(role: str, *texts: str) -> Message:
    return {"role": role, "content": [{"type": "text", "text": t} for t in texts]}


TOOL_ROUND_TRIP = [
    text("user", "What is the weather in Paris?"),
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
    text("assistant", "It is 18C and sunny."),
    text("user", "And tomorrow?"),
]
# name -> (messages, tools)
CONVERSATIONS: dict[str, tuple[list[Message], list[Message] | None]] = {
    "system first": ([text("system", "Be brief."), text("user", "Hi")], None),
    "developer first": ([text("developer", "Be brief."), text("user", "Hi")], None),
    "system in the middle": (
        [
            text("user", "Hi"),
            text("assistant", "Hello"),
            text("system", "Answer in French."),
            text("user", "Bye"),
        ],
        None,
    ),
    "system last": ([text("user", "Hi"), text("assistant", "Hello"), text("system", "Say goodbye.")], None),
    "two systems": ([text("system", "Be brief."), text("system", "Be kind."), text("user", "Hi")], None),
    "user, user": ([text("user", "Hi"), text("user", "Are you there?")], None),
    "assistant, assistant": (
        [
            text("user", "Hi"),
            text("assistant", "Hello"),
            text("assistant", "Still here."),
            text("user", "Bye"),
        ],
        None,
    ),
    "tool round trip": (TOOL_ROUND_TRIP, None),
    "parallel calls with empty content": (
        [
            text("user", "Weather in Paris and London?"),
            {"role": "assistant", "content": "", "tool_calls": [CALL, LONDON_CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Paris: 18C, sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "London: 12C, rain"},
        ],
        None,
    ),
    "content parts for every role": (
        [
            parts("system", "Be brief."),
            parts("user", "What is the weather", "in Paris?"),
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "18C"}]},
            parts("assistant", "It is 18C."),
            parts("user", "Thanks"),
        ],
        None,
    ),
    "tools offered": (
        [text("system", "Use tools."), text("user", "What is the weather in Paris?")],
        [WEATHER_TOOL],
    ),
    "tools offered, round trip": (TOOL_ROUND_TRIP, [WEATHER_TOOL]),
}


@dataclass(frozen=True)
class Server:
    base_url: str
    log_path: Path

    def chat(self, messages: list[Message], **body: Any) -> httpx.Response:
        payload = {"messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0, **body}
        return httpx.post(f"{self.base_url}/v1/chat/completions", json=payload, timeout=REQUEST_TIMEOUT_S)

    def prompt(self, messages: list[Message], **body: Any) -> str:
        """The prompt llama.cpp renders for a chat request (its own jinja engine, our template)."""
        payload = {"messages": messages, "add_generation_prompt": True, **body}
        response = httpx.post(f"{self.base_url}/apply-template", json=payload, timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 200, response.text
        return str(response.json()["prompt"])

    def log_tail(self) -> str:
        return self.log_path.read_bytes()[-LOG_TAIL_BYTES:].decode(errors="replace")


def healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def serve(
    model: Path, name: str, bin_dir: Path, log_path: Path, extra_args: tuple[str, ...] = ()
) -> Iterator[Server]:
    port = free_port()
    spec = ProcessSpec(
        key=f"llama-server/{name}",
        kind=ProcessKind.LLAMA_SERVER,
        model=name,
        model_path=str(model),
        extra_args=extra_args,
    )
    argv = build_argv(spec, bin_dir, port, os.cpu_count() or 1, read_model_traits(model))
    server = Server(f"http://127.0.0.1:{port}", log_path)
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not healthy(server.base_url):
            assert process.poll() is None, f"llama-server exited:\n{server.log_tail()}"
            assert time.monotonic() < deadline, f"llama-server not ready in {READY_TIMEOUT_S:g} s"
            time.sleep(POLL_S)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def tiny_server(
    tiny_gguf: Path, llama_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from serve(tiny_gguf, "tiny", llama_bin_dir, tmp_path_factory.mktemp("logs") / "tiny.log")


@pytest.fixture(scope="module")
def smollm2_server(
    smollm2_path: Path, llama_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from serve(
        smollm2_path, "smollm2-135m", llama_bin_dir, tmp_path_factory.mktemp("logs") / "smollm2.log"
    )


@pytest.fixture(scope="module")
def smollm2_chatml_server(
    smollm2_path: Path, llama_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    chatml = ("--chat-template-file", str(TEMPLATES_DIR / "chatml.jinja"))  # last one wins
    log = tmp_path_factory.mktemp("logs") / "smollm2-chatml.log"
    yield from serve(smollm2_path, "smollm2-135m", llama_bin_dir, log, chatml)


@pytest.fixture(scope="module")
def gemma_server(
    gemma_path: Path, llama_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from serve(gemma_path, "gemma3-270m", llama_bin_dir, tmp_path_factory.mktemp("logs") / "gemma.log")


@pytest.fixture(scope="module", params=["tiny_server", "smollm2_server", "gemma_server"])
def server(request: pytest.FixtureRequest) -> Server:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_every_agent_conversation_gets_an_answer(server: Server, conversation: str) -> None:
    messages, tools = CONVERSATIONS[conversation]
    response = server.chat(messages, **({"tools": tools} if tools else {}))
    assert response.status_code == 200, f"{response.text}\n{server.log_tail()}"
    message = response.json()["choices"][0]["message"]
    assert message.get("content") or message.get("tool_calls"), message


def test_smollm2_knows_the_capital_of_france(smollm2_server: Server) -> None:
    """Asked the bare question, this 4-bit 135M model answers "L'Étoile, la Marseillaise, ..." at
    temperature 0 under the default system prompt its template adds; with a plain one, Paris."""
    messages = [
        text("system", "You are a helpful assistant."),
        text("user", "What is the capital of France?"),
    ]
    response = smollm2_server.chat(messages, max_tokens=16)
    assert response.status_code == 200, response.text
    assert "Paris" in response.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_llama_cpp_renders_every_agent_conversation_with_our_chatml(
    smollm2_chatml_server: Server, conversation: str
) -> None:
    """Rendering only: chatml.jinja is not what the runner gives SmolLM2 yet (chat_templates.py)."""
    messages, tools = CONVERSATIONS[conversation]
    prompt = smollm2_chatml_server.prompt(messages, **({"tools": tools} if tools else {}))
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_chatml_shows_smollm2_its_calls_and_their_results(smollm2_chatml_server: Server) -> None:
    """Its own template renders the assistant turn of a call empty and the result as an unknown role."""
    prompt = smollm2_chatml_server.prompt(TOOL_ROUND_TRIP, tools=[WEATHER_TOOL])
    roles = [line.removeprefix("<|im_start|>") for line in prompt.splitlines() if "<|im_start|>" in line]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert "<|im_start|>user\n<tool_response>\n18C, sunny\n</tool_response><|im_end|>" in prompt


def test_gemma_sees_tool_calls_and_results_in_its_two_roles(gemma_server: Server) -> None:
    prompt = gemma_server.prompt(TOOL_ROUND_TRIP, tools=[WEATHER_TOOL])
    roles = [
        line.removeprefix("<start_of_turn>") for line in prompt.splitlines() if "<start_of_turn>" in line
    ]
    assert roles == ["user", "model", "user", "model", "user", "model"]
    assert '```tool_call\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```' in prompt
    assert "Tool result of get_weather:\n```tool_output\n18C, sunny\n```" in prompt


def test_a_gemma_tool_call_comes_back_as_openai_tool_calls(gemma_server: Server) -> None:
    """llama.cpp derives its tool-call parser and grammar from our template's ```tool_call blocks. A base
    270M model never picks a tool by itself, so the reply is started with the block's opening line."""
    messages = [text("user", "What is the weather in Paris?"), text("assistant", "```tool_call\n")]
    response = gemma_server.chat(messages, tools=[WEATHER_TOOL], tool_choice="required", max_tokens=40)
    assert response.status_code == 200, f"{response.text}\n{gemma_server.log_tail()}"
    call = response.json()["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather"
    assert isinstance(json.loads(call["arguments"])["city"], str)
