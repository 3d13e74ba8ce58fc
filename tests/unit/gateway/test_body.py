"""Request body checks: just enough to route and to fail in OpenAI's words."""

from __future__ import annotations

import json

import pytest

from services.gateway.body import Endpoint, parse_request
from services.gateway.errors import ApiDialect, OpenAIError, dialect_of_path


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
