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
from services.gateway.routing import ModelKind, RoutingTable

# Far above any chat a 128k-context model can take (≈ 0.5 MB of text), small enough that a runaway
# client cannot make the gateway buffer hundreds of MB.
MAX_REQUEST_BODY_BYTES = 8 * 1024 * 1024
JSON_MEDIA_TYPE = "application/json"
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
ANTHROPIC_ROLES = ("user", "assistant")  # Anthropic's system prompt is the top-level `system` field
# llama-server's "no limit" for n_predict and its aliases.
UNLIMITED_OUTPUT_TOKENS = -1


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


_MESSAGE_ROLES = {
    Endpoint.CHAT_COMPLETIONS: CHAT_ROLES,
    Endpoint.MESSAGES: ANTHROPIC_ROLES,
    Endpoint.COUNT_TOKENS: ANTHROPIC_ROLES,
}
# The fields that bound how many tokens are generated (llama-server reads its `n_predict` too).
# A request without one is left alone: with context shift off (the pinned build's default; the runner
# does not turn it on) llama-server stops when the slot's context is full, and Anthropic's path gets
# llama-server's own 4096.
_OUTPUT_TOKEN_FIELDS = {
    Endpoint.CHAT_COMPLETIONS: ("max_tokens", "max_completion_tokens", "n_predict"),
    Endpoint.COMPLETIONS: ("max_tokens", "n_predict"),
    Endpoint.RESPONSES: ("max_output_tokens",),
    Endpoint.MESSAGES: ("max_tokens",),
}


@dataclass(frozen=True)
class ApiRequest:
    endpoint: Endpoint
    model: str
    raw: bytes  # exactly what the client sent; this is what goes upstream
    # The integer output-token fields the body sets, as (field, value).
    output_tokens: tuple[tuple[str, int], ...] = ()


def _too_large(size_hint: str) -> OpenAIError:
    limit_mib = MAX_REQUEST_BODY_BYTES // (1024 * 1024)
    return OpenAIError(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        f"Request body {size_hint} exceeds the gateway's limit of {limit_mib} MiB.",
        code="request_too_large",
    )


def check_json_content_type(content_type: str | None) -> None:
    """A 415 unless the body is declared JSON (`application/json`, with parameters or not, or
    `application/*+json`).

    A web page can POST to another origin without a CORS preflight only as text/plain, a form, or with
    no Content-Type at all (a fetch() of raw bytes); refusing those keeps every site the user visits
    from using the API on localhost. The openai and anthropic SDKs, httpx's `json=` and the console's
    chat send application/json; `curl -d` sends a form type, hence the hint.
    """
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type == JSON_MEDIA_TYPE or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return
    got = f"'{media_type}'" if media_type else "none"
    raise OpenAIError(
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        f"The request body must be JSON, sent with Content-Type: {JSON_MEDIA_TYPE} (got {got}); "
        f"with curl, add -H 'Content-Type: {JSON_MEDIA_TYPE}'.",
        code="unsupported_media_type",
    )


async def read_body(request: Request, limit_bytes: int = MAX_REQUEST_BODY_BYTES) -> bytes:
    """The whole JSON body, refusing early (by Content-Length) or as soon as a chunked body passes the
    limit, then (415) one not declared JSON. The size comes first so an oversized body is a 413 whatever
    its type."""
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
    check_json_content_type(request.headers.get("content-type"))
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
    roles = _MESSAGE_ROLES.get(endpoint)
    if roles is not None:
        _check_roles(body["messages"], roles)
    return ApiRequest(endpoint, model, raw, _output_tokens(endpoint, body))


def _check_roles(messages: list[Any], roles: tuple[str, ...]) -> None:
    """Every message an object with a known role: llama-server answers a missing one with a 500."""
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise bad_request(f"Invalid type for '{where}': expected an object.", "invalid_type", where)
        role = message.get("role")
        if role is None:
            raise bad_request(
                f"Missing required parameter: '{where}.role'.", "missing_required_parameter", f"{where}.role"
            )
        if not isinstance(role, str) or role not in roles:
            supported = ", ".join(f"'{r}'" for r in roles)
            message_text = (
                f"Invalid value for '{where}.role': {json.dumps(role)}. Supported values are: {supported}."
            )
            raise bad_request(message_text, "invalid_value", f"{where}.role")


def _output_tokens(endpoint: Endpoint, body: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    fields = _OUTPUT_TOKEN_FIELDS.get(endpoint, ())
    return tuple(
        (field, value)
        for field in fields
        if isinstance(value := body.get(field), int) and not isinstance(value, bool)
    )


def capped_body(request: ApiRequest, table: RoutingTable, model: str) -> bytes:
    """The body to forward: `raw`, unless it asks for no output limit (-1) or for more tokens than the
    model's context holds; then those fields say the context instead (the most that can be generated,
    stated, so a `--context-shift` server does not generate forever for one request).

    Rewritten only then; unknown contexts (0: a server starting, an older peer) leave it as sent.
    """
    if not request.output_tokens:
        return request.raw
    context = next((entry.context_tokens for entry in table.entries if entry.model == model), 0)
    over = [
        field for field, value in request.output_tokens if value == UNLIMITED_OUTPUT_TOKENS or value > context
    ]
    if context <= 0 or not over:
        return request.raw
    body = json.loads(request.raw)
    body.update(dict.fromkeys(over, context))
    return json.dumps(body).encode()
