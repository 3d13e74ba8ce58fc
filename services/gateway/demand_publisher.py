"""Puts this node's request rates into its gossip record (`Gossip.UpdateLocal`), as demand.py decides.

A watch task of the gateway: it reads the counters and the gossip view the watchers keep, and makes at
most one gRPC call per DEMAND_PUBLISH_INTERVAL_S, never one per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from services.gateway.demand import (
    DEMAND_CHECK_INTERVAL_S,
    DemandSchedule,
    demand_to_publish,
)
from services.gateway.mesh_summary import local_record
from services.gateway.sources import RoutingSources
from services.gateway.status import RequestCounters
from services.proto.meshllm.gossip.v1 import gossip_pb2, gossip_pb2_grpc

DEMAND_FIELD = "request_rate_per_min"
UPDATE_LOCAL_TIMEOUT_S = 2.0

_logger = logging.getLogger("gateway.demand")


class DemandPublisher:
    def __init__(
        self,
        counters: RequestCounters,
        sources: RoutingSources,
        gossip: gossip_pb2_grpc.GossipStub,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._counters = counters
        self._sources = sources
        self._gossip = gossip
        self._clock = clock
        self._schedule = DemandSchedule()
        self._failing = False

    async def publish_if_due(self) -> bool:
        """Publish when the schedule says so; True when gossip took the rates."""
        now_s = self._clock()
        current = demand_to_publish(self._counters.rates_per_minute())
        published = dict(local_record(self._sources.view).request_rate_per_min)
        if not self._schedule.due(now_s, published, current):
            return False
        self._schedule.tried(now_s)
        request = gossip_pb2.UpdateLocalRequest(
            record=gossip_pb2.NodeRecord(request_rate_per_min=current), fields=[DEMAND_FIELD]
        )
        try:
            await self._gossip.UpdateLocal(request, timeout=UPDATE_LOCAL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            # Gossip restarting: retried after the interval. Said once, not every few seconds.
            log = _logger.debug if self._failing else _logger.warning
            log("request rates not published: %s", error.details() or error.code().name)
            self._failing = True
            return False
        if self._failing:
            _logger.info("request rates published again")
        self._failing = False
        return True

    async def run(self, check_interval_s: float = DEMAND_CHECK_INTERVAL_S) -> None:
        """Owned by the gateway (a watch task); cancelled with it."""
        while True:
            await asyncio.sleep(check_interval_s)
            await self.publish_if_due()
