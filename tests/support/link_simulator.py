"""A link simulator of ours: sits between two nodes and adds delay, jitter, loss or a blackhole.

`tc netem` is not available here, so tests and benchmarks put this relay in the path: node B is
told (via `--advertise` or the invite token) to dial the simulator's port instead of node A's.
Each client address gets its own upstream socket, so replies find their way back (like a NAT).
Runs its own event loop in a thread so synchronous tests can drive it.

UDP (QUIC) always; with `tcp=True` it also relays TCP on the same port number, with the same
delay and jitter each way (bytes keep their order; loss does not apply, TCP would resend; a
blackhole holds the bytes back until it lifts). That covers a split host's RPC fast path, a TLS
connection to the worker's QUIC port number: bind the simulator to another loopback address with
the node's port (`host="127.0.0.2", port=<node's port>`) and have the node advertise that address.
`tap` sees every TCP chunk as it arrives (connection number, toward the target?, bytes): a relay
that parses what it carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from tests.support.netns import enter_namespace

TCP_READ_BYTES = 256 * 1024
TCP_QUEUE_CHUNKS = 64  # per direction: at most 16 MB held back before the relay stops reading
CLOSE_TIMEOUT_S = 5.0

TcpTap = Callable[[int, bool, bytes], None]


@dataclass
class LinkConditions:
    delay_ms: float = 0.0  # one way; RTT is twice this
    jitter_ms: float = 0.0
    loss: float = 0.0  # 0..1, per packet, each direction
    blackhole: bool = False


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, simulator: LinkSimulator, client: tuple[str, int]) -> None:
        self.simulator = simulator
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.simulator._deliver(data, lambda: self.simulator._front.sendto(data, self.client))


class _Front(asyncio.DatagramProtocol):
    def __init__(self, simulator: LinkSimulator) -> None:
        self.simulator = simulator

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.simulator._from_client(data, addr)


class LinkSimulator:
    def __init__(
        self,
        target_port: int,
        conditions: LinkConditions | None = None,
        target_host: str = "127.0.0.1",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        udp: bool = True,
        tcp: bool = False,
        tap: TcpTap | None = None,
        netns: str = "",
    ) -> None:
        """Listens on host:port (port 0: any free one, the same number for UDP and TCP); inside the
        network namespace `netns` when given (a test-bed host's `ns`, tests/support/netns.py)."""
        if not (udp or tcp):
            raise ValueError("a link simulator relays UDP, TCP or both")
        self.target = (target_host, target_port)
        self.conditions = conditions or LinkConditions()
        self.host = host
        self.port = port
        self.packets_forwarded = 0
        self.packets_dropped = 0
        self.tcp_connections = 0
        self.tcp_bytes_forwarded = 0
        self._udp, self._tcp, self._tap = udp, tcp, tap
        self._loop = asyncio.new_event_loop()
        self._netns = netns
        self._thread = threading.Thread(target=self._run, daemon=True, name="link-simulator")
        self._upstreams: dict[tuple[str, int], _Upstream] = {}
        self._front: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp_relays: set[asyncio.Task[None]] = set()
        self._rng = random.Random(0)
        self._tcp_open = asyncio.Event()  # set unless the conditions are a blackhole
        if not self.conditions.blackhole:
            self._tcp_open.set()

    def _run(self) -> None:
        if self._netns:
            # Only this thread moves: every socket the simulator opens is created on its loop.
            enter_namespace(self._netns)
        self._loop.run_forever()

    def start(self) -> LinkSimulator:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(5)
        return self

    async def _open(self) -> None:
        if self._udp:
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _Front(self), local_addr=(self.host, self.port)
            )
            self._front = transport  # type: ignore[assignment]
            self.port = transport.get_extra_info("sockname")[1]
        if self._tcp:
            self._tcp_server = await asyncio.start_server(self._relay_tcp, self.host, self.port)
            self.port = self._tcp_server.sockets[0].getsockname()[1]

    def set_conditions(self, conditions: LinkConditions) -> None:
        self._loop.call_soon_threadsafe(self._apply, conditions)

    def _apply(self, conditions: LinkConditions) -> None:
        self.conditions = conditions
        if conditions.blackhole:
            self._tcp_open.clear()
        else:
            self._tcp_open.set()

    def _from_client(self, data: bytes, client: tuple[str, int]) -> None:
        upstream = self._upstreams.get(client)
        if upstream is None:
            upstream = _Upstream(self, client)
            self._upstreams[client] = upstream
            self._loop.create_task(self._connect_upstream(upstream, data))
            return
        if upstream.transport is not None:
            self._deliver(data, lambda: upstream.transport.sendto(data))  # type: ignore[union-attr]

    async def _connect_upstream(self, upstream: _Upstream, first: bytes) -> None:
        await self._loop.create_datagram_endpoint(lambda: upstream, remote_addr=self.target)
        self._deliver(first, lambda: upstream.transport.sendto(first))  # type: ignore[union-attr]

    def _delay_s(self) -> float:
        conditions = self.conditions
        jitter = self._rng.uniform(-conditions.jitter_ms, conditions.jitter_ms) if conditions.jitter_ms else 0
        return max(0.0, conditions.delay_ms + jitter) / 1000

    def _deliver(self, data: bytes, send) -> None:  # type: ignore[no-untyped-def]
        conditions = self.conditions
        if conditions.blackhole or (conditions.loss and self._rng.random() < conditions.loss):
            self.packets_dropped += 1
            return
        self.packets_forwarded += 1
        delay_s = self._delay_s()
        if delay_s:
            self._loop.call_later(delay_s, send)
        else:
            send()

    # ---- TCP: one upstream connection per accepted one, each direction delayed in order

    async def _relay_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tcp_relays.add(task)
        task.add_done_callback(self._tcp_relays.discard)
        number = self.tcp_connections
        self.tcp_connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        for each in (writer, upstream_writer):
            with contextlib.suppress(OSError):
                each.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipes = [
            asyncio.ensure_future(self._tcp_pipe(number, True, reader, upstream_writer)),
            asyncio.ensure_future(self._tcp_pipe(number, False, upstream_reader, writer)),
        ]
        try:
            await asyncio.gather(*pipes)
        except (ConnectionError, OSError):
            pass  # a reset on either side ends both, as it would end the real connection
        finally:
            for pipe in pipes:
                pipe.cancel()
            for each in (writer, upstream_writer):
                each.close()

    async def _tcp_pipe(
        self, number: int, to_target: bool, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(TCP_QUEUE_CHUNKS)
        sender = asyncio.ensure_future(self._tcp_send(queue, writer))
        try:
            due = 0.0
            while True:
                data = await reader.read(TCP_READ_BYTES)
                if self._tap is not None and data:
                    self._tap(number, to_target, data)
                # Never before the previous chunk: jitter must not reorder a byte stream.
                due = max(due, self._loop.time() + self._delay_s())
                await queue.put((due, data))
                if not data:
                    break
                self.tcp_bytes_forwarded += len(data)
            await sender
        finally:
            sender.cancel()

    async def _tcp_send(
        self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            due, data = await queue.get()
            wait = due - self._loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._tcp_open.wait()  # a blackhole holds bytes back
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    def close(self) -> None:
        async def shutdown() -> None:
            for upstream in self._upstreams.values():
                if upstream.transport is not None:
                    upstream.transport.close()
            if self._front is not None:
                self._front.close()
            if self._tcp_server is not None:
                self._tcp_server.close()
            for relay in list(self._tcp_relays):
                relay.cancel()
            await asyncio.gather(*self._tcp_relays, return_exceptions=True)

        with contextlib.suppress(TimeoutError):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(CLOSE_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
