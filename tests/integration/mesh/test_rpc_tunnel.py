"""The RPC tunnel between two real mesh endpoints in one process, to a real ggml-rpc-server.

A "host" endpoint dials a "worker" endpoint over QUIC; a client speaking llama.cpp RPC (as
llama-server would) connects to the host's tunnel listener. The bytes must reach the worker's
rpc-server and its answers come back, over the TLS fast path when the worker's listener is
reachable and over the QUIC stream when it is not.
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.mesh.endpoint import MeshEndpoint
from services.mesh.fast_path import FastPathListener
from services.mesh.handshake import Credentials
from services.mesh.identity import NodeIdentity
from services.mesh.invite import InviteToken
from services.mesh.link import PeerLink
from services.mesh.rpc_armed import ARMED_PER_WORKER
from services.mesh.rpc_messages import HelloResponse
from services.mesh.rpc_protocol import RESPONSE_PREFIX, RPC_CONN_CAPS_BYTES, RpcCommand, encode_request
from services.mesh.rpc_tunnel import LocalRpcServer, RpcTunnels
from services.mesh.tunnels import TunnelListeners
from services.proto.meshllm.mesh.v1 import wire_pb2
from tests.support.node import accepts, free_port, wait_until

pytestmark = pytest.mark.integration

MODEL = "tiny-tunnel"
HELLO_CAPS = bytes(RPC_CONN_CAPS_BYTES)  # the client's transport caps: none (plain TCP)
HELLO_REPLY_BYTES = RESPONSE_PREFIX.size + len(HelloResponse().encode())


@dataclass
class Pair:
    host: MeshEndpoint
    worker: MeshEndpoint
    host_rpc: RpcTunnels
    worker_rpc: RpcTunnels
    listeners: TunnelListeners
    link: PeerLink


async def ignore(*_: object) -> None:
    return None


def endpoint(token: InviteToken, name: str, handlers: dict) -> MeshEndpoint:  # type: ignore[type-arg]
    identity = NodeIdentity(Ed25519PrivateKey.generate())
    credentials = Credentials(identity, token.mesh_id, token.secret, name, (), False)
    return MeshEndpoint(credentials, handlers, ignore, lambda: None)


@pytest.fixture
def rpc_server(llama_bin_dir: Path, tmp_path: Path) -> int:
    port = free_port()
    command = [str(llama_bin_dir / "ggml-rpc-server"), "-H", "127.0.0.1", "-p", str(port), "-t", "1"]
    with (tmp_path / "rpc-server.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: accepts(port), 30, "rpc-server to listen")
    yield port
    process.kill()
    process.wait(10)


async def make_pair(tmp_path: Path, rpc_port: int, model: Path, fast_path_open: bool) -> Pair:
    token = InviteToken.new_mesh()
    worker_identity_dir = tmp_path / "worker-run"
    worker_identity_dir.mkdir()
    worker_rpc = RpcTunnels(None)
    worker = endpoint(token, "worker", {wire_pb2.STREAM_KIND_RPC: lambda *a: worker_rpc.serve_stream(*a)})
    listener = FastPathListener(worker.credentials.identity, worker_identity_dir)
    worker_rpc.fast_path = listener
    worker_port = await worker.listen("127.0.0.1", 0)
    await listener.start("127.0.0.1", worker_port)
    if not fast_path_open:
        listener._server.close()  # type: ignore[union-attr]  # offers still name the now-dead port
        await listener._server.wait_closed()  # type: ignore[union-attr]
    host_rpc = RpcTunnels(None)
    host = endpoint(token, "host", {})
    worker_rpc.local_servers[MODEL] = LocalRpcServer(rpc_port, str(model), host.node_id)
    listeners = TunnelListeners(host.current_link, host_rpc.carry_from_llama_server)
    link = await host.dial(f"127.0.0.1:{worker_port}")
    return Pair(host, worker, host_rpc, worker_rpc, listeners, link)


@pytest.fixture(params=[True, False], ids=["tls-fast-path", "quic-fallback"])
async def pair(
    request: pytest.FixtureRequest, tmp_path: Path, rpc_server: int, tiny_gguf: Path
) -> AsyncIterator[Pair]:
    made = await make_pair(tmp_path, rpc_server, tiny_gguf, fast_path_open=request.param)
    yield made
    made.listeners.close()
    await made.host.close()
    await made.worker.close()


async def hello_through(pair: Pair, model_path: Path) -> HelloResponse:
    port = await pair.listeners.listener_for(
        pair.link.node_id, wire_pb2.STREAM_KIND_RPC, MODEL, str(model_path)
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_request(RpcCommand.HELLO, HELLO_CAPS))
    size = RESPONSE_PREFIX.unpack(await asyncio.wait_for(reader.readexactly(RESPONSE_PREFIX.size), 10))[0]
    hello = HelloResponse.decode(await reader.readexactly(size))
    writer.close()
    return hello


async def ask(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, command: RpcCommand, payload: bytes
) -> bytes:
    writer.write(encode_request(command, payload))
    size = RESPONSE_PREFIX.unpack(await asyncio.wait_for(reader.readexactly(RESPONSE_PREFIX.size), 10))[0]
    return await asyncio.wait_for(reader.readexactly(size), 10)


STATIC_QUERIES = [
    (RpcCommand.HELLO, HELLO_CAPS),
    (RpcCommand.DEVICE_COUNT, b""),
    (RpcCommand.GET_ALIGNMENT, struct.pack("<I", 0)),
    (RpcCommand.GET_MAX_SIZE, struct.pack("<I", 0)),
    (RpcCommand.GET_DEVICE_MEMORY, struct.pack("<I", 0)),
]
ALLOC_64 = struct.pack("<IQ", 0, 64)


async def alloc_through(pair: Pair, model_path: Path) -> tuple[int, int]:
    """HELLO, then ALLOC_BUFFER of 64 bytes: something only the worker's rpc-server can answer."""
    port = await pair.listeners.listener_for(
        pair.link.node_id, wire_pb2.STREAM_KIND_RPC, MODEL, str(model_path)
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert HelloResponse.decode(await ask(reader, writer, RpcCommand.HELLO, HELLO_CAPS)).compatible
    pointer, size = struct.unpack("<QQ", await ask(reader, writer, RpcCommand.ALLOC_BUFFER, ALLOC_64))
    writer.close()
    return pointer, size


async def test_the_host_answers_static_queries_the_worker_s_rpc_server_answered_before(
    pair: Pair, tiny_gguf: Path
) -> None:
    """llama-server opens a dozen connections per load that only ask these: at 20 ms RTT each cost
    two round trips. The second time, the host answers them, with the rpc-server's own answers."""
    port = await pair.listeners.listener_for(
        pair.link.node_id, wire_pb2.STREAM_KIND_RPC, MODEL, str(tiny_gguf)
    )
    answers = []
    for _ in range(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers.append([await ask(reader, writer, command, payload) for command, payload in STATIC_QUERIES])
        writer.close()
    assert answers[0] == answers[1]
    assert struct.unpack("<I", answers[0][1]) == (1,)  # one CPU device
    deadline = asyncio.get_running_loop().time() + 10
    while not pair.host_rpc.stats()[0].connections_answered_here:  # counted once the close arrives
        assert asyncio.get_running_loop().time() < deadline, "the answered connection never ended"
        await asyncio.sleep(0.01)
    [host_side] = pair.host_rpc.stats()
    assert (host_side.connections, host_side.connections_answered_here) == (2, 1)
    assert host_side.requests == host_side.requests_answered_here == len(STATIC_QUERIES)
    assert [t.connections for t in pair.worker_rpc.stats()] == [1]
    # A connection answered here goes to the worker at its first other request, its HELLO first
    # (rpc-server refuses a connection that starts with anything else).
    pointer, size = await alloc_through(pair, tiny_gguf)
    assert pointer != 0 and size >= 64
    [host_side] = pair.host_rpc.stats()
    assert (host_side.requests, host_side.requests_answered_here) == (
        len(STATIC_QUERIES) + 2,
        len(STATIC_QUERIES) + 1,
    )
    assert [t.connections for t in pair.worker_rpc.stats()] == [2]


async def test_llama_cpp_rpc_reaches_the_workers_rpc_server_and_answers_come_back(
    pair: Pair, tiny_gguf: Path
) -> None:
    hello = await hello_through(pair, tiny_gguf)
    assert hello.compatible
    [host_side] = pair.host_rpc.stats()
    assert host_side.connections == 1 and host_side.requests == 1
    assert host_side.bytes_from_peer == HELLO_REPLY_BYTES
    [worker_side] = pair.worker_rpc.stats()
    assert worker_side.bytes_from_peer == host_side.bytes_to_peer
    fast = pair.worker_rpc.fast_path is not None and pair.worker_rpc.fast_path._server.is_serving()  # type: ignore[union-attr]
    assert host_side.fast_path_connections == (1 if fast else 0)


async def test_a_model_the_worker_does_not_run_closes_the_connection(pair: Pair, tiny_gguf: Path) -> None:
    pair.worker_rpc.local_servers.clear()
    port = await pair.listeners.listener_for(
        pair.link.node_id, wire_pb2.STREAM_KIND_RPC, MODEL, str(tiny_gguf)
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_request(RpcCommand.HELLO, HELLO_CAPS))
    assert await asyncio.wait_for(reader.read(), 10) == b""  # llama-server sees a dead endpoint, not a hang
    writer.close()


async def test_only_the_split_host_the_rpc_server_works_for_gets_through(pair: Pair, tiny_gguf: Path) -> None:
    """Another admitted member must not reach (or tie up: it serves one client) the worker's rpc-server."""
    pair.worker_rpc.local_servers[MODEL] = LocalRpcServer(
        pair.worker_rpc.local_servers[MODEL].port, str(tiny_gguf), "f" * 32
    )
    port = await pair.listeners.listener_for(
        pair.link.node_id, wire_pb2.STREAM_KIND_RPC, MODEL, str(tiny_gguf)
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_request(RpcCommand.HELLO, HELLO_CAPS))
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    assert not [t for t in pair.worker_rpc.stats() if t.connections]


async def test_the_peer_going_away_cuts_its_tunnels(pair: Pair, tiny_gguf: Path) -> None:
    port = await pair.listeners.listener_for(
        pair.link.node_id, wire_pb2.STREAM_KIND_RPC, MODEL, str(tiny_gguf)
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_request(RpcCommand.HELLO, HELLO_CAPS))
    await asyncio.wait_for(reader.readexactly(HELLO_REPLY_BYTES), 10)
    await pair.worker.close()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


@pytest.fixture(params=[True, False], ids=["tls-fast-path", "quic-fallback"])
async def armed_pair(
    request: pytest.FixtureRequest, tmp_path: Path, rpc_server: int, tiny_gguf: Path
) -> AsyncIterator[Pair]:
    """A pair whose host arms paths as soon as its tunnel listener exists (as services/mesh/app.py)."""
    made = await make_pair(tmp_path, rpc_server, tiny_gguf, fast_path_open=request.param)
    made.listeners = TunnelListeners(
        made.host.current_link, made.host_rpc.carry_from_llama_server, None, made.host_rpc.arm
    )
    yield made
    made.listeners.close()
    made.host_rpc.armed.close()
    await made.host.close()
    await made.worker.close()


async def wait_armed(pair: Pair, count: int) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while pair.host_rpc.armed.ready(pair.link.node_id, MODEL) != count:
        assert asyncio.get_running_loop().time() < deadline, "paths were not armed"
        await asyncio.sleep(0.01)


async def test_a_listener_arms_paths_that_llama_server_connections_then_take(
    armed_pair: Pair, tiny_gguf: Path
) -> None:
    """Set up ahead, a path costs a connection no round trip of its own; idle armed paths must not
    take the worker's single-client rpc-server, or the connection that uses one would hang."""
    await armed_pair.listeners.listener_for(
        armed_pair.link.node_id, wire_pb2.STREAM_KIND_RPC, MODEL, str(tiny_gguf)
    )
    await wait_armed(armed_pair, ARMED_PER_WORKER)
    for _ in range(ARMED_PER_WORKER + 1):  # one more than were armed: the pool refills behind each
        assert (await alloc_through(armed_pair, tiny_gguf))[0] != 0
    await wait_armed(armed_pair, ARMED_PER_WORKER)
    [host_side] = armed_pair.host_rpc.stats()
    [worker_side] = armed_pair.worker_rpc.stats()
    assert host_side.connections == worker_side.connections == ARMED_PER_WORKER + 1  # idle ones uncounted
    fast = armed_pair.worker_rpc.fast_path._server.is_serving()  # type: ignore[union-attr]
    assert host_side.fast_path_connections == (ARMED_PER_WORKER + 1 if fast else 0)


async def test_idle_armed_paths_are_replaced_and_a_reassigned_rpc_server_refuses_them(
    armed_pair: Pair, tiny_gguf: Path
) -> None:
    armed_pair.host_rpc.armed._idle_s = 0.2
    await armed_pair.listeners.listener_for(
        armed_pair.link.node_id, wire_pb2.STREAM_KIND_RPC, MODEL, str(tiny_gguf)
    )
    await wait_armed(armed_pair, ARMED_PER_WORKER)
    key = (armed_pair.link.node_id, MODEL)
    first = set(armed_pair.host_rpc.armed._ready[key])
    deadline = asyncio.get_running_loop().time() + 10
    while first & set(armed_pair.host_rpc.armed._ready[key]):  # past the idle limit: closed, armed again
        assert asyncio.get_running_loop().time() < deadline, "idle paths were kept"
        await asyncio.sleep(0.01)
    assert all(path.pair[1].is_closing() for path in first)
    await wait_armed(armed_pair, ARMED_PER_WORKER)
    assert (await hello_through(armed_pair, tiny_gguf)).compatible
    # The rpc-server now works for another host: paths armed for this one get nothing through.
    await wait_armed(armed_pair, ARMED_PER_WORKER)
    server = armed_pair.worker_rpc.local_servers[MODEL]
    armed_pair.worker_rpc.local_servers[MODEL] = LocalRpcServer(server.port, str(tiny_gguf), "f" * 32)
    port = await armed_pair.listeners.listener_for(
        armed_pair.link.node_id, wire_pb2.STREAM_KIND_RPC, MODEL, str(tiny_gguf)
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_request(RpcCommand.HELLO, HELLO_CAPS))
    writer.write(encode_request(RpcCommand.ALLOC_BUFFER, ALLOC_64))
    # The host answers the HELLO it knows; the buffer request reaches the worker, which refuses it.
    hello = await asyncio.wait_for(reader.readexactly(HELLO_REPLY_BYTES), 10)
    assert HelloResponse.decode(hello[RESPONSE_PREFIX.size :]).compatible
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_paths_armed_for_an_rpc_server_that_restarted_are_closed_and_its_answers_forgotten(
    armed_pair: Pair, tiny_gguf: Path
) -> None:
    """The host answers llama-server for one rpc-server process only: a new one (another pid) may
    be another build or device, so paths offered for the old one close, and answers start over."""
    await armed_pair.listeners.listener_for(
        armed_pair.link.node_id, wire_pb2.STREAM_KIND_RPC, MODEL, str(tiny_gguf)
    )
    await wait_armed(armed_pair, ARMED_PER_WORKER)
    assert (await alloc_through(armed_pair, tiny_gguf))[0] != 0
    await wait_armed(armed_pair, ARMED_PER_WORKER)
    key = (armed_pair.link.node_id, MODEL)
    old = list(armed_pair.host_rpc.armed._ready[key])
    server = armed_pair.worker_rpc.local_servers[MODEL]
    restarted = LocalRpcServer(server.port, server.model_path, server.host_node_id, server.pid + 1)
    armed_pair.worker_rpc.local_servers = {MODEL: restarted}
    deadline = asyncio.get_running_loop().time() + 10
    while any(path.usable() for path in old):
        assert asyncio.get_running_loop().time() < deadline, "the worker kept paths for the old rpc-server"
        await asyncio.sleep(0.01)
    # The next connection finds out on its path: a HELLO answered from the old book is checked
    # against the new rpc-server's (the same here), anything more would have dropped it.
    assert (await alloc_through(armed_pair, tiny_gguf))[0] != 0
    book = armed_pair.host_rpc._books[key]
    assert book.instance == restarted.instance and len(book) == 1  # the new one's HELLO only
