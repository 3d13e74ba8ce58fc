"""Request body checks: just enough to route and to fail in OpenAI's words."""

from __future__ import annotations

import json

import pytest

from services.gateway.body import Endpoint, capped_body, check_json_content_type, parse_request
from services.gateway.errors import ApiDialect, OpenAIError, dialect_of_path
from services.gateway.routing import LocalServer, RoutingTable, ServerState


def _raw(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_valid_chat_body_is_kept_byte_for_byte() -> None:
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [], "x_extra": 1}'
    parsed = parse_request(Endpoint.CHAT_COMPLETIONS, raw)
    assert parsed.model == "m"
    assert parsed.raw is raw


@pytest.mark.parametrize(
    ("endpoint", "raw", "code", "param"),
    [
        (Endpoint.CHAT_COMPLETIONS, b"", "invalid_json", None),
        (Endpoint.CHAT_COMPLETIONS, b"{not json", "invalid_json", None),
        (Endpoint.CHAT_COMPLETIONS, b"[1, 2]", "invalid_json", None),
        (Endpoint.CHAT_COMPLETIONS, b"\xff\xfe", "invalid_json", None),
        (
            Endpoint.CHAT_COMPLETIONS,
            _raw(messages=[{"role": "user", "content": "x"}]),
            "missing_required_parameter",
            "model",
        ),
        (Endpoint.CHAT_COMPLETIONS, _raw(model="", messages=[1]), "missing_required_parameter", "model"),
        (Endpoint.CHAT_COMPLETIONS, _raw(model=3, messages=[1]), "invalid_type", "model"),
        (Endpoint.CHAT_COMPLETIONS, _raw(model="m"), "missing_required_parameter", "messages"),
        (Endpoint.CHAT_COMPLETIONS, _raw(model="m", messages=[]), "missing_required_parameter", "messages"),
        (Endpoint.CHAT_COMPLETIONS, _raw(model="m", messages="hi"), "invalid_type", "messages"),
        (Endpoint.CHAT_COMPLETIONS, _raw(model="m", messages=[1], stream="yes"), "invalid_type", "stream"),
        (Endpoint.COMPLETIONS, _raw(model="m"), "missing_required_parameter", "prompt"),
        (Endpoint.EMBEDDINGS, _raw(model="m", prompt="x"), "missing_required_parameter", "input"),
    ],
)
def test_bad_bodies_are_400_with_a_reason(
    endpoint: Endpoint, raw: bytes, code: str, param: str | None
) -> None:
    with pytest.raises(OpenAIError) as caught:
        parse_request(endpoint, raw)
    error = caught.value.payload()["error"]
    assert caught.value.status == 400
    assert error["code"] == code
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert error["message"]


def test_completions_accept_a_token_list_prompt() -> None:
    assert parse_request(Endpoint.COMPLETIONS, _raw(model="m", prompt=[1, 2, 3])).model == "m"


@pytest.mark.parametrize(
    ("endpoint", "fields", "missing"),
    [
        (Endpoint.RESPONSES, {"model": "m"}, "input"),
        (Endpoint.MESSAGES, {"model": "m", "max_tokens": 8}, "messages"),
        (Endpoint.COUNT_TOKENS, {"model": "m"}, "messages"),
        (Endpoint.EMBEDDINGS, {"model": "m"}, "input"),
        (Endpoint.RERANK, {"model": "m", "query": "q"}, "documents"),
        (Endpoint.RERANK, {"model": "m", "documents": ["d"]}, "query"),
        (Endpoint.TOKENIZE, {"model": "m"}, "content"),
        (Endpoint.DETOKENIZE, {"model": "m"}, "tokens"),
    ],
)
def test_every_endpoint_names_the_field_it_cannot_do_without(
    endpoint: Endpoint, fields: dict[str, object], missing: str
) -> None:
    with pytest.raises(OpenAIError) as error:
        parse_request(endpoint, _raw(**fields))
    assert error.value.status == 400 and error.value.param == missing


def test_anthropic_messages_must_be_a_list_and_responses_take_a_plain_string() -> None:
    with pytest.raises(OpenAIError, match="array"):
        parse_request(Endpoint.MESSAGES, _raw(model="m", messages="hi"))
    assert parse_request(Endpoint.RESPONSES, _raw(model="m", input="hi")).model == "m"


def test_paths_map_to_llama_servers_own_and_anthropic_paths_speak_anthropic() -> None:
    assert Endpoint.TOKENIZE.upstream_path == "/tokenize" and Endpoint.TOKENIZE.path == "/v1/tokenize"
    assert Endpoint.RERANKING.upstream_path == "/v1/rerank"
    anthropic = {e for e in Endpoint if e.dialect is ApiDialect.ANTHROPIC}
    assert anthropic == {Endpoint.MESSAGES, Endpoint.COUNT_TOKENS}
    assert all(dialect_of_path(e.path) is e.dialect for e in Endpoint)
    assert dialect_of_path("/v1/messagesX") is ApiDialect.OPENAI


