"""From the gossip MeshView to the planner's MeshNode values."""

from __future__ import annotations

from services.placement.plan import Role
from services.placement.split import plan_for_node
from services.placement.view import UNHASHED, DiskFile, mesh_nodes_from_view, with_local_files
from services.proto.meshllm.gossip.v1 import gossip_pb2
from tests.unit.placement.split_fixtures import GB, SHA_A, SHA_B


def record(node_id: str, **fields: object) -> gossip_pb2.NodeRecord:
    return gossip_pb2.NodeRecord(node_id=node_id, **fields)  # type: ignore[arg-type]


def test_records_become_sorted_mesh_nodes_with_files_by_name() -> None:
    view = gossip_pb2.MeshView(
        local_node_id="b",
        nodes=[
            record(
                "b",
                vram_bytes=8 * GB,
                models_on_disk=[
                    gossip_pb2.ModelFile(name="m", path="/m.gguf", bytes=GB, sha256=SHA_A),
                    gossip_pb2.ModelFile(name="m", path="/other.gguf", bytes=2 * GB, sha256=SHA_B),
                ],
                models_wanted=["m", "n", "m"],
                rtt_ms={"a": 4.5},
            ),
            record("a", is_client=True, leaving=True),
            record("", vram_bytes=GB),  # a record without an id is no node
            record("b", vram_bytes=1),  # a second record for b: the first wins
        ],
    )
    a, b = mesh_nodes_from_view(view)
    assert (a.node_id, a.is_client, a.leaving) == ("a", True, True)
    assert b.vram_bytes == 8 * GB
    assert b.models_on_disk == {"m": DiskFile(SHA_A, GB, "/m.gguf")}
    assert b.models_wanted == ("m", "n")
    assert b.rtt_ms == {"a": 4.5}
    assert not b.force_split


def test_local_files_fill_the_gap_until_gossip_has_hashed_them() -> None:
    view = gossip_pb2.MeshView(
        local_node_id="me",
        nodes=[
            record("me", vram_bytes=4 * GB, models_wanted=["m", "n"]),
            record("peer", vram_bytes=GB),
        ],
    )
    configured = {"m": DiskFile(UNHASHED, GB, "/m.gguf"), "n": DiskFile(UNHASHED, GB, "/n.gguf")}
    nodes = with_local_files(mesh_nodes_from_view(view), "me", configured)
    assert [a.role for a in plan_for_node(nodes, "me")] == [Role.SOLO, Role.SOLO]
    assert nodes[1].models_on_disk == {}


def test_split_comes_from_the_gossip_record() -> None:
    view = gossip_pb2.MeshView(nodes=[record("me", force_split=True), record("peer")])
    me, peer = mesh_nodes_from_view(view)
    assert me.force_split and not peer.force_split


def test_files_gossip_already_lists_win_over_configured_ones() -> None:
    hashed = gossip_pb2.ModelFile(name="m", path="/m.gguf", bytes=GB, sha256=SHA_A)
    view = gossip_pb2.MeshView(nodes=[record("me", models_on_disk=[hashed])])
    [node] = with_local_files(mesh_nodes_from_view(view), "me", {"m": DiskFile(UNHASHED, GB, "/m.gguf")})
    assert node.models_on_disk["m"].sha256 == SHA_A
