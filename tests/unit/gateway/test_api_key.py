"""Who may use the API (services/gateway/api_key.py): the key, this machine only, or the network; the
console's session cookie for its own chat; the forwarded mark never honoured on a TCP port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.gateway._fastapi import new_app
from services.gateway.api_key import (
    AccessMode,
    ApiAccess,
    ApiKeyGuard,
    ConsoleSession,
    keys_equal,
    presented_key,
)
from services.gateway.console import ConsoleSettings, build_console_app
from services.gateway.openai_api import build_api_app
from services.gateway.proxy import UpstreamProxy
from services.gateway.remote import FORWARDED_HEADER
from services.gateway.sources import RoutingSources
from services.gateway.status import RequestCounters
from services.node.config import NodeConfig, save_api_key

KEY = "sk-mesh-0123456789"
LOCAL, REMOTE = "127.0.0.1", "192.168.1.20"


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "key"),
    [
        ("Bearer abc", None, "abc"),
        ("bearer  abc ", None, "abc"),
        (None, "abc", "abc"),
        ("Bearer abc", "other", "abc"),  # the OpenAI header first
        ("Basic abc", "xyz", "xyz"),
        ("Bearer ", None, None),
        ("Basic abc", None, None),
        (None, " ", None),
        (None, None, None),
    ],
)
def test_the_key_a_request_presents(
    authorization: str | None, x_api_key: str | None, key: str | None
) -> None:
    assert presented_key(authorization, x_api_key) == key


def test_keys_compare_by_digest() -> None:
    assert keys_equal(KEY, KEY)
    assert not keys_equal(KEY, KEY + "x") and not keys_equal("", KEY) and not keys_equal(KEY[:-1], KEY)


@pytest.mark.parametrize(
    ("access", "path", "presented", "client", "allowed"),
    [
        (ApiAccess(key=KEY), "/v1/models", KEY, REMOTE, True),
        (ApiAccess(key=KEY), "/v1/models", KEY, LOCAL, True),
        (ApiAccess(key=KEY), "/v1/models", None, LOCAL, False),  # a key binds this machine too
        (ApiAccess(key=KEY), "/v1/models", "wrong", LOCAL, False),
        (ApiAccess(key=KEY), "/health", None, REMOTE, True),
        (ApiAccess(), "/v1/models", None, LOCAL, True),
        (ApiAccess(), "/v1/models", None, "::1", True),
        (ApiAccess(), "/v1/models", None, "::ffff:127.0.0.1", True),
        (ApiAccess(), "/v1/models", "anything", LOCAL, True),  # no key: SDKs' dummy keys are ignored
        (ApiAccess(), "/v1/models", None, REMOTE, False),
        (ApiAccess(), "/v1/models", None, None, False),
        (ApiAccess(), "/health", None, REMOTE, True),
        (ApiAccess(open_to_network=True), "/v1/models", None, REMOTE, True),
        (ApiAccess(unreadable="gone"), "/v1/models", KEY, LOCAL, False),
        (ApiAccess(unreadable="gone"), "/health", None, LOCAL, True),
    ],
)
def test_the_rule(
    access: ApiAccess, path: str, presented: str | None, client: str | None, allowed: bool
) -> None:
    refusal = access.refusal(path, presented, client)
    assert (refusal is None) is allowed
    if refusal is not None:
        assert refusal.status == 401 and refusal.code == "invalid_api_key"


def test_without_a_key_another_machine_is_told_how_to_set_one() -> None:
    refusal = ApiAccess().refusal("/v1/models", None, REMOTE)
    assert refusal is not None and "--api-key" in refusal.message and "--no-api-key" in refusal.message


def test_the_console_session_stands_in_for_the_key_only_when_asked() -> None:
    access = ApiAccess(key=KEY)
    assert access.refusal("/v1/chat/completions", None, LOCAL, console_session=True) is None
    assert access.refusal("/v1/chat/completions", "wrong", LOCAL, console_session=True) is not None


def test_modes(tmp_path: Path) -> None:
    assert ApiAccess(key=KEY).mode is AccessMode.KEY
    assert ApiAccess().mode is AccessMode.LOCAL_ONLY
    assert ApiAccess(open_to_network=True).mode is AccessMode.OPEN
    assert ApiAccess(unreadable="gone").mode is AccessMode.KEY


def test_the_access_comes_from_the_config_and_the_key_file(tmp_path: Path) -> None:
    assert ApiAccess.from_config(NodeConfig(home=tmp_path)) == ApiAccess()
    assert ApiAccess.from_config(NodeConfig(home=tmp_path, no_api_key=True)) == ApiAccess(
        open_to_network=True
    )
    save_api_key(tmp_path, KEY)
    assert ApiAccess.from_config(NodeConfig(home=tmp_path, require_api_key=True)) == ApiAccess(key=KEY)
    save_api_key(tmp_path, None)
    missing = ApiAccess.from_config(NodeConfig(home=tmp_path, require_api_key=True))
    assert missing.mode is AccessMode.KEY and missing.unreadable  # fails closed


def test_the_console_session_is_stable_per_key_and_reveals_nothing_of_it() -> None:
    session = ConsoleSession.for_key(KEY)
    assert session == ConsoleSession.for_key(KEY) != ConsoleSession.for_key(KEY + "x")
    assert KEY not in session.name + session.value
    assert session.presented_in(f"other=1; {session.name}={session.value}")
    assert not session.presented_in(f"{session.name}={session.value[:-1]}x")
    assert not session.presented_in(None) and not session.presented_in("")


def echo_app() -> Any:
    app = new_app("test")

    async def echo(request: Request) -> Response:
        return JSONResponse({"forwarded": FORWARDED_HEADER in request.headers})

    for path in ("/v1/chat/completions", "/v1/messages", "/health"):
        app.add_route(path, echo, methods=["GET", "POST"])
    return app


async def call(
    access: ApiAccess, path: str, client: str = LOCAL, headers: dict[str, str] | None = None
) -> httpx.Response:
    transport = httpx.ASGITransport(app=ApiKeyGuard(echo_app(), access), client=(client, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:9337") as http:
        return await http.post(path, headers=headers or {}, json={})


async def test_the_guard_answers_401_in_the_openai_shape() -> None:
    response = await call(ApiAccess(key=KEY), "/v1/chat/completions")
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    assert "Authorization: Bearer KEY" in error["message"] and KEY not in response.text


async def test_the_guard_answers_401_in_the_anthropic_shape_on_messages() -> None:
    response = await call(ApiAccess(key=KEY), "/v1/messages", headers={"x-api-key": "wrong"})
    assert response.status_code == 401
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == "authentication_error"


async def test_the_guard_takes_either_sdks_header_and_leaves_health_open() -> None:
    access = ApiAccess(key=KEY)
    assert (
        await call(access, "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"})
    ).status_code == 200
    assert (await call(access, "/v1/messages", headers={"x-api-key": KEY})).status_code == 200
    assert (await call(access, "/health", client=REMOTE)).status_code == 200


async def test_the_forwarded_mark_is_dropped_on_a_tcp_port() -> None:
    headers = {FORWARDED_HEADER: "1", "authorization": f"Bearer {KEY}"}
    response = await call(ApiAccess(key=KEY), "/v1/chat/completions", headers=headers)
    assert response.json() == {"forwarded": False}
    refused = await call(ApiAccess(key=KEY), "/v1/chat/completions", headers={FORWARDED_HEADER: "1"})
    assert refused.status_code == 401  # it skips nothing


async def test_without_a_key_remote_clients_get_the_hint_unless_opened() -> None:
    refused = await call(ApiAccess(), "/v1/chat/completions", client=REMOTE)
    assert refused.status_code == 401 and "--api-key" in refused.json()["error"]["message"]
    assert (await call(ApiAccess(), "/v1/chat/completions")).status_code == 200
    assert (
        await call(ApiAccess(open_to_network=True), "/v1/chat/completions", client=REMOTE)
    ).status_code == 200


class FakeReporter:
    async def snapshot(self, show_invite_token: bool = True) -> Any:
        class Status:
            def to_json(self) -> dict[str, Any]:
                return {"invite_token": "mesh1-x" if show_invite_token else ""}

        return Status()


def console_client(client: str, base_url: str = "http://localhost:3131") -> httpx.AsyncClient:
    api = build_api_app(RoutingSources(), UpstreamProxy(), RequestCounters())
    app = build_console_app(
        FakeReporter(),  # type: ignore[arg-type]
        api_app=api,
        settings=ConsoleSettings(),
        access=ApiAccess(key=KEY),
    )
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(client, 40000)), base_url=base_url
    )


async def test_the_console_page_gives_a_local_viewer_a_session_for_its_chat() -> None:
    session = ConsoleSession.for_key(KEY)
    async with console_client(LOCAL) as console:
        page = await console.get("/")
        cookie = page.headers["set-cookie"]
        assert cookie.startswith(f"{session.name}={session.value};") and KEY not in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/v1" in cookie
        same_origin = {"origin": "http://localhost:3131", "sec-fetch-site": "same-origin"}
        assert (await console.get("/v1/models", headers=same_origin)).status_code == 200  # the cookie jar
        cross = {"origin": "http://localhost:8000", "sec-fetch-site": "same-site"}
        assert (await console.get("/v1/models", headers=cross)).status_code == 401
        console.cookies.clear()
        assert (await console.get("/v1/models")).status_code == 401
        assert (
            await console.get("/v1/models", headers={"authorization": f"Bearer {KEY}"})
        ).status_code == 200


async def test_no_session_for_remote_viewers_or_foreign_hosts() -> None:
    session = ConsoleSession.for_key(KEY)
    async with console_client(REMOTE, "http://192.168.1.5:3131") as console:
        assert "set-cookie" not in (await console.get("/")).headers
        console.cookies.set(session.name, session.value)
        assert (await console.get("/v1/models")).status_code == 401  # a copied cookie: not from here
    async with console_client(LOCAL, "http://evil.example:3131") as console:
        assert "set-cookie" not in (await console.get("/")).headers
        assert (await console.get("/api/status")).json()["invite_token"] == ""
