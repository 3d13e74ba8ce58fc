"""The API on :9337: models from the routing table; OpenAI's and Anthropic's endpoints forwarded.

The forwarding routes are plain Starlette routes taking the raw Request: no FastAPI dependency
resolution or pydantic model on the hot path, and the body goes upstream exactly as it came.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.gateway._fastapi import new_app
from services.gateway.body import Endpoint, capped_body, parse_request, read_body
from services.gateway.errors import SERVER_ERROR, OpenAIError
from services.gateway.proxy import UpstreamProxy
from services.gateway.remote import FORWARDED_HEADER, PREFER_NODE_HEADER, RemoteForwarder
from services.gateway.routing import (
    Lookup,
    ModelEntry,
    ModelKind,
    ModelLoading,
    NotServable,
    RemoteRoute,
    Route,
    RoutingTable,
    UnknownModel,
)
from services.gateway.sources import RoutingSources
from services.gateway.status import RequestCounters

MODEL_OWNER = "mesh-llm"


def route_or_error(decision: Lookup) -> Route | RemoteRoute:
    """The route of a lookup, or the OpenAI error that explains why there is none."""
    if isinstance(decision, Route | RemoteRoute):
        return decision
    if isinstance(decision, UnknownModel):
        known = ", ".join(decision.known) or "none yet"
        message = f"The model '{decision.model}' does not exist. Known models: {known}."
        raise OpenAIError(HTTPStatus.NOT_FOUND, message, code="model_not_found", param="model")
    if isinstance(decision, ModelLoading):
        raise OpenAIError(
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"The model '{decision.model}' is loading ({decision.detail}); "
            f"retry in {decision.retry_after_s} s.",
            code="model_loading",
            error_type=SERVER_ERROR,
            headers={"retry-after": str(decision.retry_after_s)},
        )
    assert isinstance(decision, NotServable)
    headers = {"retry-after": str(decision.retry_after_s)} if decision.retry_after_s is not None else {}
    raise OpenAIError(
        HTTPStatus.SERVICE_UNAVAILABLE,
        f"The model '{decision.model}' cannot be served now: {decision.reason}.",
        code="model_unavailable",
        error_type=SERVER_ERROR,
        headers=headers,
    )


_KIND_WORDS = {
    ModelKind.CHAT: "a chat model",
    ModelKind.EMBEDDING: "an embedding model",
    ModelKind.RERANK: "a reranking model",
}


def check_model_kind(table: RoutingTable, endpoint: Endpoint, model: str) -> None:
    """A 400 naming models that can answer when `model` is of the wrong kind for the endpoint.

    A model whose kind is not known yet (its server is starting, or an older peer serves it) passes:
    llama-server then answers for itself.
    """
    kind = table.kind_of(model)
    if endpoint.kind is None or kind is ModelKind.UNKNOWN or kind is endpoint.kind:
        return
    able = table.ready_models_of_kind(endpoint.kind)
    others = f"try {', '.join(able)}" if able else f"no node in this mesh serves {_KIND_WORDS[endpoint.kind]}"
    message = (
        f"The model '{model}' is {_KIND_WORDS[kind]}; {endpoint.path} needs "
        f"{_KIND_WORDS[endpoint.kind]} ({others})."
    )
    raise OpenAIError(HTTPStatus.BAD_REQUEST, message, code="model_kind_mismatch", param="model")


def _model_object(entry: ModelEntry) -> dict[str, Any]:
    # `meshllm` is an extension; OpenAI clients ignore fields they do not know.
    return {
        "id": entry.model,
        "object": "model",
        "created": int(entry.since_unix_s),
        "owned_by": MODEL_OWNER,
        "meshllm": {
            "state": entry.state,
            "local": entry.local,
            "nodes": list(entry.nodes),
            "kind": entry.kind.value,
            "context_tokens": entry.context_tokens,
            "slots": entry.slots,  # requests decoded at once, over its ready servers (0: not known)
            "speculation": entry.speculation,  # this node's server's: "ngram", "draft NAME+ngram", "off"
        },
    }


def _add_model_routes(app: FastAPI, sources: RoutingSources) -> None:
    async def list_models(request: Request) -> Response:
        data = [_model_object(entry) for entry in sources.table.entries]
        return JSONResponse({"object": "list", "data": data})

    async def retrieve_model(request: Request) -> Response:
        table = sources.table
        decision = table.lookup(request.path_params["model"])
        if isinstance(decision, UnknownModel):
            route_or_error(decision)  # raises the same 404 a completion would get
        entry = next(e for e in table.entries if e.model == decision.model)
        return JSONResponse(_model_object(entry))

    app.add_route("/v1/models", list_models, methods=["GET"])
    app.add_route("/v1/models/{model:path}", retrieve_model, methods=["GET"])


def _served_here(decision: Lookup) -> Lookup:
    """A request a peer forwarded to us: serve it locally or fail; never forward it again."""
    if isinstance(decision, RemoteRoute):
        if decision.local is not None:
            return decision.local
        return NotServable(decision.model, "this node no longer serves it (forwarded request)", 1)
    return decision


def _add_forwarding_route(
    app: FastAPI,
    endpoint: Endpoint,
    sources: RoutingSources,
    proxy: UpstreamProxy,
    remote: RemoteForwarder | None,
    counters: RequestCounters,
) -> None:
    async def forward(request: Request) -> Response:
        raw = await read_body(request)
        api_request = parse_request(endpoint, raw)
        decision = sources.table.lookup(api_request.model)
        forwarded = FORWARDED_HEADER in request.headers
        if forwarded or remote is None:
            decision = _served_here(decision)
        route = route_or_error(decision)
        check_model_kind(sources.table, endpoint, route.model)
        body = capped_body(api_request, sources.table, route.model)
        # Demand is counted where the client's request entered the mesh, not again where it is served.
        counters.started(route.model, entered_here=not forwarded)
        if isinstance(route, RemoteRoute) and remote is not None:
            preferred = request.headers.get(PREFER_NODE_HEADER, "")
            return await remote.forward(route, endpoint, body, counters.finished, preferred)
        assert isinstance(route, Route)  # _served_here turned remote routes into errors without a forwarder
        return await proxy.forward(route, endpoint, body, counters.finished)

    app.add_route(endpoint.path, forward, methods=["POST"])


def build_api_app(
    sources: RoutingSources,
    proxy: UpstreamProxy,
    counters: RequestCounters,
    remote: RemoteForwarder | None = None,
) -> FastAPI:
    """`remote` is None where the gateway has no mesh to forward through (tests, benches)."""
    app = new_app("mesh-llm API")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app.add_route("/health", health, methods=["GET"])
    _add_model_routes(app, sources)
    for endpoint in Endpoint:
        _add_forwarding_route(app, endpoint, sources, proxy, remote, counters)
    return app
