"""Read a running node's state over gRPC: the gateway's Admin service and the mesh, gossip, placement."""

from __future__ import annotations

from typing import Any

import grpc

from services.node.home import NodeHome
from services.proto.meshllm.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.proto.meshllm.gossip.v1 import gossip_pb2, gossip_pb2_grpc
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc
from services.proto.meshllm.placement.v1 import placement_pb2, placement_pb2_grpc

STATUS_TIMEOUT_S = 3.0


class NodeNotRunning(Exception):
    """No node answers in this home dir."""


def _unary(home: NodeHome, service: str, stub_class: type, method: str, request: Any) -> Any:
    with grpc.insecure_channel(home.grpc_target(service)) as channel:
        try:
            return getattr(stub_class(channel), method)(request, timeout=STATUS_TIMEOUT_S)
        except grpc.RpcError as error:
            raise NodeNotRunning(
                f"the {service} service of the node in {home.root} does not answer ({error.code().name}); "
                "is `mesh-llm` running with this --home?"
            ) from error


def node_status(home: NodeHome) -> gateway_pb2.NodeStatus:
    return _unary(home, "gateway", gateway_pb2_grpc.AdminStub, "GetStatus", gateway_pb2.GetStatusRequest())


def node_identity(home: NodeHome) -> mesh_pb2.Identity:
    return _unary(home, "mesh", mesh_pb2_grpc.MeshStub, "GetIdentity", mesh_pb2.GetIdentityRequest())


def node_invite(home: NodeHome) -> mesh_pb2.Invite:
    return _unary(home, "mesh", mesh_pb2_grpc.MeshStub, "GetInvite", mesh_pb2.GetInviteRequest())


def rotate_secret(home: NodeHome) -> mesh_pb2.Invite:
    return _unary(home, "mesh", mesh_pb2_grpc.MeshStub, "RotateSecret", mesh_pb2.RotateSecretRequest())


def node_peers(home: NodeHome) -> mesh_pb2.ListPeersResponse:
    return _unary(home, "mesh", mesh_pb2_grpc.MeshStub, "ListPeers", mesh_pb2.ListPeersRequest())


def node_tunnels(home: NodeHome) -> mesh_pb2.ListTunnelsResponse:
    return _unary(home, "mesh", mesh_pb2_grpc.MeshStub, "ListTunnels", mesh_pb2.ListTunnelsRequest())


def node_plan(home: NodeHome) -> placement_pb2.Plan:
    stub = placement_pb2_grpc.PlacementStub
    return _unary(home, "placement", stub, "GetPlan", placement_pb2.GetPlanRequest())


def mesh_view(home: NodeHome) -> gossip_pb2.MeshView:
    return _unary(home, "gossip", gossip_pb2_grpc.GossipStub, "GetView", gossip_pb2.GetViewRequest())


class PoolChangeRefused(Exception):
    """The node refused a load or drop; the message says why (and what to do)."""


POOL_CHANGE_TIMEOUT_S = 15.0


def _pool_change(home: NodeHome, method: str, request: Any) -> placement_pb2.PoolChange:
    with grpc.insecure_channel(home.grpc_target("placement")) as channel:
        try:
            stub = placement_pb2_grpc.PlacementStub(channel)
            return getattr(stub, method)(request, timeout=POOL_CHANGE_TIMEOUT_S)  # type: ignore[no-any-return]
        except grpc.RpcError as error:
            code = error.code()  # type: ignore[attr-defined]
            if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                raise PoolChangeRefused(error.details()) from error  # type: ignore[attr-defined]
            raise NodeNotRunning(
                f"the placement service of the node in {home.root} does not answer ({code.name}); "
                "is `mesh-llm` running with this --home?"
            ) from error


def pool_load(home: NodeHome, model: str) -> placement_pb2.PoolChange:
    return _pool_change(home, "Load", placement_pb2.LoadRequest(model=model))


def pool_drop(home: NodeHome, model: str, force: bool) -> placement_pb2.PoolChange:
    return _pool_change(home, "Drop", placement_pb2.DropRequest(model=model, force=force))
