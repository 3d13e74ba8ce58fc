"""The RPC fast path: TLS over TCP between two mesh services, authenticated with node identities.

QUIC in Python costs milliseconds per 32 KB round trip (bench/remote_routing.py); split decode
makes one or two blocking round trips per token, so RPC bytes take a direct TLS-over-TCP
connection instead (DESIGN §2). Trust comes from the QUIC link that is already admitted: the
worker hands the host a one-use ticket over it, the host checks that the TLS certificate carries
the worker's node key and presents the ticket. Nobody else can present a ticket or pose as the
worker, and the bytes are encrypted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.mesh.addresses import split_address
from services.mesh.identity import NodeIdentity
from services.mesh.quic import self_signed_certificate
from services.node.home_files import write_home_file

if TYPE_CHECKING:
    from services.mesh.link import PeerLink

logger = logging.getLogger("mesh.fast_path")

TICKET_BYTES = 32
TICKET_TTL_S = 10.0
TICKET_READ_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 3.0
MAX_PENDING_TICKETS = 1024
EPHEMERAL_REDRAWS = 8
FAST_PATH_KEY_MODE = 0o600  # the node's private key

StreamPair = tuple[asyncio.StreamReader, asyncio.StreamWriter]
ProtocolT = TypeVar("ProtocolT", bound=asyncio.BaseProtocol)


class FastPathError(ConnectionError):
    """The TLS fast path could not be set up (the caller falls back to the QUIC stream)."""


def server_context(identity: NodeIdentity, run_dir: Path) -> ssl.SSLContext:
    """TLS 1.3 with the node's Ed25519 identity as certificate (ssl needs them as files: 0600)."""
    cert_path, key_path = run_dir / "fast-path-cert.pem", run_dir / "fast-path-key.pem"
    certificate = self_signed_certificate(identity)
    key_pem = identity.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_home_file(key_path, key_pem, FAST_PATH_KEY_MODE)
    write_home_file(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert_path, key_path)
    return context


def client_context() -> ssl.SSLContext:
    # No CA: the certificate is checked against the node key the admitted QUIC link proved.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def peer_key(writer: asyncio.StreamWriter | asyncio.BaseTransport) -> bytes | None:
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return None
    public = x509.load_der_x509_certificate(der).public_key()
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def no_delay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class FastPathListener:
    """The worker's TLS listener: a connection is kept only if its first bytes are a live ticket."""

    def __init__(self, identity: NodeIdentity, run_dir: Path) -> None:
        self._context = server_context(identity, run_dir)
        self._pending: dict[bytes, tuple[float, asyncio.Future[StreamPair]]] = {}
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, preferred_port: int, avoid: frozenset[int] = frozenset()) -> int:
        """Listen on `preferred_port` if free (the pinned QUIC port: one number to forward), else any.

        `avoid`: ports the node's other services are about to bind (the API and console start after
        the mesh): an ephemeral port the kernel hands us may be one of them, so draw again.
        """
        for port in [*dict.fromkeys((preferred_port, 0)), *[0] * EPHEMERAL_REDRAWS]:
            try:
                server = await asyncio.start_server(self._accept, host, port, ssl=self._context)
            except OSError:
                continue
            if int(server.sockets[0].getsockname()[1]) in avoid:
                server.close()
                continue
            self._server = server
            break
        if self._server is None:
            raise OSError(f"cannot listen for the RPC fast path on {host}")
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def offer(self) -> tuple[bytes, asyncio.Future[StreamPair]]:
        """A fresh ticket and the future its connection will resolve."""
        self._expire()
        if len(self._pending) >= MAX_PENDING_TICKETS:
            raise FastPathError("too many RPC connections waiting for their fast path")
        ticket = secrets.token_bytes(TICKET_BYTES)
        future: asyncio.Future[StreamPair] = asyncio.get_running_loop().create_future()
        self._pending[ticket] = (time.monotonic() + TICKET_TTL_S, future)
        return ticket, future

    def withdraw(self, ticket: bytes) -> None:
        entry = self._pending.pop(ticket, None)
        if entry is not None and not entry[1].done():
            entry[1].cancel()

    def _expire(self) -> None:
        now = time.monotonic()
        for ticket in [t for t, (deadline, _) in self._pending.items() if deadline < now]:
            self.withdraw(ticket)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            ticket = await asyncio.wait_for(reader.readexactly(TICKET_BYTES), TICKET_READ_TIMEOUT_S)
        except (asyncio.IncompleteReadError, TimeoutError, OSError, ssl.SSLError):
            writer.close()
            return
        entry = self._pending.pop(ticket, None)
        if entry is None or entry[1].done() or entry[0] < time.monotonic():
            logger.info("refused an RPC fast-path connection without a live ticket")
            writer.close()
            return
        no_delay(writer)
        entry[1].set_result((reader, writer))

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for ticket in list(self._pending):
            self.withdraw(ticket)


async def connect(
    host: str, port: int, expected_key: bytes, ticket: bytes, local_host: str = ""
) -> StreamPair:
    """The host's side: TLS to the worker, check its node key, present the ticket. `local_host`:
    the mesh's --bind-ip, the address to dial from (empty: the kernel's choice)."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=client_context(), local_addr=_local_addr(local_host)),
            CONNECT_TIMEOUT_S,
        )
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise FastPathError(f"cannot reach {host}:{port}: {exc or 'timed out'}") from exc
    if peer_key(writer) != expected_key:
        writer.close()
        raise FastPathError(f"{host}:{port} is not the node we were offered a ticket by")
    no_delay(writer)
    writer.write(ticket)
    return reader, writer


async def connect_protocol(
    host: str,
    port: int,
    expected_key: bytes,
    ticket: bytes,
    factory: Callable[[], ProtocolT],
    local_host: str = "",
) -> tuple[asyncio.Transport, ProtocolT]:
    """`connect`, with the connection's bytes going to a protocol of the caller's (a
    BufferedProtocol receives bulk bytes with no copy in Python) instead of a StreamReader."""
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await asyncio.wait_for(
            loop.create_connection(
                factory, host, port, ssl=client_context(), local_addr=_local_addr(local_host)
            ),
            CONNECT_TIMEOUT_S,
        )
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise FastPathError(f"cannot reach {host}:{port}: {exc or 'timed out'}") from exc
    if peer_key(transport) != expected_key:
        transport.close()
        raise FastPathError(f"{host}:{port} is not the node we were offered a ticket by")
    transport.write(ticket)
    return transport, protocol  # type: ignore[return-value]


def _local_addr(local_host: str) -> tuple[str, int] | None:
    return (local_host, 0) if local_host else None


def fast_path_target(link: PeerLink, tls_port: int, ticket: bytes) -> tuple[str, int] | None:
    """The peer's TLS listener: the host we reach its QUIC endpoint at, the port it offered. None
    for a relayed link (no direct route) or an offer without a ticket."""
    if link.is_relayed or not tls_port or not ticket:
        return None
    address = link.address if link.dialed_by == link.local_node_id else ""
    address = address or (link.peer.addresses[0] if link.peer.addresses else "")
    if not address:
        return None
    host, _ = split_address(address)
    return host, tls_port
