"""Hostile bytes on a real node's mesh port (DESIGN §3 "Streams"): anything malformed, oversized or
unknown resets that stream (a failed admission closes that connection; garbage on an admitted control
stream drops that peer), is counted and logged, and never crashes the node or disturbs other peers.

Node A serves a tiny model and B is a legitimate member. The attackers are in-process aioquic clients
on a background event loop: an outsider with no secret, and admitted members (real MeshEndpoints
holding A's invite secret) that then misbehave on data streams or on their control stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from aioquic.asyncio import connect
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.mesh.admission import make_hello
from services.mesh.endpoint import MeshEndpoint
from services.mesh.file_fetch import FileFetcher
from services.mesh.file_wire import (
    Reply,
    ReplyParser,
    chunk_request,
    manifest_from_proto,
    manifest_request,
    path_choice,
)
from services.mesh.frames import (
    LENGTH_PREFIX,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    FrameDecoder,
    FrameError,
    encode_frame,
    stream_open_frame,
)
from services.mesh.handshake import ADMISSION_TIMEOUT_S, Credentials
from services.mesh.identity import NodeIdentity
from services.mesh.incoming import STREAM_OPEN_TIMEOUT_S
from services.mesh.invite import InviteToken
from services.mesh.link import PeerLink
from services.mesh.quic import MeshQuicProtocol, quic_configuration
from services.proto.meshllm.gossip.v1 import gossip_pb2, gossip_pb2_grpc
from services.proto.meshllm.mesh.v1 import mesh_pb2, wire_pb2
from tests.support.node import RunningNode, free_port, wait_until
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.integration

EXAMPLES = 25
CONTROL_EXAMPLES = 12
STREAM_CLOSED_DEADLINE_S = 4.0  # reset or EOF on a refused stream; generous for a slow 2-core box
PEER_DROPPED_DEADLINE_S = 3.0  # under PEER_DEAD_AFTER_S: a drop for silence would not count
JOIN_TIMEOUT_S = 30.0
LOG_DEADLINE_S = 5.0
LOOP_CALL_TIMEOUT_S = 20.0
KEEPALIVE_INTERVAL_S = 1.0
STALL_DEADLINE_S = max(STREAM_OPEN_TIMEOUT_S, ADMISSION_TIMEOUT_S) + STREAM_CLOSED_DEADLINE_S
UNKNOWN_KINDS = (wire_pb2.STREAM_KIND_UNSPECIFIED, *range(6, 40), 2**31 - 1)

T = TypeVar("T")


class LoopThread:
    """An event loop in a thread: the attackers live here while the test body stays synchronous."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="attacker")
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = LOOP_CALL_TIMEOUT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def close(self) -> None:
        async def cancel_the_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@dataclass
class Target:
    a: RunningNode
    b: RunningNode
    a_id: str
    b_id: str
    token: InviteToken
    loop: LoopThread

    @property
    def a_address(self) -> str:
        return f"127.0.0.1:{(self.a.node_home.run / 'mesh-port').read_text().strip()}"

    def a_peers(self) -> set[str]:
        from services.cli.node_status import node_peers

        return {p.node_id for p in node_peers(self.a.node_home).peers}

    def b_peers(self) -> set[str]:
        from services.cli.node_status import node_peers

        return {p.node_id for p in node_peers(self.b.node_home).peers}

    def a_drops(self) -> int:
        """Streams A dropped: malformed or unknown ones, and control streams whose admission it refused."""
        return self.a_log_count("dropped a stream") + self.a_log_count("refused a node")

    def a_log_count(self, text: str) -> int:
        path = self.a.node_home.logs / "mesh.log"
        return path.read_text(errors="replace").count(text) if path.exists() else 0


def start_node(root: Path, name: str, args: list[str]) -> RunningNode:
    return RunningNode(root / name, free_port(), free_port(), ["--name", name, *args]).start()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("hostile")
    model = write_tiny_llama_gguf(root / "tiny-x.gguf", seed=3)
    nodes: list[RunningNode] = []
    loop = LoopThread()
    try:
        a = start_node(root, "a", ["--model", str(model)])
        nodes.append(a)
        a.wait_ready(["tiny-x"])
        token = InviteToken.decode(a.invite())
        b = start_node(root, "b", ["--client", "--join", token.encode()])
        nodes.append(b)
        b.wait_ready([])
        found = Target(a, b, a.status().node_id, b.status().node_id, token, loop)
        wait_until(lambda: found.a_peers() == {found.b_id}, JOIN_TIMEOUT_S, "B to join A")
        yield found
    finally:
        loop.close()
        if nodes:
            with ThreadPoolExecutor(len(nodes)) as pool:
                list(pool.map(lambda node: node.stop(), nodes))


