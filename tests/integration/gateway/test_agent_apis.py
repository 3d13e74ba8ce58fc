"""The APIs today's agents speak, through the gateway to real llama-servers started with the
runner's own command line: the openai SDK (chat with tool turns, Responses create and stream,
embeddings), the anthropic SDK (create, stream, count_tokens), rerank and tokenize, and errors in
each caller's shape — a model of the wrong kind, an unknown model, a prompt over the context."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import anthropic
import httpx
import openai
import pytest

from services.gateway.routing import LocalServer, ModelKind, RoutingTable, ServerState
from services.runner.commands import llama_server_argv
from services.runner.gguf_meta import read_model_traits
from services.runner.spec import ProcessKind, ProcessSpec
from tests.support.tiny_gguf import write_tiny_embedding_gguf, write_tiny_rerank_gguf

if TYPE_CHECKING:
    from conftest import GatewayThread, LlamaServer

pytestmark = pytest.mark.integration

CHAT = "smollm2-135m"
EMBED = "tiny-embed"
RERANK = "tiny-rerank"
CHAT_CONTEXT_TOKENS = 2048
SHORT_TOKENS = 8
THREADS = 2
HTTP_TIMEOUT_S = 60.0
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def runner_argv(bin_dir: Path, model_path: Path, alias: str, context_tokens: int = 0) -> list[str]:
    """The runner's command line for this model, with `{port}` for LlamaServer to fill in."""
    spec = ProcessSpec(
        key=f"llama-server/{alias}",
        kind=ProcessKind.LLAMA_SERVER,
        model=alias,
        model_path=str(model_path),
        context_size=context_tokens,
    )
    argv = llama_server_argv(spec, bin_dir, 1, THREADS, read_model_traits(model_path))
    argv[argv.index("--port") + 1] = "{port}"
    return argv


@pytest.fixture(scope="module")
def servers(
    llama_bin_dir: Path,
    smollm2_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    start_model_server: Callable[[Path, str, list[str]], LlamaServer],
) -> dict[str, LlamaServer]:
    root = tmp_path_factory.mktemp("agent-apis")
    models = {
        CHAT: (smollm2_path, CHAT_CONTEXT_TOKENS),
        EMBED: (write_tiny_embedding_gguf(root / f"{EMBED}.gguf"), 0),
        RERANK: (write_tiny_rerank_gguf(root / f"{RERANK}.gguf"), 0),
    }
    return {
        alias: start_model_server(path, alias, runner_argv(llama_bin_dir, path, alias, context))
        for alias, (path, context) in models.items()
    }


@pytest.fixture(scope="module")
def gateway_table(servers: dict[str, LlamaServer]) -> RoutingTable:
    kinds = {CHAT: ModelKind.CHAT, EMBED: ModelKind.EMBEDDING, RERANK: ModelKind.RERANK}
    return RoutingTable.build(
        [
            LocalServer(name, ServerState.READY, "127.0.0.1", server.port, kind=kinds[name])
            for name, server in servers.items()
        ],
        [],
    )


