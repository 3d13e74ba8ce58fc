"""The console server on :3131. For now `/api/status` and `/health`; the web UI and events come later."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from services.gateway._fastapi import new_app
from services.gateway.status import StatusReporter


def build_console_app(reporter: StatusReporter) -> FastAPI:
    app = new_app("mesh-llm console")

    @app.get("/api/status")
    async def api_status() -> dict[str, Any]:
        snapshot = await reporter.snapshot()
        return snapshot.to_json()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