def assert_a_still_serves(target: Target, extra_peers: frozenset[str] = frozenset()) -> None:
    assert target.a.chat("tiny-x", max_tokens=4)["choices"][0]["message"]["content"] is not None
    assert target.a_peers() == {target.b_id, *extra_peers}
    assert target.a_id in target.b_peers()
    # Every drop was handled, none escaped as an unhandled task error or a failing __del__.
    log = (target.a.node_home.logs / "mesh.log").read_text(errors="replace")
    assert "Traceback" not in log and "Exception ignored" not in log, log[-3000:]


# ---- the hostile bytes


def fresh_identity() -> NodeIdentity:
    return NodeIdentity(Ed25519PrivateKey.generate())


def raw_frame(frame: wire_pb2.WireFrame) -> bytes:
    """Like encode_frame, but without the size cap (an attacker does not use our encoder)."""
    body = frame.SerializeToString()
    return LENGTH_PREFIX.pack(len(body)) + body


def breaks_the_decoder(data: bytes) -> bool:
    try:
        FrameDecoder().feed(data)
    except FrameError:
        return True
    return False


node_ids = st.text("0123456789abcdef", min_size=32, max_size=32)
random_bytes = st.binary(min_size=1, max_size=2048)
oversized_length_prefix = st.builds(
    lambda length, tail: LENGTH_PREFIX.pack(length) + tail,
    st.integers(MAX_FRAME_BYTES + 1, 2**32 - 1),
    st.binary(max_size=64),
)
# A complete frame whose body is not a WireFrame we know: the decoder rejects it as soon as it lands.
undecodable_frame = (
    st.binary(max_size=512).map(lambda body: LENGTH_PREFIX.pack(len(body)) + body).filter(breaks_the_decoder)
)
garbage = st.one_of(random_bytes, oversized_length_prefix, undecodable_frame)
# Really as big as it claims: a StreamOpen whose body is over the cap.
huge_stream_open = st.integers(1, 4096).map(
    lambda extra: raw_frame(
        wire_pb2.WireFrame(
            stream_open=wire_pb2.StreamOpen(
                protocol_version=PROTOCOL_VERSION,
                kind=wire_pb2.STREAM_KIND_HTTP,
                source_node_id="f" * (MAX_FRAME_BYTES + extra),
            )
        )
    )
)
not_a_stream_open = st.sampled_from(
    [
        wire_pb2.WireFrame(ping=wire_pb2.Ping(seq=1)),
        wire_pb2.WireFrame(admitted=wire_pb2.Admitted()),
        wire_pb2.WireFrame(goodbye=wire_pb2.Goodbye(reason="bye")),
        wire_pb2.WireFrame(gossip=wire_pb2.GossipPayload(payload=b"x")),
        wire_pb2.WireFrame(hello=wire_pb2.Hello(protocol_version=PROTOCOL_VERSION)),
    ]
).map(encode_frame)
wrong_version_stream_open = st.builds(
    lambda version, kind: encode_frame(
        wire_pb2.WireFrame(stream_open=wire_pb2.StreamOpen(protocol_version=version, kind=kind))
    ),
    st.integers(0, 2**32 - 1).filter(lambda v: v != PROTOCOL_VERSION),
    st.sampled_from([wire_pb2.STREAM_KIND_CONTROL, wire_pb2.STREAM_KIND_HTTP]),
)
unknown_kind_stream = st.builds(
    lambda kind, source, tail: stream_open_frame(kind, source) + tail,
    st.sampled_from(UNKNOWN_KINDS),
    st.sampled_from([""]) | node_ids,
    st.binary(max_size=256),
)
malformed_stream_start = st.one_of(
    garbage, huge_stream_open, not_a_stream_open, wrong_version_stream_open, unknown_kind_stream
)


