"""One truth per peer (issue 12): what the mesh reaches decides what is routable from here, not what
others gossip about a node."""

from __future__ import annotations

from services.gateway.mesh_summary import UNREACHABLE_FROM_HERE, peer_summaries
from services.gateway.routing import RemoteRoute, UnknownModel
from services.gateway.sources import RoutingSources, peer_paths, remote_servers
from services.proto.meshllm.gossip.v1 import gossip_pb2
from services.proto.meshllm.mesh.v1 import mesh_pb2

ME, NEAR, FAR = "a" * 64, "b" * 64, "c" * 64


def serving(node_id: str, model: str) -> gossip_pb2.NodeRecord:
    return gossip_pb2.NodeRecord(
        node_id=node_id,
        name=node_id[:1],
        served=[
            gossip_pb2.ServedModel(
                name=model, role=gossip_pb2.MODEL_ROLE_SOLO, state=gossip_pb2.SERVE_STATE_READY
            )
        ],
    )


VIEW = gossip_pb2.MeshView(
    local_node_id=ME,
    nodes=[gossip_pb2.NodeRecord(node_id=ME), serving(NEAR, "near-model"), serving(FAR, "far-model")],
)
PEERS = mesh_pb2.ListPeersResponse(
    peers=[mesh_pb2.Peer(node_id=NEAR, path=mesh_pb2.PEER_PATH_RELAYED, relay_node_id="d" * 64)]
)


def test_only_peers_the_mesh_reaches_serve_requests_from_here() -> None:
    servers = remote_servers(VIEW, peer_paths(PEERS))
    assert [(s.model, s.node_id) for s in servers] == [("near-model", NEAR)]


def test_before_the_mesh_says_who_it_reaches_gossip_is_trusted() -> None:
    assert {s.node_id for s in remote_servers(VIEW, None)} == {NEAR, FAR}


def test_a_relayed_peer_is_routable_and_an_unreachable_one_is_shown_as_such() -> None:
    summaries = {p.node_id: p for p in peer_summaries(VIEW, peer_paths(PEERS))}
    assert summaries[NEAR].path == "relayed"
    assert summaries[FAR].path == UNREACHABLE_FROM_HERE


async def test_the_routing_table_follows_the_mesh_peer_list() -> None:
    sources = RoutingSources()
    await sources.on_view(VIEW)
    assert isinstance(sources.table.lookup("far-model"), RemoteRoute)
    await sources.on_peers(PEERS)
    assert isinstance(sources.table.lookup("far-model"), UnknownModel)
    assert isinstance(sources.table.lookup("near-model"), RemoteRoute)
    both = mesh_pb2.ListPeersResponse(peers=[*PEERS.peers, mesh_pb2.Peer(node_id=FAR)])
    await sources.on_peers(both)
    assert isinstance(sources.table.lookup("far-model"), RemoteRoute)
