"""The gateway's OpenAI API against a real llama-server: the openai SDK unchanged, errors, streaming."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import httpx
import openai
import pytest

from services.gateway.body import MAX_REQUEST_BODY_BYTES
from services.gateway.routing import (
    MODEL_LOADING_RETRY_AFTER_S,
    WAITING_FOR_CAPACITY_RETRY_AFTER_S,
    LocalServer,
    PlannedModel,
    PlanRole,
    RoutingTable,
    ServerState,
)

if TYPE_CHECKING:
    from conftest import GatewayThread, LlamaServer

pytestmark = pytest.mark.integration

GEMMA = "gemma3-270m"
LOADING = "loading-model"
WAITING = "waiting-model"
TOO_BIG = "too-big-model"
GONE = "gone-model"  # "ready" per the runner, but nothing listens: llama-server died a moment ago
VICTIM = "victim-model"  # a second llama-server a test kills mid-stream
HELLO = [{"role": "user", "content": "Say hello."}]
SHORT_TOKENS = 8
HTTP_TIMEOUT_S = 60.0
SLOT_RELEASE_TIMEOUT_S = 5.0


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def gateway_table(gemma_server: LlamaServer) -> RoutingTable:
    servers = [
        LocalServer(GEMMA, ServerState.READY, "127.0.0.1", gemma_server.port, since_unix_s=1_700_000_000),
        LocalServer(LOADING, ServerState.STARTING),
        LocalServer(GONE, ServerState.READY, "127.0.0.1", unused_port()),
    ]
    plan = [
        PlannedModel(WAITING, PlanRole.WAITING, ("needs 3 GB, mesh has 1 GB",)),
        PlannedModel(TOO_BIG, PlanRole.DOES_NOT_FIT, ("20 GB model, largest group 8 GB",)),
    ]
    return RoutingTable.build(servers, plan)


@pytest.fixture(scope="module")
def sync_client(gateway: GatewayThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
def async_client(gateway: GatewayThread) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def http(gateway: GatewayThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.base_url, timeout=HTTP_TIMEOUT_S) as client:
        yield client


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


# --- the openai SDK, unchanged ------------------------------------------------------------------


def test_models_lists_what_the_table_knows(sync_client: openai.OpenAI) -> None:
    ids = [model.id for model in sync_client.models.list()]
    assert GEMMA in ids
    assert set(ids) == {GEMMA, LOADING, GONE, WAITING, TOO_BIG}
    assert sync_client.models.retrieve(GEMMA).owned_by == "mesh-llm"


def test_sync_chat_completion(sync_client: openai.OpenAI) -> None:
    reply = sync_client.chat.completions.create(
        model=GEMMA, messages=HELLO, max_tokens=SHORT_TOKENS, temperature=0
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_sync_chat_completion_stream(sync_client: openai.OpenAI) -> None:
    stream = sync_client.chat.completions.create(
        model=GEMMA, messages=HELLO, max_tokens=SHORT_TOKENS, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text


def test_sync_completion_and_stream(sync_client: openai.OpenAI) -> None:
    reply = sync_client.completions.create(
        model=GEMMA, prompt="The sky is", max_tokens=SHORT_TOKENS, temperature=0
    )
    assert reply.choices[0].text
    stream = sync_client.completions.create(
        model=GEMMA, prompt="The sky is", max_tokens=SHORT_TOKENS, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices) == reply.choices[0].text


async def test_async_chat_completion_and_stream(async_client: openai.AsyncOpenAI) -> None:
    reply = await async_client.chat.completions.create(
        model=GEMMA, messages=HELLO, max_tokens=SHORT_TOKENS, temperature=0
    )
    stream = await async_client.chat.completions.create(
        model=GEMMA, messages=HELLO, max_tokens=SHORT_TOKENS, temperature=0, stream=True
    )
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert "".join(parts) == reply.choices[0].message.content


async def test_async_completion_stream(async_client: openai.AsyncOpenAI) -> None:
    stream = await async_client.completions.create(
        model=GEMMA, prompt="Once upon a time", max_tokens=SHORT_TOKENS, temperature=0, stream=True
    )
    parts = [chunk.choices[0].text async for chunk in stream if chunk.choices]
    assert len(parts) > 1


def test_json_mode_reaches_llama_server(sync_client: openai.OpenAI) -> None:
    # llama-server turns json_object into a grammar: output starting with "{" proves the field got through.
    reply = sync_client.chat.completions.create(
        model=GEMMA,
        messages=[{"role": "user", "content": "Give me a JSON object with a name."}],
        response_format={"type": "json_object"},
        max_tokens=16,
        temperature=0,
    )
    assert (reply.choices[0].message.content or "").lstrip().startswith("{")


def test_sdk_raises_not_found_for_unknown_models(sync_client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sync_client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert GEMMA in caught.value.message


# --- errors in OpenAI's shape ---------------------------------------------------------------------


def test_unknown_model_is_404_listing_known_models(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json={"model": "nope", "messages": HELLO})
    error = assert_openai_error(response, 404, "model_not_found")
    assert GEMMA in error["message"] and WAITING in error["message"]


@pytest.mark.parametrize(
    ("model", "code", "retry_after"),
    [
        (LOADING, "model_loading", MODEL_LOADING_RETRY_AFTER_S),
        (WAITING, "model_unavailable", WAITING_FOR_CAPACITY_RETRY_AFTER_S),
        (GONE, "upstream_unavailable", MODEL_LOADING_RETRY_AFTER_S),
    ],
)
def test_unready_models_are_503_with_retry_after(
    http: httpx.Client, model: str, code: str, retry_after: int
) -> None:
    response = http.post("/v1/chat/completions", json={"model": model, "messages": HELLO})
    assert_openai_error(response, 503, code)
    assert response.headers["retry-after"] == str(retry_after)


def test_model_that_does_not_fit_is_503_with_the_reason(http: httpx.Client) -> None:
    response = http.post("/v1/completions", json={"model": TOO_BIG, "prompt": "x"})
    error = assert_openai_error(response, 503, "model_unavailable")
    assert "largest group 8 GB" in error["message"]
    assert "retry-after" not in response.headers


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/v1/chat/completions", b'{"model": "gemma3-270m", "messages": [', "invalid_json"),
        ("/v1/chat/completions", b"", "invalid_json"),
        ("/v1/chat/completions", json.dumps({"messages": HELLO}).encode(), "missing_required_parameter"),
        ("/v1/chat/completions", json.dumps({"model": GEMMA}).encode(), "missing_required_parameter"),
        ("/v1/completions", json.dumps({"model": GEMMA}).encode(), "missing_required_parameter"),
        ("/v1/embeddings", json.dumps({"model": GEMMA}).encode(), "missing_required_parameter"),
    ],
)
def test_malformed_bodies_are_400(http: httpx.Client, path: str, body: bytes, code: str) -> None:
    response = http.post(path, content=body, headers={"content-type": "application/json"})
    assert_openai_error(response, 400, code)


def test_oversized_body_is_413(http: httpx.Client) -> None:
    filler = "x" * (MAX_REQUEST_BODY_BYTES + 1)
    body = json.dumps({"model": GEMMA, "messages": [{"role": "user", "content": filler}]}).encode()
    assert_openai_error(http.post("/v1/chat/completions", content=body), 413, "request_too_large")


def test_oversized_chunked_body_is_413(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
        yield b'{"model": "gemma3-270m", "prompt": "'
        for _ in range(MAX_REQUEST_BODY_BYTES // (1 << 20) + 1):
            yield b"x" * (1 << 20)
        yield b'"}'

    assert_openai_error(http.post("/v1/completions", content=chunks()), 413, "request_too_large")


def test_wrong_method_is_405(http: httpx.Client) -> None:
    response = http.get("/v1/chat/completions")
    assert_openai_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]


def test_unknown_path_is_404(http: httpx.Client) -> None:
    assert_openai_error(http.get("/v1/nothing-here"), 404, "unknown_url")
    assert_openai_error(http.post("/v2/chat/completions", json={}), 404, "unknown_url")


def test_health(http: httpx.Client) -> None:
    assert http.get("/health").json() == {"status": "ok"}


def test_upstream_errors_keep_status_and_message_with_a_string_code(
    http: httpx.Client, gemma_server: LlamaServer
) -> None:
    # This llama-server runs without --embeddings, and the table does not know the model's kind:
    # llama-server's own 501 reaches the client with its message, its numeric code made a string.
    body = {"model": GEMMA, "input": "hello"}
    direct = httpx.post(gemma_server.base_url + "/v1/embeddings", json=body, timeout=HTTP_TIMEOUT_S)
    via_gateway = http.post("/v1/embeddings", json=body)
    assert via_gateway.status_code == direct.status_code == 501
    assert isinstance(direct.json()["error"]["code"], int)
    error = assert_openai_error(via_gateway, 501, "not_supported")
    assert error["message"] == direct.json()["error"]["message"]


# --- streaming ------------------------------------------------------------------------------------


def _stream_body(model: str, max_tokens: int) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,  # llama.cpp extension: fixed length, so timing is comparable
        "stream": True,
    }


def test_stream_is_incremental(http: httpx.Client) -> None:
    started = time.monotonic()
    arrivals: list[float] = []
    with http.stream("POST", "/v1/chat/completions", json=_stream_body(GEMMA, 64)) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.monotonic() - started)
    total = time.monotonic() - started
    assert len(arrivals) >= 64
    # Unbuffered: the first event arrives long before the last one.
    assert arrivals[0] < total / 2, (arrivals[0], total)
    assert arrivals[-1] - arrivals[0] > total / 4


def test_client_disconnect_ends_the_upstream_request(
    http: httpx.Client, gateway: GatewayThread, gemma_server: LlamaServer
) -> None:
    # 1500 tokens would keep a slot busy for ~20 s; leaving after the first event must free it at once.
    with http.stream("POST", "/v1/chat/completions", json=_stream_body(GEMMA, 1500)) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                break
    gateway.wait_idle(10.0)
    deadline = time.monotonic() + SLOT_RELEASE_TIMEOUT_S
    while any(slot["is_processing"] for slot in httpx.get(gemma_server.base_url + "/slots").json()):
        assert time.monotonic() < deadline, "llama-server kept generating for a client that left"
        time.sleep(0.05)


def test_upstream_death_mid_stream_ends_with_an_error_event(
    http: httpx.Client, gateway: GatewayThread, start_llama_server: Callable[[str], LlamaServer]
) -> None:
    victim = start_llama_server(VICTIM)
    original = gateway.sources.table
    gateway.sources.table = RoutingTable.build(
        [LocalServer(VICTIM, ServerState.READY, "127.0.0.1", victim.port)], []
    )
    events: list[str] = []
    try:
        with http.stream("POST", "/v1/chat/completions", json=_stream_body(VICTIM, 1500)) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line)
                if len(events) == 3:
                    victim.kill()
    finally:
        gateway.sources.table = original
    last = json.loads(events[-1].removeprefix("data: "))
    assert last["error"]["code"] == "upstream_disconnected"
    assert len(events) < 1000  # it ended early, with the error, instead of hanging