@dataclass(frozen=True)
class AdmissionAttempt:
    """A control stream from someone without the secret: Hello (right or wrong mesh), then a forged proof."""

    right_mesh_id: bool
    forged_mac: bytes
    then: bytes  # whatever else the outsider sends after

    def payload(self, mesh_id: bytes, source: str, identity: NodeIdentity) -> bytes:
        hello = make_hello(identity, mesh_id if self.right_mesh_id else bytes(16), "intruder", (), False)
        proof = wire_pb2.Proof(mac=self.forged_mac, signature=bytes(64))
        return (
            stream_open_frame(wire_pb2.STREAM_KIND_CONTROL, source)
            + encode_frame(wire_pb2.WireFrame(hello=hello))
            + encode_frame(wire_pb2.WireFrame(proof=proof))
            + self.then
        )


# Pre-admission: a control stream that does not start admission properly, or a forged admission.
control_then_wrong = st.builds(
    lambda source, rest: stream_open_frame(wire_pb2.STREAM_KIND_CONTROL, source) + rest,
    node_ids,
    st.one_of(garbage, not_a_stream_open),
)
admission_attempts = st.builds(
    AdmissionAttempt, st.booleans(), st.binary(min_size=0, max_size=32), st.binary(max_size=64)
)
# Post-admission: relays A must refuse itself (unknown target, relay-of-relay) and spoofed sources.
bad_relay = st.builds(
    lambda target, kind: stream_open_frame(wire_pb2.STREAM_KIND_RELAY, "", target, kind),
    node_ids,
    st.sampled_from([wire_pb2.STREAM_KIND_HTTP, wire_pb2.STREAM_KIND_RPC, wire_pb2.STREAM_KIND_RELAY]),
)
spoofed_source = st.builds(
    lambda source, tail: stream_open_frame(wire_pb2.STREAM_KIND_HTTP, source) + tail,
    node_ids,
    st.binary(max_size=64),
)


# ---- driving a stream


async def read_until_closed(
    reader: asyncio.StreamReader, deadline_s: float = STREAM_CLOSED_DEADLINE_S
) -> list[str]:
    """Frame kinds heard until the stream ends (EOF or reset); raises TimeoutError if it never does."""
    decoder, heard = FrameDecoder(), []

    async def drain() -> None:
        while True:
            try:
                data = await reader.read(64 * 1024)
            except ConnectionError:
                return
            if not data:
                return
            try:
                heard.extend(str(f.WhichOneof("body")) for f in decoder.feed(data))
            except FrameError:
                heard.append("undecodable")

    await asyncio.wait_for(drain(), deadline_s)
    return heard


def outsider_protocol(*args, **kwargs) -> MeshQuicProtocol:  # type: ignore[no-untyped-def]
    # MeshQuicProtocol turns a stream reset into an error on the reader (stock aioquic never wakes it).
    return MeshQuicProtocol(*args, on_stream=lambda *_: None, on_lost=lambda _: None, **kwargs)


async def as_outsider(address: str, payload: bytes, identity: NodeIdentity, stall: bool = False) -> list[str]:
    """Send `payload` on a fresh connection's first stream, then end it (or, with `stall`, leave it open
    and keep the connection alive with QUIC pings, so only A's own timeouts can end the stream)."""
    host, _, port = address.rpartition(":")
    configuration = quic_configuration(identity, is_client=True)
    async with connect(
        host, int(port), configuration=configuration, create_protocol=outsider_protocol
    ) as quic:
        reader, writer = await quic.create_stream()
        writer.write(payload)
        if not stall:
            writer.write_eof()
            return await read_until_closed(reader)
        keepalive = asyncio.ensure_future(_ping_forever(quic))
        try:
            return await read_until_closed(reader, STALL_DEADLINE_S)
        finally:
            keepalive.cancel()


async def _ping_forever(quic: MeshQuicProtocol) -> None:
    while True:
        await asyncio.sleep(KEEPALIVE_INTERVAL_S)
        await quic.ping()


async def on_data_stream(link: PeerLink, payload: bytes) -> list[str]:
    reader, writer = await link.open_raw()
    writer.write(payload)
    writer.write_eof()
    return await read_until_closed(reader)


async def ignore_frame(link: PeerLink, frame: wire_pb2.WireFrame) -> None:
    return None