@pytest.fixture(scope="module")
def oai(gateway: GatewayThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def claude(gateway: GatewayThread) -> anthropic.Anthropic:
    # The SDK sends x-api-key and anthropic-version on every request; the gateway accepts them.
    return anthropic.Anthropic(base_url=gateway.base_url, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def http(gateway: GatewayThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.base_url, timeout=HTTP_TIMEOUT_S) as client:
        yield client


# --- OpenAI: chat with tool turns, Responses, embeddings ----------------------------------------


def test_a_chat_with_tool_calls_and_tool_results_is_answered(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=CHAT,
        temperature=0,
        max_tokens=SHORT_TOKENS,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
            {"role": "user", "content": [{"type": "text", "text": "So, jacket or not?"}]},
        ],
    )
    message = reply.choices[0].message
    assert message.content or message.tool_calls


def test_responses_create_and_stream(oai: openai.OpenAI) -> None:
    response = oai.responses.create(
        model=CHAT, input="What is the capital of France?", max_output_tokens=16, temperature=0
    )
    assert response.status == "completed" and response.output_text.strip()
    events = list(
        oai.responses.create(
            model=CHAT, input="Say hello.", max_output_tokens=SHORT_TOKENS, temperature=0, stream=True
        )
    )
    kinds = [event.type for event in events]
    assert "response.output_text.delta" in kinds and kinds[-1] == "response.completed"
    streamed = "".join(getattr(e, "delta", "") for e in events if e.type == "response.output_text.delta")
    assert streamed.strip()


def test_embeddings_come_from_the_embedding_model(oai: openai.OpenAI) -> None:
    result = oai.embeddings.create(model=EMBED, input=["hello world", "goodbye"])
    assert len(result.data) == 2
    first, second = (item.embedding for item in result.data)
    assert len(first) == len(second) > 0 and first != second


def test_a_model_of_the_wrong_kind_is_a_400_naming_one_that_can(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        oai.embeddings.create(model=CHAT, input="hi")
    assert error.value.code == "model_kind_mismatch" and EMBED in error.value.message
    with pytest.raises(openai.BadRequestError) as error:
        oai.chat.completions.create(model=EMBED, messages=[{"role": "user", "content": "hi"}])
    assert error.value.code == "model_kind_mismatch" and CHAT in error.value.message


def test_a_prompt_over_the_context_is_a_400_with_a_string_code(oai: openai.OpenAI) -> None:
    too_long = "word " * (CHAT_CONTEXT_TOKENS * 2)
    with pytest.raises(openai.BadRequestError) as error:
        oai.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": too_long}], max_tokens=4
        )
    assert error.value.code == "context_length_exceeded"


# --- A stream whose first token ends inside a character ------------------------------------------

# SmolLM2 answers this (temperature 0) in Chinese, and its first token is the first bytes of a
# character: that token streams nothing. Stock llama-server then never opened the stream (it keyed
# the opening on n_decoded == 1): no message_start (the anthropic SDK has no message at all), no
# role delta, a response.created with every chunk. llama.cpp/patches/0002 opens it on the first
# partial result that is sent.
SPLIT_FIRST_CHARACTER = "Reply in Chinese: hello"


def test_a_stream_whose_first_token_ends_inside_a_character_opens_like_any_other(
    servers: dict[str, LlamaServer], claude: anthropic.Anthropic, oai: openai.OpenAI
) -> None:
    messages = [{"role": "user", "content": SPLIT_FIRST_CHARACTER}]
    greedy = {"temperature": 0}  # this SDK's stream() takes no temperature argument of its own
    with claude.messages.stream(
        model=CHAT, max_tokens=SHORT_TOKENS, messages=messages, extra_body=greedy
    ) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.role == "assistant" and final.content[0].text == text
    # It is the case this test is about: the answer's first character takes more than one token.
    tokenized = httpx.post(f"{servers[CHAT].base_url}/tokenize", json={"content": text[0]}, timeout=10)
    assert not text[0].isascii() and len(tokenized.json()["tokens"]) > 1, text
    chunks = list(
        oai.chat.completions.create(
            model=CHAT,
            max_tokens=SHORT_TOKENS,
            temperature=0,
            stream=True,
            messages=messages,  # type: ignore[arg-type]
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    events = list(
        oai.responses.create(
            model=CHAT,
            input=SPLIT_FIRST_CHARACTER,
            max_output_tokens=SHORT_TOKENS,
            temperature=0,
            stream=True,
        )
    )
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds.count("response.created") == 1, kinds


# --- Anthropic: messages, stream, count_tokens, errors -------------------------------------------


def test_anthropic_messages_create_stream_and_count_tokens(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model=CHAT,
        max_tokens=16,
        system="You answer in one short sentence.",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    assert message.role == "assistant" and message.content[0].type == "text"
    assert message.content[0].text.strip() and message.usage.output_tokens > 0
    with claude.messages.stream(
        model=CHAT, max_tokens=SHORT_TOKENS, messages=[{"role": "user", "content": "Say hello."}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip() and final.stop_reason in ("end_turn", "max_tokens")
    counted = claude.messages.count_tokens(
        model=CHAT, messages=[{"role": "user", "content": "What is the capital of France?"}]
    )
    assert counted.input_tokens > 5


def test_anthropic_tool_turns_are_answered(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model=CHAT,
        max_tokens=SHORT_TOKENS,
        tools=[
            {
                "name": "get_weather",
                "description": "The weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C, sunny"}],
            },
        ],
    )
    assert message.content


def test_anthropic_errors_come_in_anthropics_shape(claude: anthropic.Anthropic, http: httpx.Client) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(
            model="no-such-model", max_tokens=4, messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    too_long = "word " * (CHAT_CONTEXT_TOKENS * 2)
    with pytest.raises(anthropic.BadRequestError) as over:
        claude.messages.create(model=CHAT, max_tokens=4, messages=[{"role": "user", "content": too_long}])
    assert "prompt is too long" in str(over.value)
    with pytest.raises(anthropic.BadRequestError) as kind:
        claude.messages.create(model=EMBED, max_tokens=4, messages=[{"role": "user", "content": "x"}])
    assert CHAT in str(kind.value)
    malformed = http.post("/v1/messages", content=b"{not json", headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    assert (
        malformed.json()["type"] == "error" and malformed.json()["error"]["type"] == "invalid_request_error"
    )


def test_the_headers_agents_send_are_accepted(http: httpx.Client) -> None:
    headers = {
        "x-api-key": "sk-ant-unused",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "prompt-caching-2024-07-31,fine-grained-tool-streaming-2025-05-14",
        "OpenAI-Beta": "responses=v1",
        "authorization": "Bearer unused",
    }
    body = {"model": CHAT, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    # Claude Code adds ?beta=true to the path.
    reply = http.post("/v1/messages?beta=true", json=body, headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["type"] == "message"


# --- rerank, tokenize ----------------------------------------------------------------------------


def test_rerank_scores_every_document(http: httpx.Client) -> None:
    documents = ["Paris is in France.", "Bananas are yellow.", "The Eiffel tower."]
    reply = http.post("/v1/rerank", json={"model": RERANK, "query": "France", "documents": documents})
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2]
    assert all(isinstance(r["relevance_score"], float) for r in results)


def test_tokenize_and_detokenize_round_trip(http: httpx.Client) -> None:
    tokens = http.post("/v1/tokenize", json={"model": CHAT, "content": "Hello mesh"}).json()["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)
    text = http.post("/v1/detokenize", json={"model": CHAT, "tokens": tokens}).json()["content"]
    assert text.strip() == "Hello mesh"


def test_streamed_anthropic_events_pass_through_unbuffered(http: httpx.Client) -> None:
    body = {
        "model": CHAT,
        "max_tokens": SHORT_TOKENS,
        "stream": True,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    with http.stream("POST", "/v1/messages", json=body) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("event: ") for line in reply.iter_lines() if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_delta" in events
