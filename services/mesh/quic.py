"""aioquic plumbing: TLS config from the node identity, and a protocol that reports streams and resets."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import ssl
from collections.abc import AsyncIterator, Callable

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from services.mesh.identity import NodeIdentity

ALPN = "mesh-llm/1"
QUIC_IDLE_TIMEOUT_S = 5.0
# Tunnels carry prompt uploads and token streams: open the windows well past aioquic's defaults.
MAX_CONNECTION_DATA_BYTES = 16 * 1024 * 1024
MAX_STREAM_DATA_BYTES = 4 * 1024 * 1024


def self_signed_certificate(identity: NodeIdentity) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.node_id)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(identity.public_key)
        .serial_number(1)
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC))
        .sign(identity.private_key, None)
    )


def quic_configuration(identity: NodeIdentity, is_client: bool) -> QuicConfiguration:
    configuration = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[ALPN],
        idle_timeout=QUIC_IDLE_TIMEOUT_S,
        max_data=MAX_CONNECTION_DATA_BYTES,
        max_stream_data=MAX_STREAM_DATA_BYTES,
        # Certificates are self-signed node keys: admission checks the key, not a CA chain.
        verify_mode=ssl.CERT_NONE,
    )
    if not is_client:
        configuration.certificate = self_signed_certificate(identity)
        configuration.private_key = identity.private_key
    return configuration


def peer_certificate_key(protocol: QuicConnectionProtocol) -> bytes | None:
    """The raw Ed25519 key the listener's TLS certificate carries (what the dialer checks)."""
    certificate = getattr(protocol._quic.tls, "_peer_certificate", None)
    if certificate is None:
        return None
    return certificate.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _dialer_socket(local_host: str) -> socket.socket:
    """A UDP socket bound to `local_host` on a free port; "" (no --bind-ip): aioquic's own choice,
    dual-stack on every interface, so one socket reaches IPv4 and IPv6 peers alike."""
    family = socket.AF_INET6 if not local_host or ":" in local_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if local_host:
            sock.bind((local_host, 0))
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", 0, 0, 0))
    except BaseException:
        sock.close()
        raise
    return sock


async def _peer_address(host: str, port: int, local_host: str) -> NetworkAddress:
    """Where to send: an IPv4 peer as ::ffff:a.b.c.d on a dual-stack socket, as itself on an IPv4 one
    (a peer of the other family than --bind-ip is unreachable: socket.gaierror, an OSError)."""
    loop = asyncio.get_running_loop()
    family = (socket.AF_INET6 if ":" in local_host else socket.AF_INET) if local_host else socket.AF_UNSPEC
    infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
    address: NetworkAddress = infos[0][4]
    if not local_host and len(address) == 2:
        address = ("::ffff:" + address[0], address[1], 0, 0)
    return address


@contextlib.asynccontextmanager
async def quic_connect(
    host: str,
    port: int,
    configuration: QuicConfiguration,
    create_protocol: Callable[[QuicConnection], QuicConnectionProtocol],
    local_host: str = "",
) -> AsyncIterator[QuicConnectionProtocol]:
    """aioquic's `connect()`, from `local_host` (the mesh's --bind-ip): aioquic's own always binds
    `::`, so a pinned mesh's packets would leave from whatever source address the kernel picks."""
    address = await _peer_address(host, port, local_host)
    if configuration.server_name is None:
        configuration.server_name = host
    sock = _dialer_socket(local_host)
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: create_protocol(QuicConnection(configuration=configuration)), sock=sock
        )
    except BaseException:
        sock.close()
        raise
    assert isinstance(protocol, QuicConnectionProtocol), "create_protocol makes QUIC protocols"
    try:
        protocol.connect(address)
        await protocol.wait_connected()
        yield protocol
    finally:
        protocol.close()
        await protocol.wait_closed()
        transport.close()


def _retrieve_outcome(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class MeshQuicProtocol(QuicConnectionProtocol):
    """Reports new streams with their connection, and turns resets and connection loss into errors.

    Stock aioquic never wakes a reader on a reset stream; a tunnel must see it to end its request.
    """

    def __init__(
        self,
        *args,
        on_stream: Callable[[MeshQuicProtocol, asyncio.StreamReader, asyncio.StreamWriter], None],
        on_lost: Callable[[MeshQuicProtocol], None],
        **kwargs,
    ) -> None:  # type: ignore[no-untyped-def]
        kwargs["stream_handler"] = lambda reader, writer: on_stream(self, reader, writer)
        super().__init__(*args, **kwargs)
        self._on_lost = on_lost

    async def wait_connected(self) -> None:
        try:
            await super().wait_connected()
        finally:
            # Cancelled (a dial timeout, a losing attempt of a dial race): aioquic's shielded waiter
            # stays behind and gets ConnectionError when the connection ends, which nobody would
            # retrieve ("Future exception was never retrieved" in the log). Retrieve it here.
            waiter = self._connected_waiter
            if waiter is not None:
                waiter.add_done_callback(_retrieve_outcome)

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamReset):
            reader = self._stream_readers.get(event.stream_id)
            if reader is not None:
                reader.set_exception(ConnectionResetError("stream reset by peer"))
            return
        if isinstance(event, events.ConnectionTerminated):
            for reader in self._stream_readers.values():
                reader.set_exception(ConnectionResetError("peer connection lost"))
            self._on_lost(self)
            return
        super().quic_event_received(event)
