"""Who may use the API: the key (`--api-key`), this machine only, or anyone (`--no-api-key`).

- With a key, every request on :9337 and on the console's `/v1` needs it, as `Authorization: Bearer
  KEY` (what the OpenAI SDKs send) or `x-api-key: KEY` (the Anthropic SDKs); compared in constant time.
- Without one, the API answers this machine (loopback clients) only: with `--listen-all` another
  machine gets a 401 saying how to set a key, unless the user opened it with `--no-api-key`.
- `/health` is always open. Refusals are 401s in the caller's API shape (OpenAI's `invalid_api_key`,
  Anthropic's `authentication_error` on /v1/messages).

The console's own chat (a `fetch` to `/v1/chat/completions` on the console's origin) cannot know the
key. The console page, when served to a loopback client under a loopback Host (where the invite
token is shown too), sets a session cookie: an HMAC of the key, so it is stable across gateway
restarts and reveals nothing of the key; HttpOnly, SameSite=Strict, Path=/v1. Only the console's
`/v1` accepts it, and only from a loopback client, under a loopback Host, same-origin (Origin, when
sent, is the console's own). :9337 never does.

Requests peers forward through the mesh never come here: they enter on the mesh ingress socket
(services/gateway/mesh_ingress.py), authenticated by the mesh. The forwarded mark is dropped from
requests on the TCP ports, so it cannot be used to skip the key.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import logging
from dataclasses import dataclass
from http import HTTPStatus

from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.errors import OpenAIError, dialect_of_path
from services.gateway.host_check import header_of, is_loopback_host_header
from services.gateway.remote import FORWARDED_HEADER
from services.node.config import ConfigError, NodeConfig, read_api_key

AUTHORIZATION_HEADER = b"authorization"
X_API_KEY_HEADER = b"x-api-key"
BEARER_SCHEME = "bearer"
OPEN_PATHS = frozenset({"/health"})
INVALID_API_KEY = "invalid_api_key"
UNAUTHORIZED_HEADERS = {"www-authenticate": 'Bearer realm="mesh-llm"'}
CONSOLE_SESSION_PREFIX = "mesh_llm_console_"
CONSOLE_SESSION_CONTEXT = b"mesh-llm console session v1"
# Cookie names differ per key, so two nodes with different keys on one machine (cookies ignore
# ports) keep their own; this many hex digits of the session name it.
CONSOLE_SESSION_NAME_HEX = 12
# What browsers send as Sec-Fetch-Site for the console page's own fetches (or a typed-in URL).
SAME_ORIGIN_FETCH_SITES = frozenset({"same-origin", "none"})
_FORWARDED_HEADER_BYTES = FORWARDED_HEADER.encode()

_logger = logging.getLogger("gateway.api_key")


class AccessMode(enum.Enum):
    KEY = "key"  # every request needs the key
    LOCAL_ONLY = "local_only"  # no key: this machine only
    OPEN = "open"  # no key, --no-api-key: whoever reaches the port


@dataclass(frozen=True)
class ConsoleSession:
    """The cookie that lets the console page's chat use `/v1` on the console port without the key."""

    name: str
    value: str

    @classmethod
    def for_key(cls, key: str) -> ConsoleSession:
        value = hmac.new(key.encode(), CONSOLE_SESSION_CONTEXT, hashlib.sha256).hexdigest()
        return cls(CONSOLE_SESSION_PREFIX + value[:CONSOLE_SESSION_NAME_HEX], value)

    def presented_in(self, cookie_header: str | None) -> bool:
        for part in (cookie_header or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.name:
                return keys_equal(value, self.value)
        return False


def keys_equal(presented: str, expected: str) -> bool:
    """Constant time, whatever the lengths: the digests are compared, not the keys."""
    return hmac.compare_digest(
        hashlib.sha256(presented.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request carries: `Authorization: Bearer KEY` first, then `x-api-key: KEY`."""
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == BEARER_SCHEME and credentials.strip():
            return credentials.strip()
    if x_api_key is not None and x_api_key.strip():
        return x_api_key.strip()
    return None


def is_loopback_client(host: str | None) -> bool:
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _refusal(message: str) -> OpenAIError:
    return OpenAIError(HTTPStatus.UNAUTHORIZED, message, code=INVALID_API_KEY, headers=UNAUTHORIZED_HEADERS)


MISSING_KEY = (
    "This node's API needs its API key: send `Authorization: Bearer KEY` or `x-api-key: KEY` "
    "(KEY: what the node was started with, --api-key)."
)
WRONG_KEY = "Incorrect API key provided: this node was started with another --api-key."
LOCAL_ONLY = (
    "This node's API answers its own machine only. To use it from other machines, start the node with "
    "--api-key KEY (clients then send `Authorization: Bearer KEY`), or with --no-api-key to open it "
    "to the network."
)


@dataclass(frozen=True)
class ApiAccess:
    """The rule for one node. `unreadable` set: the node wants a key it cannot read, and refuses all."""

    key: str | None = None
    open_to_network: bool = False
    unreadable: str = ""

    @classmethod
    def from_config(cls, config: NodeConfig) -> ApiAccess:
        if not config.require_api_key:
            return cls(open_to_network=config.no_api_key)
        try:
            key = read_api_key(config.home)
        except ConfigError as exc:
            reason = str(exc)
        else:
            if key is not None:
                return cls(key=key)
            reason = "the key file is missing"
        # Fail closed: started with --api-key, so the API must not open up because a file went away.
        _logger.error("the API key cannot be read (%s): every API request is refused", reason)
        return cls(unreadable=reason)

    @property
    def mode(self) -> AccessMode:
        if self.key is not None or self.unreadable:
            return AccessMode.KEY
        return AccessMode.OPEN if self.open_to_network else AccessMode.LOCAL_ONLY

    @property
    def console_session(self) -> ConsoleSession | None:
        return ConsoleSession.for_key(self.key) if self.key is not None else None

    def refusal(
        self, path: str, presented: str | None, client_host: str | None, console_session: bool = False
    ) -> OpenAIError | None:
        """Why this request may not go on (None: it may). `console_session`: it carries a valid one."""
        if path in OPEN_PATHS:
            return None
        if self.unreadable:
            return _refusal(f"This node's API key cannot be read ({self.unreadable}); restart the node.")
        if self.key is not None:
            if presented is not None:
                return None if keys_equal(presented, self.key) else _refusal(WRONG_KEY)
            return None if console_session else _refusal(MISSING_KEY)
        if self.open_to_network or is_loopback_client(client_host):
            return None
        return _refusal(LOCAL_ONLY)


def is_local_viewer(scope: Scope) -> bool:
    """A browser on this machine that opened the console by a loopback name (not a rebinding page)."""
    client = scope.get("client")
    return is_loopback_client(client[0] if client else None) and is_loopback_host_header(
        header_of(scope, b"host")
    )


def _same_origin(scope: Scope) -> bool:
    origin, host = header_of(scope, b"origin"), header_of(scope, b"host")
    site = header_of(scope, b"sec-fetch-site")
    same_origin = origin is None or origin == f"http://{host}"
    return same_origin and (site is None or site in SAME_ORIGIN_FETCH_SITES)


def _without_forwarded_mark(scope: Scope) -> Scope:
    headers = scope["headers"]
    if not any(key == _FORWARDED_HEADER_BYTES for key, _ in headers):
        return scope
    return {**scope, "headers": [(key, value) for key, value in headers if key != _FORWARDED_HEADER_BYTES]}


class ApiKeyGuard:
    """ASGI middleware in front of the API app on a TCP port. `console`: the console's `/v1`, which
    also takes the console session cookie."""

    def __init__(self, app: ASGIApp, access: ApiAccess, console: bool = False) -> None:
        self.app = app
        self.access = access
        self.session = access.console_session if console else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        presented = presented_key(header_of(scope, AUTHORIZATION_HEADER), header_of(scope, X_API_KEY_HEADER))
        client = scope.get("client")
        refusal = self.access.refusal(
            scope["path"], presented, client[0] if client else None, self._console_session(scope)
        )
        if refusal is not None:
            await refusal.response(dialect_of_path(scope["path"]))(scope, receive, send)
            return
        await self.app(_without_forwarded_mark(scope), receive, send)

    def _console_session(self, scope: Scope) -> bool:
        if self.session is None or not self.session.presented_in(header_of(scope, b"cookie")):
            return False
        return is_local_viewer(scope) and _same_origin(scope)
