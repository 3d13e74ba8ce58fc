"""The RPC fast path's admission (services/mesh/fast_path.py), over real TLS sockets on loopback.

Only a host holding a live ticket that the worker handed out over the admitted QUIC link gets a
connection, and the host only talks to the node whose identity key it expects.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.mesh import fast_path
from services.mesh.fast_path import FastPathError, FastPathListener, connect
from services.mesh.identity import NodeIdentity

pytestmark = pytest.mark.integration


def identity() -> NodeIdentity:
    return NodeIdentity(Ed25519PrivateKey.generate())


async def started(tmp_path: Path, who: NodeIdentity) -> FastPathListener:
    listener = FastPathListener(who, tmp_path)
    await listener.start("127.0.0.1", 0)
    return listener


async def test_a_live_ticket_connects_and_bytes_flow_both_ways(tmp_path: Path) -> None:
    worker = identity()
    listener = await started(tmp_path, worker)
    try:
        ticket, accepted = listener.offer()
        host_reader, host_writer = await connect("127.0.0.1", listener.port, worker.public_bytes, ticket)
        worker_reader, worker_writer = await asyncio.wait_for(accepted, 5)
        host_writer.write(b"request")
        assert await worker_reader.readexactly(7) == b"request"
        worker_writer.write(b"reply")
        assert await host_reader.readexactly(5) == b"reply"
        host_writer.close()
        worker_writer.close()
    finally:
        listener.close()


async def test_a_ticket_works_once(tmp_path: Path) -> None:
    worker = identity()
    listener = await started(tmp_path, worker)
    try:
        ticket, accepted = listener.offer()
        first = await connect("127.0.0.1", listener.port, worker.public_bytes, ticket)
        await asyncio.wait_for(accepted, 5)
        reader, _ = await connect("127.0.0.1", listener.port, worker.public_bytes, ticket)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed on us: the ticket was spent
        first[1].close()
    finally:
        listener.close()


async def test_a_made_up_ticket_is_refused(tmp_path: Path) -> None:
    worker = identity()
    listener = await started(tmp_path, worker)
    try:
        _, accepted = listener.offer()
        reader, _ = await connect("127.0.0.1", listener.port, worker.public_bytes, b"\x00" * 32)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert not accepted.done()
    finally:
        listener.close()


async def test_an_expired_ticket_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = identity()
    listener = await started(tmp_path, worker)
    monkeypatch.setattr(fast_path, "TICKET_TTL_S", 0.0)
    try:
        ticket, accepted = listener.offer()
        await asyncio.sleep(0.01)
        reader, _ = await connect("127.0.0.1", listener.port, worker.public_bytes, ticket)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert not (accepted.done() and not accepted.cancelled())
    finally:
        listener.close()


async def test_the_host_refuses_a_listener_with_another_nodes_key(tmp_path: Path) -> None:
    listener = await started(tmp_path, identity())
    try:
        ticket, _ = listener.offer()
        with pytest.raises(FastPathError, match="not the node"):
            await connect("127.0.0.1", listener.port, identity().public_bytes, ticket)
    finally:
        listener.close()


async def test_plain_tcp_without_tls_gets_nothing(tmp_path: Path) -> None:
    worker = identity()
    listener = await started(tmp_path, worker)
    try:
        ticket, accepted = listener.offer()
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(ticket)  # the right ticket, but not inside TLS
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError, ssl.SSLError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        assert not accepted.done()
    finally:
        listener.close()


async def test_the_key_file_is_private(tmp_path: Path) -> None:
    listener = await started(tmp_path, identity())
    listener.close()
    assert (tmp_path / "fast-path-key.pem").stat().st_mode & 0o077 == 0


async def test_a_pinned_node_dials_from_its_pinned_address(tmp_path: Path) -> None:
    """--bind-ip holds for the fast path too: the worker sees both kinds of connection (RPC's
    streams, file transfers' protocol) arrive from the host's pinned address, not the kernel's pick
    (127.0.0.1 for a loopback destination)."""
    worker = identity()
    listener = await started(tmp_path, worker)
    pinned = "127.0.0.2"
    try:
        ticket, accepted = listener.offer()
        _, host_writer = await connect("127.0.0.1", listener.port, worker.public_bytes, ticket, pinned)
        _, worker_writer = await asyncio.wait_for(accepted, 5)
        assert worker_writer.get_extra_info("peername")[0] == pinned
        host_writer.close()
        worker_writer.close()

        ticket, accepted = listener.offer()
        transport, _ = await fast_path.connect_protocol(
            "127.0.0.1", listener.port, worker.public_bytes, ticket, asyncio.Protocol, pinned
        )
        _, worker_writer = await asyncio.wait_for(accepted, 5)
        assert worker_writer.get_extra_info("peername")[0] == pinned
        transport.close()
        worker_writer.close()
    finally:
        listener.close()