async def join_as_member(token: InviteToken, address: str) -> tuple[MeshEndpoint, PeerLink]:
    credentials = Credentials(fresh_identity(), token.mesh_id, token.secret, "prober", (), True)
    endpoint = MeshEndpoint(credentials, {}, ignore_frame, lambda: None)
    return endpoint, await endpoint.dial(address)


# ---- before admission


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(probe=st.one_of(malformed_stream_start, control_then_wrong, admission_attempts))
@example(probe=stream_open_frame(wire_pb2.STREAM_KIND_HTTP, "") + b"GET / HTTP/1.1\r\n\r\n")
@example(probe=stream_open_frame(wire_pb2.STREAM_KIND_CONTROL, "") + LENGTH_PREFIX.pack(MAX_FRAME_BYTES + 1))
@example(probe=AdmissionAttempt(right_mesh_id=True, forged_mac=bytes(32), then=b""))
def test_an_outsider_is_cut_off_and_never_admitted(target: Target, probe: bytes | AdmissionAttempt) -> None:
    identity = fresh_identity()
    payload = (
        probe.payload(target.token.mesh_id, identity.node_id, identity)
        if isinstance(probe, AdmissionAttempt)
        else probe
    )
    heard = target.loop.run(as_outsider(target.a_address, payload, identity))
    assert "admitted" not in heard
    assert "proof" not in heard, "A proved the secret to someone who did not"
    if "hello" in heard:  # A answers Hello only to its own mesh id, then refuses the forged proof
        assert isinstance(probe, AdmissionAttempt) and probe.right_mesh_id
        assert heard[-1] == "refused"
    assert identity.node_id not in target.a_peers()


def test_a_silent_outsider_is_cut_off_after_the_open_and_admission_timeouts(target: Target) -> None:
    async def both() -> list[list[str]]:
        # Neither finishes its frame nor its stream: only A's timeouts end them.
        half_open = as_outsider(target.a_address, b"\x00\x00", fresh_identity(), stall=True)
        half_admitted = as_outsider(
            target.a_address,
            stream_open_frame(wire_pb2.STREAM_KIND_CONTROL, "x"),
            fresh_identity(),
            stall=True,
        )
        return list(await asyncio.gather(half_open, half_admitted))

    before = target.a_log_count("refused a node")
    heard = target.loop.run(both())
    assert heard == [[], []]
    wait_until(
        lambda: target.a_log_count("refused a node") > before, LOG_DEADLINE_S, "A to refuse the silent one"
    )
    assert target.a_log_count("malformed stream start: timed out") >= 1


def test_a_keeps_serving_after_the_outsiders(target: Target) -> None:
    assert_a_still_serves(target)
    assert target.a_log_count("dropped a stream") > 0
    assert target.a_log_count("refused a node") > 0


# ---- after admission


@pytest.fixture(scope="module")
def member(target: Target) -> Iterator[tuple[MeshEndpoint, PeerLink]]:
    endpoint, link = target.loop.run(join_as_member(target.token, target.a_address))
    try:
        wait_until(lambda: endpoint.node_id in target.a_peers(), JOIN_TIMEOUT_S, "A to list the member")
        yield endpoint, link
    finally:
        target.loop.run(endpoint.close())


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.one_of(malformed_stream_start, bad_relay, spoofed_source))
@example(payload=stream_open_frame(99, "") + b"hello")
@example(payload=stream_open_frame(wire_pb2.STREAM_KIND_CONTROL, "") + b"\xff" * 16)
def test_a_members_bad_stream_is_dropped_alone(
    target: Target, member: tuple[MeshEndpoint, PeerLink], payload: bytes
) -> None:
    endpoint, link = member
    drops_before = target.a_drops()
    heard = target.loop.run(on_data_stream(link, payload))
    assert heard == [], f"A answered a bad stream with frames: {heard}"
    wait_until(lambda: target.a_drops() > drops_before, LOG_DEADLINE_S, "A to log the drop")
    assert not link.closed.is_set(), link.close_reason
    assert target.a_peers() == {target.b_id, endpoint.node_id}


