"""Which `Host` a request may name: the API's and console's guard against DNS rebinding.

A page on evil.example can have the browser resolve evil.example to 127.0.0.1 (a short-lived DNS
answer), and then read whatever http://evil.example:3131/api/status says — the invite token — since
to the browser it is the page's own origin. The one thing that gives it away is the Host header,
which still names evil.example. So the API and console answer only Hosts that name this node:

- loopback names, always: `localhost`, `*.localhost`, 127.0.0.0/8, `[::1]` (any port). No attacker can
  own them: browsers resolve `localhost` and `*.localhost` to loopback themselves, and IP literals are
  not resolved at all;
- the names given with `--allow-host` (a reverse proxy that passes its own Host on, a DNS name for
  the machine), exactly or, as `*.example.com`, every name under a domain;
- with `--listen-all`, the node's configured addresses (`--advertise`, `--bind-ip`) and this machine's
  interface addresses and hostname, re-read when a Host misses (a new DHCP lease, a VPN coming up).

Anything else gets 421 Misdirected Request, in the caller's API shape. A request without a Host
(HTTP/1.0) is let through: browsers always send one, so it cannot be a rebinding page.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus

import ifaddr
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.errors import OpenAIError, dialect_of_path
from services.mesh.addresses import split_address
from services.node.config import NodeConfig

LOCALHOST = "localhost"
LOCALHOST_SUFFIX = ".localhost"
MDNS_SUFFIX = ".local"
WILDCARD_PREFIX = "*."
# A Host that misses re-reads this machine's addresses, but no more often than this.
MACHINE_HOSTS_REFRESH_S = 30.0
HOST_NOT_ALLOWED_STATUS = HTTPStatus.MISDIRECTED_REQUEST
MAX_PORT_DIGITS = 5
MAX_HOST_SHOWN_CHARS = 100  # of a refused Host, in the error message
# A DNS name as a Host may spell it (RFC 3986 reg-name, minus the percent-encoding nobody uses).
_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def host_name(header: str) -> str | None:
    """The name or address a Host header gives (lower case, no port, IPs in canonical form), or None
    when it is not a valid Host at all."""
    text = header.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        name, rest = (text[1:end], text[end + 1 :]) if end > 0 else ("", "")
        if not _is_ip(name):
            return None
    elif text.count(":") > 1:  # a bare IPv6 address, as some clients send it
        name, rest = text, ""
        if not _is_ip(name):
            return None
    else:
        name, colon, port = text.partition(":")
        rest = colon + port
        name = name.removesuffix(".")  # "localhost." is "localhost"
        if not _NAME.fullmatch(name):
            return None
    if rest and not (rest[0] == ":" and rest[1:].isdigit() and len(rest) <= MAX_PORT_DIGITS + 1):
        return None
    return canonical_host(name)


def host_pattern(text: str) -> str | None:
    """An --allow-host value as HostAllowList compares it (a name, an IP, or `*.domain`), or None
    when it is none of those."""
    wildcard = text.startswith(WILDCARD_PREFIX)
    name = host_name(text.removeprefix(WILDCARD_PREFIX) if wildcard else text)
    if name is None or (wildcard and (_is_ip(name) or "." not in name)):
        return None  # `*.com` would let a rebinding page in from anywhere under a TLD
    return WILDCARD_PREFIX + name if wildcard else name


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def canonical_host(name: str) -> str:
    """How a host is compared: IPs in their canonical form (IPv4-mapped IPv6 as IPv4), names lower case."""
    try:
        ip = ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        return name.lower().removesuffix(".")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def is_loopback_name(name: str) -> bool:
    """`name` (from host_name) can only mean this machine: localhost, *.localhost, a loopback IP."""
    if name == LOCALHOST or name.endswith(LOCALHOST_SUFFIX):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback_host_header(header: str | None) -> bool:
    """The Host header names this machine by a loopback name (where the invite token may be shown)."""
    name = host_name(header) if header is not None else None
    return name is not None and is_loopback_name(name)


def machine_hosts() -> frozenset[str]:
    """This machine's interface addresses (IPv4 and IPv6) and its hostname (also as NAME.local)."""
    hosts: set[str] = set()
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            hosts.add(canonical_host(address))
    hostname = socket.gethostname().lower()
    if hostname:
        short = hostname.split(".")[0]
        hosts.update({hostname, short, short + MDNS_SUFFIX})
    return frozenset(hosts)


