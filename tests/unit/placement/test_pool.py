"""The pool rules: loss, hot, cold, hysteresis, one promoter per need, memory limits, ties."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from services.placement.pool import (
    COLD_MAX_PER_SERVER_PER_MIN,
    HOT_MIN_PER_SERVER_PER_MIN,
    PoolSettings,
    plan_pool,
)
from services.placement.view import Adopted, DiskFile, MeshNode, Seen

GB = 10**9
NOW = 1_000_000.0
X = DiskFile("aa" * 32, GB, "/m/x.gguf")
Y = DiskFile("bb" * 32, GB, "/m/y.gguf")


def node(
    node_id: str,
    vram_gb: float = 8,
    *,
    wanted: tuple[str, ...] = (),
    disk: dict[str, DiskFile] | None = None,
    adopted: dict[str, Adopted] | None = None,
    seen: dict[str, Seen] | None = None,
    rates: dict[str, float] | None = None,
    client: bool = False,
) -> MeshNode:
    adopted = adopted or {}
    return MeshNode(
        node_id=node_id,
        vram_bytes=int(vram_gb * GB),
        is_client=client,
        models_on_disk=disk or {},
        models_wanted=tuple(dict.fromkeys([*wanted, *adopted])),
        adopted=adopted,
        models_seen=seen or {},
        request_rate_per_min=rates or {},
    )


def seen_x(at: float = NOW - 5) -> dict[str, Seen]:
    return {"x": Seen(X.sha256, X.bytes, at)}


def test_a_model_that_lost_its_last_server_is_taken_up_by_one_standby() -> None:
    nodes = [
        node("b", 8, seen=seen_x(), disk={"x": X}),
        node("c", client=True, seen=seen_x()),
        node("d", 16, seen=seen_x(), disk={"x": X}),
    ]
    decision = plan_pool(nodes, "b", NOW)
    assert [(p.model, p.node_id, p.for_loss) for p in decision.promotions] == [("x", "d", True)]
    assert "x lost its last server" in decision.promotions[0].reason


def test_a_node_with_the_file_beats_one_with_more_memory() -> None:
    nodes = [node("b", 8, disk={"x": X}, seen=seen_x()), node("d", 64, seen=seen_x())]
    assert [p.node_id for p in plan_pool(nodes, "b", NOW).promotions] == ["b"]


def test_ties_go_to_the_higher_node_id() -> None:
    nodes = [node("b", 8, seen=seen_x()), node("a", 8, disk={"z": Y}), node("c", 8)]
    # nobody has x on disk: only peers with a hashed copy make it fetchable
    assert plan_pool(nodes, "a", NOW).promotions == ()
    nodes.append(node("src", 1, disk={"x": X}, wanted=("y",)))  # has the file, no room
    assert [p.node_id for p in plan_pool(nodes, "a", NOW).promotions] == ["c"]


def test_memory_limits_who_can_take_a_model_up() -> None:
    small = [node("b", 1, seen=seen_x()), node("src", 1, disk={"x": X})]  # 1 GB < 1.1 GB needed
    decision = plan_pool(small, "b", NOW)
    assert decision.promotions == ()
    assert "no node can take it up" in decision.pool[0].reasons[0]
    busy = [node("b", 2, wanted=("y",), disk={"y": Y, "x": X}, seen=seen_x())]
    assert plan_pool(busy, "b", NOW).promotions == ()  # y takes 1.1 of its 2 GB


def test_a_model_still_served_or_forgotten_or_dropped_is_not_lost() -> None:
    serving = [node("a", wanted=("x",), disk={"x": X}), node("b", seen=seen_x())]
    assert plan_pool(serving, "b", NOW).promotions == ()
    old = [node("b", disk={"x": X}, seen=seen_x(NOW - 7200))]
    assert plan_pool(old, "b", NOW).promotions == ()
    dropped = {"x": Seen(X.sha256, X.bytes, NOW - 10, dropped_unix_s=NOW - 5)}
    assert plan_pool([node("b", disk={"x": X}, seen=dropped)], "b", NOW).promotions == ()
    served_again = {"x": Seen(X.sha256, X.bytes, NOW - 1, dropped_unix_s=NOW - 5)}
    assert len(plan_pool([node("b", disk={"x": X}, seen=served_again)], "b", NOW).promotions) == 1


def test_a_hot_model_gets_a_replica_and_only_one_per_pass() -> None:
    rate = 2.5 * HOT_MIN_PER_SERVER_PER_MIN
    nodes = [
        node("a", wanted=("x",), disk={"x": X}),
        node("c", client=True, rates={"x": rate}),
        node("b", 8, disk={"x": X}),
        node("d", 16, disk={"x": X}),
    ]
    decision = plan_pool(nodes, "b", NOW)
    assert [(p.model, p.node_id, p.for_loss) for p in decision.promotions] == [("x", "d", False)]
    assert "x is hot" in decision.promotions[0].reason
    pool = decision.pool[0]
    assert pool.servers == ("a",) and pool.per_server == rate


def test_demand_below_the_threshold_or_not_3x_the_coldest_adds_nothing() -> None:
    cool = [node("a", wanted=("x",), disk={"x": X}), node("b", rates={"x": 9.0})]
    assert plan_pool(cool, "b", NOW).promotions == ()
    two = [
        node("a", wanted=("x",), disk={"x": X}),
        node("e", wanted=("y",), disk={"y": Y}),
        node("b", disk={"x": X}, rates={"x": 20.0, "y": 10.0}),
    ]
    assert plan_pool(two, "b", NOW).promotions == ()  # 20 < 3 × 10
    two[2] = node("b", disk={"x": X}, rates={"x": 30.0, "y": 10.0})
    assert [p.node_id for p in plan_pool(two, "b", NOW).promotions] == ["b"]


def test_a_replica_that_is_loading_already_counts_as_a_server() -> None:
    adopted = {"x": Adopted("x", NOW - 1)}
    nodes = [
        node("a", wanted=("x",), disk={"x": X}),
        node("b", adopted=adopted, rates={"x": 15.0}),  # fetching: no file yet
        node("d", disk={"x": X}),
    ]
    assert plan_pool(nodes, "d", NOW).promotions == ()  # 15 / 2 servers < 10


def test_a_cold_replica_retires_after_the_window_and_not_before() -> None:
    window = PoolSettings(retire_after_cold_s=60)
    adopted = {"x": Adopted("x", NOW - 600)}
    nodes = [node("a", wanted=("x",), disk={"x": X}), node("b", adopted=adopted, disk={"x": X})]
    first = plan_pool(nodes, "b", NOW, window)
    assert first.retirements == () and first.cold_since == {"x": NOW}
    later = plan_pool(nodes, "b", NOW + 59, window, first.cold_since)
    assert later.retirements == ()
    done = plan_pool(nodes, "b", NOW + 61, window, later.cold_since)
    assert [r.model for r in done.retirements] == ["x"]
    assert "stayed below" in done.retirements[0].reason


def test_demand_coming_back_resets_the_cold_timer() -> None:
    window = PoolSettings(retire_after_cold_s=60)
    adopted = {"x": Adopted("x", NOW - 600)}
    cold = [node("a", wanted=("x",), disk={"x": X}), node("b", adopted=adopted, disk={"x": X})]
    first = plan_pool(cold, "b", NOW, window)
    warm_rate = 2 * (COLD_MAX_PER_SERVER_PER_MIN + 0.5)
    warm = [*cold[:1], node("b", adopted=adopted, disk={"x": X}, rates={"x": warm_rate})]
    assert plan_pool(warm, "b", NOW + 30, window, first.cold_since).cold_since == {}
    assert plan_pool(cold, "b", NOW + 61, window, {}).retirements == ()  # timer restarted


def test_the_last_server_and_the_keeper_never_retire() -> None:
    window = PoolSettings(retire_after_cold_s=0)
    alone = [node("b", adopted={"x": Adopted("x", NOW - 600)}, disk={"x": X})]
    assert plan_pool(alone, "b", NOW, window, {"x": NOW - 999}).retirements == ()
    two = [
        node("b", adopted={"x": Adopted("x", NOW - 600)}, disk={"x": X}),
        node("c", adopted={"x": Adopted("x", NOW - 300)}, disk={"x": X}),
    ]
    assert plan_pool(two, "b", NOW, window, {"x": NOW - 999}).retirements == ()  # oldest: keeper
    assert len(plan_pool(two, "c", NOW, window, {"x": NOW - 999}).retirements) == 1


def test_started_with_and_loaded_by_hand_never_retire() -> None:
    window = PoolSettings(retire_after_cold_s=0)
    nodes = [
        node("a", wanted=("x",), disk={"x": X}),
        node("b", adopted={"x": Adopted("x", NOW - 600, by_hand=True)}, disk={"x": X}),
    ]
    assert plan_pool(nodes, "a", NOW, window, {"x": 0}).retirements == ()
    assert plan_pool(nodes, "b", NOW, window, {"x": 0}).retirements == ()


def test_of_two_nodes_that_took_up_a_lost_model_in_a_race_the_later_steps_back() -> None:
    nodes = [
        node("b", adopted={"x": Adopted("x", NOW - 2, for_loss=True)}, disk={"x": X}),
        node("d", adopted={"x": Adopted("x", NOW - 1, for_loss=True)}, disk={"x": X}, rates={"x": 50.0}),
    ]
    assert plan_pool(nodes, "b", NOW).retirements == ()
    assert [r.model for r in plan_pool(nodes, "d", NOW).retirements] == ["x"]


def test_a_standby_says_so_and_why() -> None:
    nodes = [node("a", wanted=("x",), disk={"x": X}), node("b", rates={"x": 3.0})]
    reason = plan_pool(nodes, "b", NOW).standby_reason
    assert reason.startswith("standby: serves nothing until the mesh needs it")
    assert "x at 3.0 req/min per server" in reason
    assert plan_pool(nodes, "a", NOW).standby_reason == ""


@st.composite
def views(draw: st.DrawFn) -> list[MeshNode]:
    count = draw(st.integers(1, 7))
    models = {"x": X, "y": Y}
    result = []
    for index in range(count):
        disk = {m: f for m, f in models.items() if draw(st.booleans())}
        wanted = tuple(m for m in disk if draw(st.booleans()))
        rates = {m: draw(st.floats(0, 100)) for m in models if draw(st.booleans())}
        seen = {
            m: Seen(f.sha256, f.bytes, NOW - draw(st.floats(0, 10)))
            for m, f in models.items()
            if draw(st.booleans())
        }
        result.append(
            node(
                f"n{index}",
                draw(st.sampled_from([0.5, 2, 4, 16])),
                wanted=wanted,
                disk=disk,
                rates=rates,
                seen=seen,
                client=draw(st.booleans()) and index > 0,
            )
        )
    return result


@settings(max_examples=200, deadline=None)
@given(views(), st.randoms())
def test_every_node_computes_the_same_promotions_whatever_the_order(
    nodes: list[MeshNode], shuffle: random.Random
) -> None:
    expected = plan_pool(nodes, nodes[0].node_id, NOW)
    for viewer in nodes:
        shuffled = list(nodes)
        shuffle.shuffle(shuffled)
        decision = plan_pool(shuffled, viewer.node_id, NOW)
        assert decision.promotions == expected.promotions
        assert decision.pool == expected.pool
    # one promoter per need: a model is promoted at most once per pass, never onto a client
    promoted = [p.model for p in expected.promotions]
    assert len(promoted) == len(set(promoted))
    clients = {n.node_id for n in nodes if n.is_client}
    assert not {p.node_id for p in expected.promotions} & clients
