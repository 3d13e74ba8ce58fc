"""The placement service's gRPC surface: the plan (and its changes), and load/drop by hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

import grpc

from services.proto.meshllm.placement.v1 import placement_pb2, placement_pb2_grpc


class PlanHolder(Protocol):
    plan: placement_pb2.Plan

    @property
    def plan_changed(self) -> asyncio.Condition: ...

    async def load(self, model: str) -> str: ...

    async def drop(self, model: str, force: bool) -> str: ...


class PoolRequestError(Exception):
    """A load or drop this node cannot do; `code` is the gRPC status the CLI turns into a message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class PlacementServicer(placement_pb2_grpc.PlacementServicer):
    def __init__(self, controller: PlanHolder) -> None:
        self._controller = controller

    async def GetPlan(
        self, request: placement_pb2.GetPlanRequest, context: grpc.aio.ServicerContext
    ) -> placement_pb2.Plan:
        return self._controller.plan

    async def Load(
        self, request: placement_pb2.LoadRequest, context: grpc.aio.ServicerContext
    ) -> placement_pb2.PoolChange:
        try:
            return placement_pb2.PoolChange(message=await self._controller.load(request.model))
        except PoolRequestError as exc:
            await context.abort(exc.code, str(exc))
            raise

    async def Drop(
        self, request: placement_pb2.DropRequest, context: grpc.aio.ServicerContext
    ) -> placement_pb2.PoolChange:
        try:
            return placement_pb2.PoolChange(message=await self._controller.drop(request.model, request.force))
        except PoolRequestError as exc:
            await context.abort(exc.code, str(exc))
            raise

    async def WatchPlan(
        self, request: placement_pb2.WatchPlanRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[placement_pb2.Plan]:
        while True:
            yield self._controller.plan
            async with self._controller.plan_changed:
                await self._controller.plan_changed.wait()
