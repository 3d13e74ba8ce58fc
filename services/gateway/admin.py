"""The gateway's gRPC Admin service on <home>/run/gateway.sock: what `meshctl status` reads."""

from __future__ import annotations

import grpc

from services.gateway.status import StatusReporter
from services.proto.meshllm.gateway.v1 import gateway_pb2, gateway_pb2_grpc


class AdminService(gateway_pb2_grpc.AdminServicer):
    def __init__(self, reporter: StatusReporter) -> None:
        self._reporter = reporter

    async def GetStatus(
        self, request: gateway_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.NodeStatus:
        snapshot = await self._reporter.snapshot()
        return snapshot.to_proto()


def register_admin(reporter: StatusReporter, server: grpc.aio.Server) -> None:
    gateway_pb2_grpc.add_AdminServicer_to_server(AdminService(reporter), server)
