"""Demand into gossip: when the rates go out (pure), and the publisher against a fake Gossip stub."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
import pytest

from services.gateway.demand import (
    DEMAND_FLOOR_PER_MIN,
    DEMAND_PUBLISH_INTERVAL_S,
    DemandSchedule,
    demand_moved,
    demand_to_publish,
)
from services.gateway.demand_publisher import DemandPublisher
from services.gateway.sources import RoutingSources
from services.gateway.status import RequestCounters
from services.proto.meshllm.gossip.v1 import gossip_pb2

ME = "a" * 64


def test_publishable_rates_are_rounded_and_drop_idle_models() -> None:
    rates = {"x": 12.3456, "idle": DEMAND_FLOOR_PER_MIN / 2, "y": DEMAND_FLOOR_PER_MIN}
    assert demand_to_publish(rates) == {"x": 12.35, "y": DEMAND_FLOOR_PER_MIN}
    assert demand_to_publish({}) == {}


@pytest.mark.parametrize(
    ("published", "current", "moved"),
    [
        ({}, {}, False),
        ({}, {"x": 1.0}, True),  # a model appears
        ({"x": 1.0}, {}, True),  # ... and decays away: the record goes back to {}
        ({"x": 1.0}, {"y": 1.0}, True),
        ({"x": 10.0}, {"x": 11.0}, False),  # 10 %: not worth a gossip round
        ({"x": 10.0}, {"x": 12.5}, True),  # 25 % and 2.5/min
        ({"x": 0.5}, {"x": 0.8}, False),  # 60 %, but 0.3/min says nothing to placement
        ({"x": 100.0}, {"x": 70.0}, True),  # decaying counts as moving
    ],
)
def test_only_news_is_published(published: dict, current: dict, moved: bool) -> None:
    assert demand_moved(published, current) is moved


def test_the_schedule_allows_one_try_per_interval() -> None:
    schedule = DemandSchedule()
    assert schedule.due(0.0, {}, {"x": 1.0})
    schedule.tried(0.0)
    assert not schedule.due(DEMAND_PUBLISH_INTERVAL_S - 0.1, {}, {"x": 1.0})
    assert schedule.due(DEMAND_PUBLISH_INTERVAL_S, {}, {"x": 1.0})
    assert not schedule.due(100.0, {"x": 1.0}, {"x": 1.0})


def test_forwarded_requests_count_in_totals_but_not_as_demand() -> None:
    counters = RequestCounters(clock=lambda: 0.0)
    counters.started("x")
    counters.started("x", entered_here=False)  # a peer counted it where it entered
    assert counters.total == 2 and counters.by_model == {"x": 2} and counters.in_flight == 2
    assert counters.rates_per_minute() == {"x": 1.0}


@dataclass
class FakeGossip:
    """Gossip.UpdateLocal, as far as the publisher uses it; `down` makes it fail like a restart."""

    calls: list[gossip_pb2.UpdateLocalRequest] = field(default_factory=list)
    down: bool = False

    async def UpdateLocal(
        self,
        request: gossip_pb2.UpdateLocalRequest,
        timeout: float,  # noqa: ASYNC109 - the stub's signature
    ) -> gossip_pb2.NodeRecord:
        if self.down:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "gossip is down"
            )
        self.calls.append(request)
        return request.record


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


async def gossip_shows(sources: RoutingSources, rates: dict[str, float]) -> None:
    """What gossip's Watch would deliver after an UpdateLocal (or a restart, with {})."""
    record = gossip_pb2.NodeRecord(node_id=ME, request_rate_per_min=rates)
    await sources.on_view(gossip_pb2.MeshView(local_node_id=ME, nodes=[record]))


def publisher() -> tuple[DemandPublisher, RequestCounters, RoutingSources, FakeGossip, Clock]:
    clock, sources, gossip = Clock(), RoutingSources(), FakeGossip()
    counters = RequestCounters(clock=clock)
    return DemandPublisher(counters, sources, gossip, clock), counters, sources, gossip, clock  # type: ignore[arg-type]


async def test_rates_go_out_rate_limited_and_survive_a_gossip_restart() -> None:
    demand, counters, sources, gossip, clock = publisher()
    assert not await demand.publish_if_due()  # idle: nothing to say
    counters.started("x")
    assert await demand.publish_if_due()
    [call] = gossip.calls
    assert list(call.fields) == ["request_rate_per_min"]
    assert dict(call.record.request_rate_per_min) == {"x": 1.0}
    await gossip_shows(sources, {"x": 1.0})
    for _ in range(5):
        counters.started("x")
    clock.now = 1.0
    assert not await demand.publish_if_due()  # moved, but within the interval
    clock.now = DEMAND_PUBLISH_INTERVAL_S
    assert await demand.publish_if_due()
    published = dict(gossip.calls[-1].record.request_rate_per_min)
    assert published["x"] > 5.0
    await gossip_shows(sources, published)
    clock.now += DEMAND_PUBLISH_INTERVAL_S
    assert not await demand.publish_if_due()  # nothing new
    # Gossip restarted: its record came back empty, so the rates go out again.
    await gossip_shows(sources, {})
    assert await demand.publish_if_due()
    assert dict(gossip.calls[-1].record.request_rate_per_min) == pytest.approx(published, rel=0.1)


async def test_a_failed_publish_is_retried_after_the_interval() -> None:
    demand, counters, _, gossip, clock = publisher()
    counters.started("x")
    gossip.down = True
    assert not await demand.publish_if_due()
    gossip.down = False
    clock.now = 1.0
    assert not await demand.publish_if_due()
    clock.now = DEMAND_PUBLISH_INTERVAL_S
    assert await demand.publish_if_due() and len(gossip.calls) == 1


async def test_an_idle_node_decays_to_an_empty_record() -> None:
    demand, counters, sources, gossip, clock = publisher()
    counters.started("x")
    assert await demand.publish_if_due()
    await gossip_shows(sources, {"x": 1.0})
    clock.now = 3600.0  # an hour without requests
    assert await demand.publish_if_due()
    assert dict(gossip.calls[-1].record.request_rate_per_min) == {}
    assert list(gossip.calls[-1].fields) == ["request_rate_per_min"]  # an empty map, still replaced
