"""The console app in-process: invite token only for local viewers, the UI files, `/v1` for its chat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from services.gateway.console import UI_DIR, ConsoleSettings, build_console_app
from services.gateway.openai_api import build_api_app
from services.gateway.proxy import UpstreamProxy
from services.gateway.routing import Route, RoutingTable
from services.gateway.sources import RoutingSources
from services.gateway.status import RequestCounters

TOKEN = "mesh1-secret"


@dataclass
class FakeStatus:
    token: str

    def to_json(self) -> dict[str, Any]:
        return {"invite_token": self.token, "invite_token_hidden": not self.token}


class FakeReporter:
    async def snapshot(self, show_invite_token: bool = True) -> FakeStatus:
        return FakeStatus(TOKEN if show_invite_token else "")


def client(host: str, settings: ConsoleSettings | None = None, api: Any = None) -> httpx.AsyncClient:
    app = build_console_app(FakeReporter(), api_app=api, settings=settings or ConsoleSettings())  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, client=(host, 40000))
    # A loopback Host, as a browser on this machine sends it (services/gateway/host_check.py).
    return httpx.AsyncClient(transport=transport, base_url="http://localhost:3131")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_local_viewer_sees_the_invite_token(host: str) -> None:
    async with client(host) as console:
        status = (await console.get("/api/status")).json()
    assert status == {"invite_token": TOKEN, "invite_token_hidden": False}


async def test_remote_viewer_does_not_unless_configured() -> None:
    async with client("192.168.1.20") as console:
        assert (await console.get("/api/status")).json()["invite_token"] == ""
    async with client("192.168.1.20", ConsoleSettings(show_token_to_remote=True)) as console:
        assert (await console.get("/api/status")).json()["invite_token"] == TOKEN


def test_show_token_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_LLM_CONSOLE_SHOW_TOKEN", "1")
    assert ConsoleSettings.from_env().show_token_to_remote
    monkeypatch.setenv("MESH_LLM_CONSOLE_SHOW_TOKEN", "0")
    assert not ConsoleSettings.from_env().show_token_to_remote


async def test_ui_files_are_served_with_a_strict_policy() -> None:
    async with client("127.0.0.1") as console:
        index = await console.get("/")
        assets = {path.name: await console.get(f"/{path.name}") for path in sorted(UI_DIR.iterdir())}
    assert index.status_code == 200 and "<svg" in index.text
    assert "default-src 'self'" in index.headers["content-security-policy"]
    assert {"app.js", "chat.js", "dom.js", "panels.js", "state.js", "topology.js", "style.css"} <= set(assets)
    for name, response in assets.items():
        assert response.status_code == 200, name
        if name.endswith(".js"):  # ES modules need a JavaScript MIME type
            assert response.headers["content-type"].startswith("text/javascript"), name
        # Everything local: no CDN, no remote fonts (the SVG namespace is a name, not a fetch).
        text = response.text.replace("http://www.w3.org/2000/svg", "")
        assert "http://" not in text and "https://" not in text, name
    assert "EventSource" in assets["app.js"].text and "stream: true" in assets["chat.js"].text


async def test_v1_on_the_console_is_the_api_app() -> None:
    sources = RoutingSources()
    sources.table = RoutingTable.from_routes([Route("tiny", "127.0.0.1", 9)])
    api = build_api_app(sources, UpstreamProxy(), RequestCounters())
    chat = {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}
    async with client("127.0.0.1", api=api) as console:
        models = await console.get("/v1/models")
        missing = await console.post("/v1/chat/completions", json=chat)
    assert models.status_code == 200 and [m["id"] for m in models.json()["data"]] == ["tiny"]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
