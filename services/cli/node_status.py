"""Read a running node's state over gRPC (the gateway's Admin service and the mesh service)."""

from __future__ import annotations

import grpc

from services.node.home import NodeHome
from services.proto.meshllm.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.proto.meshllm.gossip.v1 import gossip_pb2, gossip_pb2_grpc
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc
from services.proto.meshllm.placement.v1 import placement_pb2, placement_pb2_grpc

STATUS_TIMEOUT_S = 3.0


class NodeNotRunning(Exception):
    """No node answers in this home dir."""


def _call(home: NodeHome, service: str, call):  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(home.grpc_target(service)) as channel:
        try:
            return call(channel)
        except grpc.RpcError as error:
            raise NodeNotRunning(
                f"the {service} service of the node in {home.root} does not answer ({error.code().name}); "
                "is `mesh-llm` running with this --home?"
            ) from error


def node_status(home: NodeHome) -> gateway_pb2.NodeStatus:
    return _call(
        home,
        "gateway",
        lambda ch: gateway_pb2_grpc.AdminStub(ch).GetStatus(
            gateway_pb2.GetStatusRequest(), timeout=STATUS_TIMEOUT_S
        ),
    )


def node_identity(home: NodeHome) -> mesh_pb2.Identity:
    return _call(
        home,
        "mesh",
        lambda ch: mesh_pb2_grpc.MeshStub(ch).GetIdentity(
            mesh_pb2.GetIdentityRequest(), timeout=STATUS_TIMEOUT_S
        ),
    )


def node_invite(home: NodeHome) -> mesh_pb2.Invite:
    return _call(
        home,
        "mesh",
        lambda ch: mesh_pb2_grpc.MeshStub(ch).GetInvite(
            mesh_pb2.GetInviteRequest(), timeout=STATUS_TIMEOUT_S
        ),
    )


def rotate_secret(home: NodeHome) -> mesh_pb2.Invite:
    return _call(
        home,
        "mesh",
        lambda ch: mesh_pb2_grpc.MeshStub(ch).RotateSecret(
            mesh_pb2.RotateSecretRequest(), timeout=STATUS_TIMEOUT_S
        ),
    )


def node_plan(home: NodeHome) -> placement_pb2.Plan:
    return _call(
        home,
        "placement",
        lambda ch: placement_pb2_grpc.PlacementStub(ch).GetPlan(
            placement_pb2.GetPlanRequest(), timeout=STATUS_TIMEOUT_S
        ),
    )


def node_peers(home: NodeHome) -> mesh_pb2.ListPeersResponse:
    return _call(
        home,
        "mesh",
        lambda ch: mesh_pb2_grpc.MeshStub(ch).ListPeers(
            mesh_pb2.ListPeersRequest(), timeout=STATUS_TIMEOUT_S
        ),
    )


def mesh_view(home: NodeHome) -> gossip_pb2.MeshView:
    return _call(
        home,
        "gossip",
        lambda ch: gossip_pb2_grpc.GossipStub(ch).GetView(
            gossip_pb2.GetViewRequest(), timeout=STATUS_TIMEOUT_S
        ),
    )
