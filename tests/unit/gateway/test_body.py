"""Request body checks: just enough to route and to fail in OpenAI's words."""

from __future__ import annotations

import json

import pytest

from services.gateway.body import Endpoint, parse_request
from services.gateway.errors import OpenAIError


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
