"""llama-server's errors reworded for the caller: a string `code` for OpenAI clients, Anthropic's
shape on /v1/messages, and an over-long prompt said the way Claude Code recognises it."""

from __future__ import annotations

import json

from services.gateway.errors import ApiDialect, OpenAIError
from services.gateway.upstream_errors import reword_upstream_error

# What the pinned llama-server sends for a prompt longer than its context.
CONTEXT_EXCEEDED = json.dumps(
    {
        "error": {
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 9000,
            "n_ctx": 8192,
        }
    }
).encode()


def test_openai_clients_get_a_string_code_and_keep_llama_servers_numbers() -> None:
    error = json.loads(reword_upstream_error(400, CONTEXT_EXCEEDED, ApiDialect.OPENAI))["error"]
    assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
    assert error["n_prompt_tokens"] == 9000 and error["n_ctx"] == 8192
    assert error["message"].startswith("the request exceeds")


def test_anthropic_clients_get_anthropics_shape_and_a_prompt_too_long_message() -> None:
    body = json.loads(reword_upstream_error(400, CONTEXT_EXCEEDED, ApiDialect.ANTHROPIC))
    assert body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 9000 tokens > 8192 maximum",
        },
    }


def test_a_loading_server_is_overloaded_for_anthropic_and_model_loading_for_openai() -> None:
    raw = json.dumps(
        {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
    ).encode()
    assert (
        json.loads(reword_upstream_error(503, raw, ApiDialect.ANTHROPIC))["error"]["type"]
        == "overloaded_error"
    )
    assert json.loads(reword_upstream_error(503, raw, ApiDialect.OPENAI))["error"]["code"] == "model_loading"


def test_errors_already_in_the_callers_shape_pass_unchanged() -> None:
    ours = OpenAIError(404, "The model 'x' does not exist.", code="model_not_found").body()
    assert reword_upstream_error(404, ours, ApiDialect.OPENAI) == ours
    anthropic = OpenAIError(404, "gone", code="model_not_found").body(ApiDialect.ANTHROPIC)
    assert reword_upstream_error(404, anthropic, ApiDialect.ANTHROPIC) == anthropic


def test_a_non_json_error_still_reaches_anthropic_clients_in_their_shape() -> None:
    body = json.loads(reword_upstream_error(500, b"Internal Server Error", ApiDialect.ANTHROPIC))
    assert body["type"] == "error" and body["error"] == {
        "type": "api_error",
        "message": "Internal Server Error",
    }
    assert reword_upstream_error(500, b"Internal Server Error", ApiDialect.OPENAI) == b"Internal Server Error"
