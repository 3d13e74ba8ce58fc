"""Who publishes a mesh's listing, and what it says, from the gossip view."""

from __future__ import annotations

from services.discovery.listing import MeshListing
from services.discovery.publishing import MeshFacts, elected_publisher, is_publisher, listing_from_view
from services.mesh.invite import InviteToken
from services.proto.meshllm.gossip.v1 import gossip_pb2

INVITE = InviteToken.new_mesh(("127.0.0.1:4000",))
FACTS = MeshFacts(INVITE.mesh_id_hex, INVITE.encode(), "poker-night", "AU", 2, "0.1.0")


def record(node_id: str, **fields: object) -> gossip_pb2.NodeRecord:
    return gossip_pb2.NodeRecord(node_id=node_id, **fields)  # type: ignore[arg-type]


def served(name: str, state: int = gossip_pb2.SERVE_STATE_READY) -> gossip_pb2.ServedModel:
    return gossip_pb2.ServedModel(name=name, state=state)  # type: ignore[arg-type]


def test_the_lowest_live_publishing_node_publishes() -> None:
    view = gossip_pb2.MeshView(
        local_node_id="bb",
        nodes=[record("bb", publishing=True), record("aa", publishing=True), record("00")],
    )
    assert elected_publisher(view) == "aa"
    assert not is_publisher(view)


def test_a_leaving_publisher_hands_over_to_the_next() -> None:
    view = gossip_pb2.MeshView(
        local_node_id="bb",
        nodes=[record("bb", publishing=True), record("aa", publishing=True, leaving=True)],
    )
    assert is_publisher(view)


def test_nobody_publishes_a_private_mesh() -> None:
    view = gossip_pb2.MeshView(local_node_id="aa", nodes=[record("aa"), record("bb")])
    assert elected_publisher(view) is None and not is_publisher(view)


def test_listing_counts_servers_clients_and_ready_models() -> None:
    view = gossip_pb2.MeshView(
        local_node_id="aa",
        nodes=[
            record("aa", vram_bytes=4 << 30, served=[served("x")], models_wanted=["x", "y"]),
            record("bb", vram_bytes=2 << 30, served=[served("z", gossip_pb2.SERVE_STATE_LOADING)]),
            record("cc", is_client=True),
            record("dd", is_client=True, leaving=True),
        ],
    )
    assert listing_from_view(view, FACTS) == MeshListing(
        mesh_id=INVITE.mesh_id_hex,
        name="poker-night",
        region="AU",
        token=INVITE.encode(),
        models_served=("x",),
        models_wanted=("y",),
        vram_bytes=6 << 30,
        node_count=2,
        client_count=1,
        max_clients=2,
        software_version="0.1.0",
        publisher_node_id="aa",
    )
