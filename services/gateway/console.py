"""The console server on :3131: `/api/status`, `/api/events` (SSE), the web UI, and `/v1/*` for its chat.

The UI's chat posts to `/v1/chat/completions` on the console's own origin, which runs the very same API
app as :9337 in-process (same routing table, counters and streaming path): no CORS, no second hop, and
the page works behind whatever single port a user forwards. With an API key, that `/v1` takes the key
or the console session cookie the page gets when opened on this machine (services/gateway/api_key.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from services.gateway._fastapi import new_app
from services.gateway.api_key import ApiAccess, ApiKeyGuard, is_local_viewer
from services.gateway.events import (
    KEEPALIVE_INTERVAL_S,
    ConsoleEvent,
    EventBus,
    EventKind,
    TooManySubscribers,
    sse_stream,
)
from services.gateway.status import StatusReporter

UI_DIR = Path(__file__).resolve().parent / "console_ui"
# Set to 1 to show the invite token to viewers on other machines (with --listen-all); see README.
SHOW_TOKEN_ENV = "MESH_LLM_CONSOLE_SHOW_TOKEN"
# Everything the page loads comes from this server: no CDN, no inline script.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
API_METHODS = ["GET", "POST"]


@dataclass(frozen=True)
class ConsoleSettings:
    show_token_to_remote: bool = False
    keepalive_s: float = KEEPALIVE_INTERVAL_S

    @classmethod
    def from_env(cls) -> ConsoleSettings:
        return cls(show_token_to_remote=os.environ.get(SHOW_TOKEN_ENV, "") == "1")


def shows_invite_token(request: Request, settings: ConsoleSettings) -> bool:
    """The invite token admits anyone to the mesh: shown on this machine only (a loopback client under
    a loopback Host: not a DNS-rebinding page), unless configured."""
    return settings.show_token_to_remote or is_local_viewer(request.scope)


def _add_api_routes(
    app: FastAPI, reporter: StatusReporter, bus: EventBus, settings: ConsoleSettings, access: ApiAccess
) -> None:
    async def api_status(request: Request) -> Response:
        snapshot = await reporter.snapshot(shows_invite_token(request, settings))
        return JSONResponse(snapshot.to_json())

    async def api_events(request: Request) -> Response:
        try:
            subscription = bus.subscribe()  # before the snapshot, so no change falls in between
        except TooManySubscribers as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers={"retry-after": "5"})
        try:
            snapshot = await reporter.snapshot(shows_invite_token(request, settings))
        except BaseException:
            bus.unsubscribe(subscription)
            raise
        first = ConsoleEvent(EventKind.SNAPSHOT, snapshot.to_json())
        stream = sse_stream(bus, subscription, first, settings.keepalive_s)
        return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def index(request: Request) -> Response:
        headers = {"content-security-policy": CONTENT_SECURITY_POLICY, "cache-control": "no-cache"}
        response = FileResponse(UI_DIR / "index.html", headers=headers)
        session = access.console_session
        if session is not None and is_local_viewer(request.scope):
            response.set_cookie(session.name, session.value, path="/v1", httponly=True, samesite="strict")
        return response

    app.add_route("/api/status", api_status, methods=["GET"])
    app.add_route("/api/events", api_events, methods=["GET"])
    app.add_route("/health", health, methods=["GET"])
    app.add_route("/", index, methods=["GET"])


def build_console_app(
    reporter: StatusReporter,
    bus: EventBus | None = None,
    api_app: ASGIApp | None = None,
    settings: ConsoleSettings | None = None,
    access: ApiAccess | None = None,
    metrics: ASGIApp | None = None,
) -> FastAPI:
    """`api_app` is the :9337 app, served again under `/v1` for the UI's chat; None leaves it out.
    `access`: who may use that `/v1` (None: as an open API, for tests). `metrics`: `/metrics`
    (services/gateway/metrics_http.py), behind the same key as `/v1`."""
    app = new_app("mesh-llm console")
    access = access or ApiAccess(open_to_network=True)
    _add_api_routes(app, reporter, bus or EventBus(), settings or ConsoleSettings.from_env(), access)
    if api_app is not None:
        # An ASGI app as a route endpoint gets the scope untouched, so the API sees `/v1/...` paths.
        guarded = ApiKeyGuard(api_app, access, console=True)
        app.router.routes.append(Route("/v1/{path:path}", endpoint=guarded, methods=API_METHODS))
    if metrics is not None:
        app.router.routes.append(Route("/metrics", endpoint=ApiKeyGuard(metrics, access), methods=["GET"]))
    app.mount("/", StaticFiles(directory=UI_DIR), name="console-ui")
    return app
