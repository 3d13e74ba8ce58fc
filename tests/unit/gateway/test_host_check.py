"""The Host check (services/gateway/host_check.py): DNS-rebinding pages are refused, this node is not."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.gateway._fastapi import new_app
from services.gateway.host_check import (
    HOST_NOT_ALLOWED_STATUS,
    MACHINE_HOSTS_REFRESH_S,
    HostAllowList,
    HostGuard,
    configured_hosts,
    host_name,
    host_pattern,
    is_loopback_host_header,
    is_loopback_name,
    machine_hosts,
)
from services.node.config import NodeConfig


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost", "localhost"),
        ("LocalHost:3131", "localhost"),
        ("localhost.:9337", "localhost"),
        ("127.0.0.1:9337", "127.0.0.1"),
        ("[::1]:9337", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[0:0:0:0:0:0:0:1]:80", "::1"),
        ("[::ffff:127.0.0.1]:80", "127.0.0.1"),
        ("gpu-box.lan:3131", "gpu-box.lan"),
        ("evil.example", "evil.example"),
    ],
)
def test_host_names_are_read_without_port_in_canonical_form(header: str, name: str) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(
    "header",
    [
        "",
        ":9337",
        "local host",
        "evil.example:port",
        "evil.example:123456",
        "[::1",
        "[evil]:80",
        "a/b",
        "a@b",
    ],
)
def test_malformed_hosts_are_none(header: str) -> None:
    assert host_name(header) is None


@pytest.mark.parametrize(
    ("name", "loopback"),
    [
        ("localhost", True),
        ("app.localhost", True),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost.evil.example", False),
        ("evillocalhost", False),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("evil.example", False),
    ],
)
def test_loopback_names(name: str, loopback: bool) -> None:
    assert is_loopback_name(name) is loopback


def test_a_loopback_host_header() -> None:
    assert is_loopback_host_header("localhost:3131") and is_loopback_host_header("[::1]:3131")
    assert not is_loopback_host_header("evil.example:3131")
    assert not is_loopback_host_header(None) and not is_loopback_host_header("[::1")


async def test_without_listen_all_only_loopback_names_pass(tmp_path: Path) -> None:
    hosts = HostAllowList.for_config(NodeConfig(home=tmp_path))
    for header in ("localhost:9337", "127.0.0.1:9337", "[::1]:9337", "x.localhost"):
        assert await hosts.allows(header), header
    for header in ("evil.example:9337", "10.0.0.5:9337", "127.0.0.1.nip.io"):
        assert not await hosts.allows(header), header


async def test_allowed_hosts_pass_without_listen_all_exactly_or_under_their_domain(tmp_path: Path) -> None:
    """A reverse proxy on this machine that passes its own Host on (nginx's `proxy_set_header Host`)."""
    config = NodeConfig(home=tmp_path, allowed_hosts=("mesh.example.com", "*.lan.example", "10.1.2.3"))
    hosts = HostAllowList.for_config(config)
    for header in ("mesh.example.com", "MESH.example.com:443", "a.lan.example", "b.c.lan.example:3131"):
        assert await hosts.allows(header), header
    for header in ("10.1.2.3:9337", "localhost:9337"):
        assert await hosts.allows(header), header
    for header in ("lan.example", "evil.mesh.example.com", "mesh.example.com.evil.example", "xlan.example"):
        assert not await hosts.allows(header), header


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("mesh.example.com", "mesh.example.com"),
        ("Mesh.Example.COM.", "mesh.example.com"),
        ("*.lan.example", "*.lan.example"),
        ("10.1.2.3", "10.1.2.3"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("*.com", None),  # every name under a TLD: a rebinding page's too
        ("*.10.0.0.1", None),
        ("*", None),
        ("mesh example", None),
        ("http://mesh.example.com", None),
        ("", None),
    ],
)
def test_allow_host_values(text: str, pattern: str | None) -> None:
    assert host_pattern(text) == pattern


async def test_no_host_at_all_passes_since_browsers_always_send_one() -> None:
    assert await HostAllowList().allows(None)


def test_configured_hosts_are_allowed_advertised_and_bound_addresses(tmp_path: Path) -> None:
    config = NodeConfig(
        home=tmp_path,
        advertise=("Gpu.Example.org:40000", "[2001:db8::1]:40000"),
        bind_ip="10.0.0.7",
        allowed_hosts=("*.lan.example",),
    )
    assert configured_hosts(config) == {"gpu.example.org", "2001:db8::1", "10.0.0.7", "*.lan.example"}


def test_this_machine_is_known_by_its_addresses_and_name() -> None:
    import socket

    hosts = machine_hosts()
    assert "127.0.0.1" in hosts  # every interface, loopback included
    assert socket.gethostname().lower() in hosts


async def test_with_listen_all_the_machines_hosts_are_reread_at_most_every_interval(tmp_path: Path) -> None:
    now = [0.0]
    reads: list[float] = []
    machine = {"10.0.0.5"}

    def read() -> frozenset[str]:
        reads.append(now[0])
        return frozenset(machine)

    hosts = HostAllowList({"gpu.example.org"}, read, clock=lambda: now[0])
    assert await hosts.allows("gpu.example.org:9337") and not reads  # configured: no read needed
    assert await hosts.allows("10.0.0.5:9337") and reads == [0.0]
    assert not await hosts.allows("evil.example:9337") and reads == [0.0]  # read a moment ago
    machine.add("10.0.0.9")  # a new lease
    now[0] = MACHINE_HOSTS_REFRESH_S
    assert await hosts.allows("10.0.0.9:9337") and reads == [0.0, MACHINE_HOSTS_REFRESH_S]
    assert await hosts.allows("10.0.0.5:9337") and len(reads) == 2  # known: no read


def app_behind_guard(hosts: HostAllowList) -> HostGuard:
    app = new_app("test")

    async def anything(request: Request) -> Response:
        return JSONResponse({"ok": True})

    app.add_route("/v1/chat/completions", anything, methods=["POST"])
    app.add_route("/v1/messages", anything, methods=["POST"])
    app.add_route("/api/status", anything, methods=["GET"])
    return HostGuard(app, hosts)


async def guarded_request(host: str, method: str, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app_behind_guard(HostAllowList()), client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:9337") as client:
        return await client.request(method, path, headers={"host": host}, json={})


async def test_the_guard_refuses_a_rebinding_host_in_the_callers_shape() -> None:
    openai = await guarded_request("evil.example:9337", "POST", "/v1/chat/completions")
    assert openai.status_code == HOST_NOT_ALLOWED_STATUS
    assert (
        openai.json()["error"]["code"] == "host_not_allowed"
        and "evil.example" in openai.json()["error"]["message"]
    )
    anthropic = await guarded_request("evil.example:9337", "POST", "/v1/messages")
    assert anthropic.status_code == HOST_NOT_ALLOWED_STATUS and anthropic.json()["type"] == "error"
    console = await guarded_request("evil.example:3131", "GET", "/api/status")
    assert console.status_code == HOST_NOT_ALLOWED_STATUS and "ok" not in json.dumps(console.json())


async def test_the_guard_lets_this_node_through() -> None:
    for host in ("localhost:9337", "127.0.0.1:9337", "[::1]:9337"):
        response = await guarded_request(host, "POST", "/v1/chat/completions")
        assert response.status_code == 200 and response.json() == {"ok": True}, host
