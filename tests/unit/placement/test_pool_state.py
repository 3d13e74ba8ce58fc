"""This node's pool state: adopting, retiring, load/drop by hand, what it saw served, persistence."""

from __future__ import annotations

from pathlib import Path

from services.placement.fetching import choose_file
from services.placement.plan import ModelAssignment, Role
from services.placement.pool import PoolDecision, Promotion, Retirement, plan_pool
from services.placement.pool_messages import fetching_assignments, transfer_line
from services.placement.pool_state import DROP_DECLINE_S, SEEN_REFRESH_S, LocalPool, load_pool, save_pool
from services.placement.view import UNHASHED, Adopted, DiskFile, MeshNode, Seen, Served
from services.proto.meshllm.gossip.v1 import gossip_pb2

NOW = 1_000_000.0
X = DiskFile("aa" * 32, 10**9, "/a/x.gguf")


def decision(
    promotions: tuple[Promotion, ...] = (), retirements: tuple[Retirement, ...] = ()
) -> PoolDecision:
    return PoolDecision(promotions, retirements, ())


def test_a_promotion_for_this_node_is_adopted_once_and_others_are_ignored() -> None:
    pool = LocalPool(configured=("y",))
    promoted = decision(
        (Promotion("x", "me", "x lost its last server", True), Promotion("z", "other", "", False))
    )
    assert pool.apply(promoted, "me", NOW)
    assert pool.wanted == ("y", "x") and pool.adopted["x"].for_loss
    assert not pool.apply(promoted, "me", NOW + 1)  # already adopted
    assert [e.kind for e in pool.events] == ["promoted"]
    assert pool.apply(decision(retirements=(Retirement("x", "cold"),)), "me", NOW + 2)
    assert pool.wanted == ("y",) and [e.kind for e in pool.events] == ["promoted", "retired"]


def test_drop_declines_the_same_model_for_a_while_and_load_undoes_it() -> None:
    pool = LocalPool(configured=("x",))
    assert "other nodes keep serving it" in pool.drop("x", NOW, last_in_mesh=False)
    assert pool.wanted == ()
    promoted = decision((Promotion("x", "me", "hot", False),))
    assert not pool.apply(promoted, "me", NOW + 1)
    assert pool.apply(promoted, "me", NOW + DROP_DECLINE_S + 1)
    pool = LocalPool(configured=("x",))
    pool.drop("x", NOW, last_in_mesh=False)
    assert "again" in pool.load("x", NOW + 1) and pool.wanted == ("x",)


def test_dropping_the_last_server_marks_the_model_dropped_so_nobody_restores_it() -> None:
    pool = LocalPool(configured=())
    pool.load("x", NOW)
    assert pool.adopted["x"].by_hand
    assert "the mesh no longer serves it" in pool.drop("x", NOW + 1, last_in_mesh=True)
    assert pool.seen["x"].dropped_unix_s == NOW + 1
    standby = MeshNode("b", 8 * 10**9, False, models_on_disk={"x": X}, models_seen=pool.seen)
    assert plan_pool([standby], "b", NOW + 2).promotions == ()


def test_seen_models_refresh_rarely_copy_drop_markers_and_expire() -> None:
    server = MeshNode(
        "a", 1, False, models_on_disk={"x": X}, models_wanted=("x",), serving=(Served("x", True),)
    )
    pool = LocalPool(configured=())
    assert pool.update_seen([server], NOW, 3600)
    assert pool.seen["x"] == Seen(X.sha256, X.bytes, NOW)
    assert not pool.update_seen([server], NOW + SEEN_REFRESH_S - 1, 3600)
    assert pool.update_seen([server], NOW + SEEN_REFRESH_S, 3600)
    dropper = MeshNode(
        "d", 1, False, models_seen={"x": Seen(X.sha256, X.bytes, NOW, dropped_unix_s=NOW + 100)}
    )
    assert pool.update_seen([dropper], NOW + 101, 3600) and pool.seen["x"].dropped_unix_s == NOW + 100
    assert pool.update_seen([], NOW + 100 + 3601, 3600) and pool.seen == {}


def test_adoptions_survive_a_restart_and_a_damaged_file_is_an_empty_state(tmp_path: Path) -> None:
    pool = LocalPool(configured=("y",))
    pool.load("x", NOW)
    pool.drop("y", NOW, last_in_mesh=False)
    save_pool(pool, tmp_path)
    again = load_pool(("y",), tmp_path)
    assert again.adopted == pool.adopted and again.dropped == {"y"}
    (tmp_path / "pool.json").write_text("{not json")
    assert load_pool(("y",), tmp_path).adopted == {}
    assert load_pool(("y",), tmp_path / "missing").wanted == ("y",)


def test_the_file_most_peers_hold_is_fetched_from_all_of_them() -> None:
    other = DiskFile("bb" * 32, 5, "/o/x.gguf")
    nodes = [
        MeshNode("a", 1, False, models_on_disk={"x": X}),
        MeshNode("b", 1, False, models_on_disk={"x": X}),
        MeshNode("c", 1, False, models_on_disk={"x": other}),
        MeshNode("d", 1, False, models_on_disk={"x": DiskFile(UNHASHED, 5, "/d/x.gguf")}),
        MeshNode("me", 1, False, models_on_disk={"x": other}),
    ]
    choice = choose_file(nodes, "me", "x")
    assert choice is not None and choice.sources == ("a", "b") and choice.file_name == "x.gguf"
    tie = choose_file(nodes[1:], "me", "x", preferred_sha256=other.sha256)
    assert tie is not None and tie.sha256 == other.sha256 and tie.sources == ("c",)
    assert choose_file(nodes, "me", "nothing") is None


def test_an_adopted_model_without_its_file_shows_as_fetching_with_progress() -> None:
    pool = LocalPool(configured=())
    pool.adopted["x"] = Adopted("x", NOW, reason="x is hot")
    waiting = ModelAssignment("x", "", 0, Role.WAITING, ("the model file is not on this node's disk yet",))
    transfer = gossip_pb2.FileTransfer(
        name="x",
        bytes_total=64_000_000,
        bytes_done=16_000_000,
        bytes_per_s=8_000_000,
        source_node_ids=["a" * 16],
    )
    [shown] = fetching_assignments([waiting], pool, {}, {"x": transfer})
    assert shown.role is Role.FETCHING
    assert shown.reasons[0] == "promoted: x is hot"
    assert shown.reasons[1] == transfer_line(transfer)
    assert "16.00 MB of 64.00 MB" in shown.reasons[1] and "6 s left" in shown.reasons[1]
    solo = ModelAssignment("x", "/x", 1, Role.SOLO, ("fits",))
    assert fetching_assignments([solo], pool, {"x": X}, {})[0].reasons == ("promoted: x is hot", "fits")