def test_a_keeps_serving_its_members_after_bad_streams(
    target: Target, member: tuple[MeshEndpoint, PeerLink]
) -> None:
    endpoint, link = member
    assert_a_still_serves(target, frozenset({endpoint.node_id}))
    # The member's link is healthy: a proper HTTP stream through it reaches A's gateway.
    request = b"GET /v1/models HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"

    async def get_models() -> bytes:
        reader, writer = await link.open_stream(wire_pb2.STREAM_KIND_HTTP)
        writer.write(request)
        return await asyncio.wait_for(reader.read(), STREAM_CLOSED_DEADLINE_S)

    response = target.loop.run(get_models())
    assert response.startswith(b"HTTP/1.1 200") and b"tiny-x" in response
    # The counter counts every drop it logs.
    dropped = re.findall(r"dropped_total=(\d+)", (target.a.node_home.logs / "mesh.log").read_text())
    assert [int(n) for n in dropped] == list(range(1, len(dropped) + 1))


async def rpc_stream_reply(link: PeerLink, after_open: bytes) -> bytes:
    reader, writer = await link.open_stream(wire_pb2.STREAM_KIND_RPC)
    writer.write(after_open)
    writer.write_eof()  # a truncated frame then ends the stream instead of waiting out the handshake
    return await asyncio.wait_for(reader.read(), STALL_DEADLINE_S)


def test_an_rpc_stream_for_a_model_a_runs_no_rpc_server_for_gets_a_plain_refusal(
    target: Target, member: tuple[MeshEndpoint, PeerLink]
) -> None:
    """A is no split worker: asking for its rpc-server gets a reason, never a ticket or a splice."""
    _, link = member
    ask = encode_frame(wire_pb2.WireFrame(rpc_open=wire_pb2.RpcOpen(model="tiny-x")))
    [reply] = FrameDecoder().feed(target.loop.run(rpc_stream_reply(link, ask)))
    assert "no rpc-server" in reply.rpc_offer.error and not reply.rpc_offer.ticket


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.one_of(garbage, st.just(encode_frame(wire_pb2.WireFrame(ping=wire_pb2.Ping())) * 2)))
def test_garbage_on_an_rpc_stream_closes_it_without_an_answer(
    target: Target, member: tuple[MeshEndpoint, PeerLink], payload: bytes
) -> None:
    _, link = member
    reply = target.loop.run(rpc_stream_reply(link, payload))
    frames = FrameDecoder().feed(reply) if reply else []
    assert all(frame.rpc_offer.error for frame in frames), frames  # at most a refusal, never a ticket
    assert not link.closed.is_set(), link.close_reason
    assert_a_still_serves(target, frozenset({member[0].node_id}))


def advertised_sha256(target: Target) -> str:
    with grpc.insecure_channel(target.a.node_home.grpc_target("gossip")) as channel:
        view = gossip_pb2_grpc.GossipStub(channel).GetView(gossip_pb2.GetViewRequest(), timeout=2)
    [record] = [r for r in view.nodes if r.node_id == target.a_id]
    [model] = record.models_on_disk
    return model.sha256


async def file_stream_reply(link: PeerLink, after_open: bytes) -> bytes:
    """What A answers on a FILE stream; nothing when it resets the stream (a dropped one)."""
    reader, writer = await link.open_stream(wire_pb2.STREAM_KIND_FILE)
    writer.write(after_open)
    writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), STALL_DEADLINE_S)
    except ConnectionError:
        return b""


def test_a_file_stream_for_a_file_a_does_not_advertise_gets_a_plain_refusal(
    target: Target, member: tuple[MeshEndpoint, PeerLink]
) -> None:
    _, link = member
    [reply] = FrameDecoder().feed(target.loop.run(file_stream_reply(link, manifest_request("ab" * 32))))
    assert "not advertised" in reply.file_reply.error
    assert not reply.file_reply.ticket and not reply.file_reply.HasField("manifest")


def test_a_file_chunk_comes_over_the_quic_stream_and_a_bad_request_is_refused(
    target: Target, member: tuple[MeshEndpoint, PeerLink]
) -> None:
    """The fallback path (no TLS): manifest, path choice, one good chunk, then an unaligned one."""
    _, link = member
    sha256 = advertised_sha256(target)

    async def exchange() -> list[Reply]:
        reader, writer = await link.open_stream(wire_pb2.STREAM_KIND_FILE)
        writer.write(manifest_request(sha256))
        parser = ReplyParser(max_body_bytes=2**30)
        replies: list[Reply] = []
        while not replies:
            replies += parser.feed(await asyncio.wait_for(reader.read(65536), STALL_DEADLINE_S))
        manifest = manifest_from_proto(replies[0].frame.manifest)
        writer.write(path_choice(on_this_stream=True))
        writer.write(chunk_request(sha256, *manifest.span(0)) + chunk_request(sha256, 1, 10))
        writer.write_eof()
        while data := await asyncio.wait_for(reader.read(65536), STALL_DEADLINE_S):
            replies += parser.feed(data)
        return replies

    offer, chunk, refusal = target.loop.run(exchange())
    manifest = manifest_from_proto(offer.frame.manifest)
    assert offer.frame.ticket and offer.frame.tls_port  # offered, declined
    assert hashlib.sha256(chunk.body).digest() == manifest.chunk_sha256[0]
    assert "not the start of a chunk" in refusal.frame.error
    assert not link.closed.is_set()


