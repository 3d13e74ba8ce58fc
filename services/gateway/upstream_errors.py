"""llama-server's error answers, reworded into the caller's API shape (pure; errors only, never the
success path).

llama-server answers every path, /v1/messages included, with OpenAI-like errors whose `code` is the
HTTP status as a number and whose `type` is its own (`exceed_context_size_error`,
`unavailable_error`, `not_supported_error`). OpenAI clients expect a string `code` (the openai SDK
exposes it as `err.code`; LiteLLM maps on it), Anthropic clients expect Anthropic's shape, and Claude
Code compacts a conversation only when an over-long prompt says "prompt is too long".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.gateway.errors import INVALID_REQUEST, SERVER_ERROR, ApiDialect, anthropic_error_payload

CONTEXT_EXCEEDED_TYPE = "exceed_context_size_error"
# llama-server's error types -> (OpenAI type, OpenAI code) as OpenAI itself would say them.
_OPENAI_TERMS = {
    CONTEXT_EXCEEDED_TYPE: (INVALID_REQUEST, "context_length_exceeded"),
    "invalid_request_error": (INVALID_REQUEST, "invalid_request"),
    "authentication_error": (INVALID_REQUEST, "invalid_api_key"),
    "permission_error": (INVALID_REQUEST, "permission_denied"),
    "not_found_error": (INVALID_REQUEST, "not_found"),
    "not_supported_error": (INVALID_REQUEST, "not_supported"),
    "unavailable_error": (SERVER_ERROR, "model_loading"),
    "server_error": (SERVER_ERROR, "server_error"),
}


@dataclass(frozen=True)
class UpstreamErrorFacts:
    message: str
    error_type: str
    code: Any
    extra: dict[str, Any]


def _facts(content: bytes) -> UpstreamErrorFacts | None:
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    if body.get("type") == "error" and isinstance(body.get("error"), dict):
        return None  # already Anthropic-shaped (a peer's gateway said it)
    error = body.get("error")
    if not isinstance(error, dict):
        return None
    extra = {k: v for k, v in error.items() if k not in ("message", "type", "code", "param")}
    return UpstreamErrorFacts(
        str(error.get("message", "")), str(error.get("type", "")), error.get("code"), extra
    )


def _context_message(facts: UpstreamErrorFacts) -> str:
    prompt, limit = facts.extra.get("n_prompt_tokens"), facts.extra.get("n_ctx")
    if isinstance(prompt, int) and isinstance(limit, int):
        return f"prompt is too long: {prompt} tokens > {limit} maximum"
    return f"prompt is too long: {facts.message}"


def reword_upstream_error(status: int, content: bytes, dialect: ApiDialect) -> bytes:
    """The error body to send the client; `content` unchanged when it is not an error we know."""
    facts = _facts(content)
    if facts is None:
        if dialect is ApiDialect.ANTHROPIC and content.strip():
            try:
                json.loads(content)
            except (ValueError, RecursionError):
                # Not JSON at all (a crashed upstream's text): still the shape the client parses.
                text = content.decode("utf-8", "replace").strip()[:500]
                return json.dumps(anthropic_error_payload(status, text)).encode()
        return content
    if dialect is ApiDialect.ANTHROPIC:
        message = _context_message(facts) if facts.error_type == CONTEXT_EXCEEDED_TYPE else facts.message
        return json.dumps(anthropic_error_payload(status, message)).encode()
    if isinstance(facts.code, str) and facts.code:
        return content  # ours already, or a server that speaks OpenAI's shape
    error_type, code = _OPENAI_TERMS.get(
        facts.error_type, (SERVER_ERROR if status >= 500 else INVALID_REQUEST, facts.error_type or "error")
    )
    error = {"message": facts.message, "type": error_type, "param": None, "code": code, **facts.extra}
    return json.dumps({"error": error}).encode()
