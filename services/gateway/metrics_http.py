"""`GET /metrics` on the console port: this node (`?scope=node`, the default) or the mesh (`?scope=mesh`).

Renders what is in memory only (services/gateway/metrics_collector.py): no call to another service,
so a scrape answers while any of them restarts. The console puts it behind the API key like `/v1`.
"""

from __future__ import annotations

from http import HTTPStatus

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from services.gateway.metrics_collector import MetricsCollector
from services.gateway.metrics_families import CONTENT_TYPE, render

SCOPE_PARAM = "scope"
NODE_SCOPE = "node"
MESH_SCOPE = "mesh"


class MetricsEndpoint:
    """An ASGI app serving the exposition."""

    def __init__(self, collector: MetricsCollector) -> None:
        self._collector = collector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        which = request.query_params.get(SCOPE_PARAM, NODE_SCOPE)
        response: Response
        if which == NODE_SCOPE:
            response = Response(render([self._collector.local_snapshot()]), media_type=CONTENT_TYPE)
        elif which == MESH_SCOPE:
            response = Response(render(self._collector.mesh_snapshots()), media_type=CONTENT_TYPE)
        else:
            message = f"scope must be '{NODE_SCOPE}' or '{MESH_SCOPE}', not {which!r}\n"
            response = PlainTextResponse(message, status_code=HTTPStatus.BAD_REQUEST)
        await response(scope, receive, send)