@pytest.mark.parametrize("fast_path", [True, False], ids=["tls fast path", "quic stream"])
def test_a_member_fetches_the_file_a_advertises(
    target: Target,
    member: tuple[MeshEndpoint, PeerLink],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fast_path: bool,
) -> None:
    """The receiving side in this process (a real FileFetcher on the member's link): the bytes come
    over TLS, or stay on the QUIC stream as they do on a relayed link."""
    monkeypatch.setenv("MESH_LLM_CACHE", str(tmp_path / "cache"))  # this process's hash cache
    endpoint, link = member
    sha256 = advertised_sha256(target)
    fetcher = FileFetcher(
        lambda node_id: link if node_id == target.a_id else None, endpoint.node_id, fast_path
    )
    dest = tmp_path / "fetched.gguf"
    request = mesh_pb2.FetchFileRequest(
        name="tiny-x", sha256=sha256, dest_path=str(dest), source_node_ids=[target.a_id]
    )

    async def fetch() -> list[mesh_pb2.FetchProgress]:
        return [progress async for progress in fetcher.fetch(request)]

    *_, final = target.loop.run(fetch())
    assert final.state == mesh_pb2.FETCH_STATE_DONE, final
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == sha256
    assert final.bytes_done == final.bytes_total == dest.stat().st_size


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.one_of(
        garbage,
        not_a_stream_open,
        st.just(path_choice(on_this_stream=True)),
        st.just(chunk_request("ab" * 32, 0, 1024)),
    )
)
def test_garbage_on_a_file_stream_closes_it_without_a_manifest(
    target: Target, member: tuple[MeshEndpoint, PeerLink], payload: bytes
) -> None:
    _, link = member
    reply = target.loop.run(file_stream_reply(link, payload))
    assert not reply, f"A answered a bad file stream: {reply!r}"
    assert not link.closed.is_set(), link.close_reason
    assert_a_still_serves(target, frozenset({member[0].node_id}))


def test_a_logs_and_counts_the_file_streams_it_dropped(target: Target) -> None:
    dropped = re.findall(r"dropped a file stream .*file_streams_dropped=(\d+)", target_log(target))
    assert dropped and [int(n) for n in dropped] == list(range(1, len(dropped) + 1))


def target_log(target: Target) -> str:
    return (target.a.node_home.logs / "mesh.log").read_text(errors="replace")


@settings(max_examples=CONTROL_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=garbage.filter(breaks_the_decoder))
def test_garbage_on_a_members_control_stream_drops_that_member_only(target: Target, payload: bytes) -> None:
    others = target.a_peers()  # B, and the member of the tests above if they ran
    endpoint, link = target.loop.run(join_as_member(target.token, target.a_address))
    try:
        wait_until(lambda: endpoint.node_id in target.a_peers(), JOIN_TIMEOUT_S, "A to list the member")
        target.loop.run(_write(link.control_writer, payload))
        wait_until(
            lambda: endpoint.node_id not in target.a_peers(), PEER_DROPPED_DEADLINE_S, "A to drop the member"
        )
        assert target.a.log_contains("mesh", f"peer={endpoint.node_id[:8]} reason=protocol error")
        wait_until(link.closed.is_set, PEER_DROPPED_DEADLINE_S, "the member to see its link closed")
        assert target.a_peers() == others and target.b_id in others
    finally:
        target.loop.run(endpoint.close())


async def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)


def test_a_keeps_serving_after_dropping_members(
    target: Target, member: tuple[MeshEndpoint, PeerLink]
) -> None:
    assert_a_still_serves(target, frozenset({member[0].node_id}))  # only the misbehaving members are gone