def configured_hosts(config: NodeConfig) -> frozenset[str]:
    """The hosts the user named for this node: `--allow-host`, `--advertise HOST:PORT`, `--bind-ip`."""
    hosts = set(config.allowed_hosts)
    hosts.update(canonical_host(split_address(address)[0]) for address in config.advertise)
    if config.bind_ip:
        hosts.add(canonical_host(config.bind_ip))
    return frozenset(hosts)


class HostAllowList:
    """The Hosts this node answers: loopback names, plus `configured` and (when `read_machine_hosts`
    is given: --listen-all) this machine's own, re-read at most every MACHINE_HOSTS_REFRESH_S on a miss."""

    def __init__(
        self,
        configured: Iterable[str] = (),
        read_machine_hosts: Callable[[], frozenset[str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        configured = tuple(configured)
        names = [host for host in configured if not host.startswith(WILDCARD_PREFIX)]
        self._configured = frozenset(canonical_host(host) for host in names)
        # "*.example.com" → ".example.com": every name that ends with it (not example.com itself)
        self._domains = tuple(host[1:] for host in configured if host.startswith(WILDCARD_PREFIX))
        self._read_machine_hosts = read_machine_hosts
        self._clock = clock
        self._machine: frozenset[str] = frozenset()
        self._read_at: float | None = None
        self._refresh = asyncio.Lock()

    @classmethod
    def for_config(cls, config: NodeConfig) -> HostAllowList:
        if not config.listen_all:
            # Bound to 127.0.0.1: loopback names, and those of a reverse proxy on this machine.
            return cls(config.allowed_hosts)
        return cls(configured_hosts(config), machine_hosts)

    def known(self, name: str) -> bool:
        return (
            is_loopback_name(name)
            or name in self._configured
            or name in self._machine
            or any(name.endswith(domain) for domain in self._domains)
        )

    async def allows(self, header: str | None) -> bool:
        if header is None:
            return True
        name = host_name(header)
        if name is None:
            return False
        if self.known(name):
            return True
        if self._read_machine_hosts is None:
            return False
        async with self._refresh:
            stale = self._read_at is None or self._clock() - self._read_at >= MACHINE_HOSTS_REFRESH_S
            if stale and not self.known(name):
                self._machine = await asyncio.to_thread(self._read_machine_hosts)
                self._read_at = self._clock()
        return self.known(name)


def header_of(scope: Scope, name: bytes) -> str | None:
    """The first header `name` (lower case) of an ASGI request, decoded as Latin-1 like HTTP says."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def host_refusal(header: str) -> OpenAIError:
    shown = header if len(header) <= MAX_HOST_SHOWN_CHARS else header[:MAX_HOST_SHOWN_CHARS] + "…"
    return OpenAIError(
        HOST_NOT_ALLOWED_STATUS,
        f"Host {shown!r} does not name this node: it answers requests for localhost, and with --listen-all "
        "for this machine's addresses and hostname, and for names given with --allow-host (a guard against "
        "DNS rebinding).",
        code="host_not_allowed",
    )


class HostGuard:
    """ASGI middleware: requests whose Host is not in `hosts` get 421 and never reach `app`."""

    def __init__(self, app: ASGIApp, hosts: HostAllowList) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = header_of(scope, b"host")
            if not await self.hosts.allows(header):
                assert header is not None  # a missing Host is allowed
                response = host_refusal(header).response(dialect_of_path(scope["path"]))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
