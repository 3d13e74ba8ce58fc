"""How the gateway builds its FastAPI apps: no docs pages, no telemetry hooks, OpenAI-shaped errors."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from services.gateway.errors import install_error_handlers


def _no_telemetry() -> dict[str, Any]:
    """Keyword arguments that turn FastAPI's built-in OpenTelemetry off, where it has any.

    When a provider is configured in the environment it wraps every request; the gateway's hot path
    stays free of it (Prometheus /metrics comes later, our own). Older FastAPI has no such option.
    """
    try:
        from fastapi.telemetry import TelemetryConfig
    except ImportError:
        return {}
    config = TelemetryConfig(tracing=False, metrics=False, logs=False, operation_spans=False)
    return {"telemetry": config}


def new_app(title: str) -> FastAPI:
    app = FastAPI(
        title=title,
        docs_url=None,  # /docs would answer on the API port, where unknown paths must be OpenAI 404s
        redoc_url=None,
        openapi_url=None,
        **_no_telemetry(),
    )
    install_error_handlers(app)
    return app
