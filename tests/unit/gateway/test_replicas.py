"""Spreading requests over a model's replicas: fewest in flight first, ties take turns (no sockets)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.responses import Response

from services.gateway.body import Endpoint
from services.gateway.openai_api import _served_here
from services.gateway.proxy import UpstreamUnavailable
from services.gateway.remote import RemoteForwarder
from services.gateway.replicas import ReplicaBalancer
from services.gateway.routing import LocalServer, RemoteRoute, RemoteServer, Route, RoutingTable, ServerState

ME, B, C = "a" * 64, "b" * 64, "c" * 64
MODEL = "tiny-x"


def test_an_idle_local_server_goes_first_and_a_busy_one_spills_to_peers() -> None:
    balancer = ReplicaBalancer()
    for _ in range(3):
        [first, *_] = balancer.order([B, C, ME], local=ME)
        assert first == ME
        balancer.started(first)
        balancer.finished(first)
    balancer.started(ME)  # one in flight here: the next goes to a peer, then the other
    assert balancer.order([B, C, ME], local=ME)[0] == B
    balancer.started(B)
    assert balancer.order([B, C, ME], local=ME)[0] == C


def test_a_sequential_stream_takes_turns_over_tied_replicas() -> None:
    balancer = ReplicaBalancer()
    picks = []
    for _ in range(6):
        [first, *_] = balancer.order([B, C, ME])
        balancer.started(first)
        balancer.finished(first)  # answered before the next request: always 0 in flight
        picks.append(first)
    assert Counter(picks) == {B: 2, C: 2, ME: 2}
    assert picks[:3] == sorted(picks[:3]) and picks[3:] == picks[:3]


def test_the_fewest_in_flight_wins_over_taking_turns() -> None:
    balancer = ReplicaBalancer()
    balancer.started(B)
    balancer.started(B)
    balancer.started(C)
    assert balancer.order([B, C]) == [C, B]
    balancer.finished(B)
    balancer.finished(B)
    assert balancer.in_flight(B) == 0 and balancer.order([B, C]) == [B, C]
    balancer.finished(B)  # an extra finish never goes negative
    assert balancer.in_flight(B) == 0


def test_a_preferred_server_goes_first() -> None:
    balancer = ReplicaBalancer()
    balancer.started(C)
    assert balancer.order([B, C], preferred=C) == [C, B]
    assert balancer.order([B], preferred=C) == [B]


def test_a_model_served_here_and_elsewhere_routes_to_both() -> None:
    local = LocalServer(MODEL, ServerState.READY, "127.0.0.1", 9001)
    table = RoutingTable.build([local], (), [RemoteServer(MODEL, B)], ME)
    decision = table.lookup(MODEL)
    assert isinstance(decision, RemoteRoute)
    assert decision.node_ids == (B,) and decision.local == Route(MODEL, "127.0.0.1", 9001)
    assert decision.local_node_id == ME
    # A request a peer forwarded here is served here, never sent on.
    assert _served_here(decision) == decision.local
    [entry] = table.entries
    assert entry.state == "ready" and entry.local and entry.nodes == tuple(sorted((ME, B)))


@dataclass
class FakeTunnels:
    ports: dict[str, int]
    forgotten: list[str] = field(default_factory=list)

    async def port_for(self, node_id: str) -> int:
        return self.ports[node_id]

    def forget(self, node_id: str) -> None:
        self.forgotten.append(node_id)


@dataclass
class FakeProxy:
    """Answers at once (a non-streamed reply), or fails like a dead server for ports in `dead`."""

    dead: set[int] = field(default_factory=set)
    sent: list[tuple[int, bool]] = field(default_factory=list)

    async def forward(
        self,
        route: Route,
        endpoint: Endpoint,
        body: bytes,
        on_close: Callable[[], None],
        forwarded: bool = False,
    ) -> Response:
        self.sent.append((route.port, forwarded))
        on_close()  # the proxy closes on failure and on a whole answer alike
        if route.port in self.dead:
            raise UpstreamUnavailable(route, ConnectionRefusedError("refused"))
        return Response(b"{}")


def forwarder(dead: set[int] | None = None) -> tuple[RemoteForwarder, FakeProxy, FakeTunnels]:
    proxy, tunnels = FakeProxy(dead or set()), FakeTunnels({B: 7002, C: 7003})
    return RemoteForwarder(tunnels, proxy), proxy, tunnels  # type: ignore[arg-type]


LOCAL_ROUTE = Route(MODEL, "127.0.0.1", 9001)


async def test_requests_stay_here_while_idle_and_spill_to_a_peer_when_busy() -> None:
    remote, proxy, _ = forwarder()
    route = RemoteRoute(MODEL, (B,), LOCAL_ROUTE, ME)
    closed: list[int] = []
    for _ in range(2):
        await remote.forward(route, Endpoint.CHAT_COMPLETIONS, b"{}", lambda: closed.append(1))
    remote.balancer.started(ME)  # a long request is still running here
    await remote.forward(route, Endpoint.CHAT_COMPLETIONS, b"{}", lambda: closed.append(1))
    # Here over loopback without the forwarded mark; the peer through its tunnel, marked forwarded.
    assert proxy.sent == [(9001, False), (9001, False), (7002, True)]
    remote.balancer.finished(ME)
    assert len(closed) == 3 and remote.balancer.in_flight(ME) == remote.balancer.in_flight(B) == 0


async def test_a_failed_replica_is_skipped_and_the_request_closes_once() -> None:
    remote, proxy, tunnels = forwarder(dead={7002})
    route = RemoteRoute(MODEL, (B, C), None)
    closed: list[int] = []
    for _ in range(3):
        await remote.forward(route, Endpoint.COMPLETIONS, b"{}", lambda: closed.append(1))
    assert len(closed) == 3  # once per request, however many servers it tried
    assert {port for port, _ in proxy.sent} == {7002, 7003} and B in tunnels.forgotten
    assert remote.balancer.in_flight(B) == remote.balancer.in_flight(C) == 0
