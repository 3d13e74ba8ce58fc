"""The console server on :3131. For now `/api/status` and `/health`; the web UI and events come later."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from services.gateway.errors import install_error_handlers
from services.gateway.status import StatusReporter


def build_console_app(reporter: StatusReporter) -> FastAPI:
    app = FastAPI(title="mesh-llm console", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)

    @app.get("/api/status")
    async def api_status() -> dict[str, Any]:
        snapshot = await reporter.snapshot()
        return snapshot.to_json()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
