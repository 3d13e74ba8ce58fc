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

from services.gateway.errors import ApiDialect, OpenAIError, bad_request
from services.gateway.routing import ModelKind

# Far above any chat a 128k-context model can take (≈ 0.5 MB of text), small enough that a runaway
# client cannot make the gateway buffer hundreds of MB.
MAX_REQUEST_BODY_BYTES = 8 * 1024 * 1024


class Endpoint(enum.Enum):
    """A path the gateway forwards: where it goes on llama-server, the fields its body cannot do
    without, the kind of model that answers it (None: any) and the API whose error shape it speaks."""

    CHAT_COMPLETIONS = ("/v1/chat/completions", "/v1/chat/completions", ("messages",), ModelKind.CHAT)
    COMPLETIONS = ("/v1/completions", "/v1/completions", ("prompt",), ModelKind.CHAT)
    RESPONSES = ("/v1/responses", "/v1/responses", ("input",), ModelKind.CHAT)
    RESPONSES_INPUT_TOKENS = (
        "/v1/responses/input_tokens",
        "/v1/responses/input_tokens",
        ("input",),
        ModelKind.CHAT,
    )
    MESSAGES = ("/v1/messages", "/v1/messages", ("messages",), ModelKind.CHAT, ApiDialect.ANTHROPIC)
    COUNT_TOKENS = (
        "/v1/messages/count_tokens",
        "/v1/messages/count_tokens",
        ("messages",),
        ModelKind.CHAT,
        ApiDialect.ANTHROPIC,
    )
    EMBEDDINGS = ("/v1/embeddings", "/v1/embeddings", ("input",), ModelKind.EMBEDDING)
    RERANK = ("/v1/rerank", "/v1/rerank", ("query", "documents"), ModelKind.RERANK)
    RERANKING = ("/v1/reranking", "/v1/rerank", ("query", "documents"), ModelKind.RERANK)
    # llama-server's own paths have no /v1; ours do, like every other endpoint of this API.
    TOKENIZE = ("/v1/tokenize", "/tokenize", ("content",), None)
    DETOKENIZE = ("/v1/detokenize", "/detokenize", ("tokens",), None)

    def __init__(
        self,
        path: str,
        upstream_path: str,
        required_fields: tuple[str, ...],
        kind: ModelKind | None,
        dialect: ApiDialect = ApiDialect.OPENAI,
    ) -> None:
        self.path = path
        self.upstream_path = upstream_path
        self.required_fields = required_fields
        self.kind = kind
        self.dialect = dialect


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
    for field in endpoint.required_fields:
        if not _is_present(body.get(field)):
            raise bad_request(f"Missing required parameter: '{field}'.", "missing_required_parameter", field)
    if "messages" in endpoint.required_fields and not isinstance(body["messages"], list):
        raise bad_request("The messages parameter must be an array.", "invalid_type", "messages")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("The stream parameter must be a boolean.", "invalid_type", "stream")
    return ApiRequest(endpoint=endpoint, model=model, raw=raw)