# --- message roles (issue 13: a message without a string role was llama-server's 500) ----------


@pytest.mark.parametrize(
    ("endpoint", "messages", "code", "param"),
    [
        (Endpoint.CHAT_COMPLETIONS, [{"content": "hi"}], "missing_required_parameter", "messages[0].role"),
        (Endpoint.CHAT_COMPLETIONS, [{"role": "user"}, {"role": 7}], "invalid_value", "messages[1].role"),
        (Endpoint.CHAT_COMPLETIONS, [{"role": "robot"}], "invalid_value", "messages[0].role"),
        (Endpoint.CHAT_COMPLETIONS, ["hi"], "invalid_type", "messages[0]"),
        (Endpoint.MESSAGES, [{"role": "system", "content": "x"}], "invalid_value", "messages[0].role"),
        (Endpoint.COUNT_TOKENS, [{"role": None}], "missing_required_parameter", "messages[0].role"),
    ],
)
def test_every_message_needs_a_known_role(
    endpoint: Endpoint, messages: list[object], code: str, param: str
) -> None:
    with pytest.raises(OpenAIError) as caught:
        parse_request(endpoint, _raw(model="m", messages=messages))
    assert caught.value.status == 400
    assert (caught.value.code, caught.value.param) == (code, param)
    assert param in caught.value.message


def test_every_role_agents_send_is_accepted() -> None:
    roles = ["system", "developer", "user", "assistant", "tool", "function"]
    parse_request(Endpoint.CHAT_COMPLETIONS, _raw(model="m", messages=[{"role": r} for r in roles]))
    parse_request(Endpoint.MESSAGES, _raw(model="m", messages=[{"role": "user"}, {"role": "assistant"}]))


# --- Content-Type (issue 13: JSON sent as text/plain let any web page use the API) -------------


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/vnd.api+json"],
)
def test_json_content_types_are_accepted(content_type: str) -> None:
    check_json_content_type(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ],
)
def test_other_content_types_are_415_with_the_fix(content_type: str | None) -> None:
    with pytest.raises(OpenAIError) as caught:
        check_json_content_type(content_type)
    assert caught.value.status == 415 and caught.value.code == "unsupported_media_type"
    assert "-H 'Content-Type: application/json'" in caught.value.message


# --- output tokens held to the model's context ------------------------------------------------

CONTEXT_TOKENS = 4096


def _table(context_tokens: int) -> RoutingTable:
    return RoutingTable.build(
        [LocalServer("m", ServerState.READY, "127.0.0.1", 1, context_tokens=context_tokens)], []
    )


@pytest.mark.parametrize(
    ("endpoint", "fields", "capped"),
    [
        (Endpoint.CHAT_COMPLETIONS, {"messages": [{"role": "user"}], "max_tokens": -1}, {"max_tokens"}),
        (
            Endpoint.CHAT_COMPLETIONS,
            {"messages": [{"role": "user"}], "max_completion_tokens": 10**9, "n_predict": 5},
            {"max_completion_tokens"},
        ),
        (Endpoint.COMPLETIONS, {"prompt": "p", "n_predict": -1}, {"n_predict"}),
        (Endpoint.RESPONSES, {"input": "p", "max_output_tokens": CONTEXT_TOKENS + 1}, {"max_output_tokens"}),
        (Endpoint.MESSAGES, {"messages": [{"role": "user"}], "max_tokens": -1}, {"max_tokens"}),
    ],
)
def test_unbounded_or_oversized_output_is_held_to_the_context(
    endpoint: Endpoint, fields: dict[str, object], capped: set[str]
) -> None:
    request = parse_request(endpoint, _raw(model="m", **fields))
    body = json.loads(capped_body(request, _table(CONTEXT_TOKENS), "m"))
    assert {f for f in body if body[f] == CONTEXT_TOKENS} == capped
    assert {k: v for k, v in body.items() if k not in capped} == {
        k: v for k, v in {"model": "m", **fields}.items() if k not in capped
    }


@pytest.mark.parametrize(
    ("fields", "context_tokens"),
    [
        ({"max_tokens": 256}, CONTEXT_TOKENS),
        ({"max_tokens": CONTEXT_TOKENS}, CONTEXT_TOKENS),
        ({}, CONTEXT_TOKENS),  # absent: llama-server stops when the context is full
        ({"max_tokens": True}, CONTEXT_TOKENS),  # not an integer: llama-server's to refuse
        ({"max_tokens": -1}, 0),  # context not known: left as sent
    ],
)
def test_bounded_output_is_sent_byte_for_byte(fields: dict[str, object], context_tokens: int) -> None:
    request = parse_request(Endpoint.CHAT_COMPLETIONS, _raw(model="m", messages=[{"role": "user"}], **fields))
    assert capped_body(request, _table(context_tokens), "m") is request.raw
