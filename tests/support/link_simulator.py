"""A UDP link simulator of ours: sits between two nodes and adds delay, jitter, loss or a blackhole.

`tc netem` is not available here, so tests and benchmarks put this relay in the path: node B is
told (via `--advertise` or the invite token) to dial the simulator's port instead of node A's.
Each client address gets its own upstream socket, so replies find their way back (like a NAT).
Runs its own event loop in a thread so synchronous tests can drive it.
"""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass


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
        self, target_port: int, conditions: LinkConditions | None = None, target_host: str = "127.0.0.1"
    ) -> None:
        self.target = (target_host, target_port)
        self.conditions = conditions or LinkConditions()
        self.port = 0
        self.packets_forwarded = 0
        self.packets_dropped = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="link-simulator")
        self._upstreams: dict[tuple[str, int], _Upstream] = {}
        self._front: asyncio.DatagramTransport
        self._rng = random.Random(0)

    def start(self) -> LinkSimulator:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(5)
        return self

    async def _open(self) -> None:
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Front(self), local_addr=("127.0.0.1", 0)
        )
        self._front = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def set_conditions(self, conditions: LinkConditions) -> None:
        self._loop.call_soon_threadsafe(setattr, self, "conditions", conditions)

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

    def _deliver(self, data: bytes, send) -> None:  # type: ignore[no-untyped-def]
        conditions = self.conditions
        if conditions.blackhole or (conditions.loss and self._rng.random() < conditions.loss):
            self.packets_dropped += 1
            return
        self.packets_forwarded += 1
        delay_s = (
            max(0.0, conditions.delay_ms + self._rng.uniform(-conditions.jitter_ms, conditions.jitter_ms))
            / 1000
        )
        if delay_s:
            self._loop.call_later(delay_s, send)
        else:
            send()

    def close(self) -> None:
        def shutdown() -> None:
            for upstream in self._upstreams.values():
                if upstream.transport is not None:
                    upstream.transport.close()
            self._front.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(shutdown)
        self._thread.join(5)
