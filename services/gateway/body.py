"""Reading and checking an API request body before it is forwarded byte for byte.

The gateway only needs `model` to route; it checks the few fields without which llama-server would
answer with a less helpful error, and otherwise leaves the body alone (tools, JSON mode, sampling
options and llama.cpp extensions pass through untouched).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from starlette.requests import Request

from services.gateway.errors import OpenAIError, bad_request

# Far above any chat a 128k-context model can take (≈ 0.5 MB of text), small enough that a runaway
# client cannot make the gateway buffer hundreds of MB.
MAX_REQUEST_BODY_BYTES = 8 * 1024 * 1024


class Endpoint(enum.Enum):
    """An OpenAI endpoint the gateway forwards, with the field its body cannot do without."""

    CHAT_COMPLETIONS = ("/v1/chat/completions", "messages")
    COMPLETIONS = ("/v1/completions", "prompt")
    EMBEDDINGS = ("/v1/embeddings", "input")

    def __init__(self, path: str, required_field: str) -> None:
        self.path = path
        self.required_field = required_field


@dataclass(frozen=True)
class ApiRequest:
    endpoint: Endpoint
    model: str
    raw: bytes  # exactly what the client sent; this is what goes upstream


def _too_large(size_hint: str) -> OpenAIError:
    limit_mib = MAX_REQUEST_BODY_BYTES // (1024 * 1024)
    return OpenAIError(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        f"Request body {size_hint} exceeds the gateway's limit of {limit_mib} MiB.",
        code="request_too_large",
    )


async def read_body(request: Request, limit_bytes: int = MAX_REQUEST_BODY_BYTES) -> bytes:
    """The whole body, refusing early (by Content-Length) or as soon as a chunked body passes the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise _too_large(f"of {int(declared)} bytes")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit_bytes:
            raise _too_large("of more than that")
        chunks.append(chunk)
    return b"".join(chunks)


def _is_present(value: Any) -> bool:
    return value is not None and value != "" and value != []


def parse_request(endpoint: Endpoint, raw: bytes) -> ApiRequest:
    """Validate just enough to route and to fail in OpenAI's words; raises OpenAIError (400)."""
    if not raw.strip():
        raise bad_request("The request body is empty; send a JSON object.", "invalid_json")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.", "invalid_json") from exc
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", "invalid_json")
    model = body.get("model")
    if not _is_present(model):
        raise bad_request("You must provide a model parameter.", "missing_required_parameter", "model")
    if not isinstance(model, str):
        raise bad_request("The model parameter must be a string.", "invalid_type", "model")
    field = endpoint.required_field
    if not _is_present(body.get(field)):
        raise bad_request(f"Missing required parameter: '{field}'.", "missing_required_parameter", field)
    if field == "messages" and not isinstance(body[field], list):
        raise bad_request("The messages parameter must be an array.", "invalid_type", field)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("The stream parameter must be a boolean.", "invalid_type", "stream")
    return ApiRequest(endpoint=endpoint, model=model, raw=raw)
