"""The split rules on hand-built meshes: who hosts, who works, who waits, and why."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from services.placement.plan import LayerShare, ModelAssignment, Role
from services.placement.split import (
    FORCED_SPLIT_WAITING,
    SPLIT_RTT_CAP_MS,
    form_split_group,
    layer_shares,
    plan_for_node,
    plan_mesh,
    tensor_split_for,
)
from services.placement.view import UNHASHED, DiskFile
from tests.unit.placement.split_fixtures import GB, SHA_A, SHA_B, disk, mesh_node

BIG = "big"  # a 10 GB model: needs 11 GB anywhere


def only(assignments: list[ModelAssignment]) -> ModelAssignment:
    [assignment] = assignments
    return assignment


def test_a_model_that_fits_runs_solo_and_a_peer_is_not_disturbed() -> None:
    host = mesh_node("h", 12 * GB, wants=(BIG,), files=disk(BIG, 10 * GB), rtt={"w": 2.0})
    peer = mesh_node("w", 24 * GB, files=disk(BIG, 10 * GB))
    plan = plan_mesh([host, peer])
    assert only(plan["h"]).role is Role.SOLO
    assert "fits" in only(plan["h"]).reasons[0]
    assert plan["w"] == []


def test_two_nodes_split_a_model_neither_holds_alone() -> None:
    host = mesh_node("h", 8 * GB, wants=(BIG,), files=disk(BIG, 10 * GB), rtt={"w": 5.0})
    worker = mesh_node("w", 6 * GB, files=disk(BIG, 10 * GB, path="/elsewhere/big.gguf"))
    plan = plan_mesh([host, worker])
    on_host, on_worker = only(plan["h"]), only(plan["w"])
    assert on_host.role is Role.SPLIT_HOST and on_worker.role is Role.SPLIT_WORKER
    assert on_host.host_node_id == on_worker.host_node_id == "h"
    assert on_host.shares == on_worker.shares
    [(h, h_fraction, h_bytes), (w, w_fraction, w_bytes)] = on_host.shares
    assert (h, w) == ("h", "w")
    assert math.isclose(h_fraction, 8 / 14) and math.isclose(w_fraction, 6 / 14)
    assert h_bytes + w_bytes == 10 * GB
    # The worker reads its layers from its own copy, wherever it keeps it.
    assert on_worker.path == "/elsewhere/big.gguf"
    assert any("w 5.0 ms" in reason for reason in on_host.reasons)
    assert any("0.57" in reason and "0.43" in reason for reason in on_host.reasons)


def test_the_host_is_the_wanting_node_with_most_memory_not_the_biggest_node() -> None:
    files = disk(BIG, 10 * GB)
    small = mesh_node("a", 4 * GB, wants=(BIG,), files=files, rtt={"b": 1.0, "c": 1.0})
    larger = mesh_node("b", 6 * GB, wants=(BIG,), files=files, rtt={"a": 1.0, "c": 0.5})
    biggest = mesh_node("c", 9 * GB, files=files, rtt={"a": 1.0, "b": 1.0})
    plan = plan_mesh([small, larger, biggest])
    assert only(plan["b"]).role is Role.SPLIT_HOST
    assert only(plan["c"]).role is Role.SPLIT_WORKER
    # Two nodes suffice (6 + 9 ≥ 11): the other wanting node stands by.
    assert only(plan["a"]).role is Role.STANDBY
    assert "hosted on b" in only(plan["a"]).reasons[0]


def test_equal_memory_hosts_on_the_higher_node_id() -> None:
    files = disk(BIG, 10 * GB)
    plan = plan_mesh(
        [
            mesh_node("n1", 6 * GB, wants=(BIG,), files=files, rtt={"n2": 1.0}),
            mesh_node("n2", 6 * GB, wants=(BIG,), files=files, rtt={"n1": 1.0}),
        ]
    )
    assert only(plan["n2"]).role is Role.SPLIT_HOST
    assert only(plan["n1"]).role is Role.SPLIT_WORKER


def test_only_identical_copies_join_and_a_different_one_is_named() -> None:
    host = mesh_node("h", 8 * GB, wants=(BIG,), files=disk(BIG, 10 * GB), rtt={"x": 1.0, "y": 9.0})
    other_quant = mesh_node("x", 40 * GB, files=disk(BIG, 10 * GB, sha256=SHA_B))
    same = mesh_node("y", 6 * GB, files=disk(BIG, 10 * GB))
    plan = plan_mesh([host, other_quant, same])
    assert [s.node_id for s in only(plan["h"]).shares] == ["h", "y"]
    assert plan["x"] == []
    assert any("x has a different file" in reason for reason in only(plan["h"]).reasons)


def test_a_peer_past_the_rtt_cap_stays_out_and_the_reason_says_so() -> None:
    host = mesh_node("h", 8 * GB, wants=(BIG,), files=disk(BIG, 10 * GB), rtt={"far": 95.0})
    far = mesh_node("far", 64 * GB, files=disk(BIG, 10 * GB))
    assignment = only(plan_mesh([host, far])["h"])
    assert assignment.role is Role.DOES_NOT_FIT
    assert assignment.reasons == (
        "does not fit: no peer with an identical copy within 80 ms to split with",
        "far is 95.0 ms from the host, above the 80 ms cap",
        "does not fit alone: needs 11.00 GB (1.1 × 10.00 GB), 8.00 GB free",
    )


def test_the_cap_itself_is_allowed() -> None:
    host = mesh_node("h", 8 * GB, wants=(BIG,), files=disk(BIG, 10 * GB), rtt={"w": SPLIT_RTT_CAP_MS})
    worker = mesh_node("w", 8 * GB, files=disk(BIG, 10 * GB))
    assert only(plan_mesh([host, worker])["w"]).role is Role.SPLIT_WORKER


def test_rtt_falls_back_to_the_workers_report_of_the_host() -> None:
    host = mesh_node("h", 8 * GB, wants=(BIG,), files=disk(BIG, 10 * GB))
    near = mesh_node("near", 8 * GB, files=disk(BIG, 10 * GB), rtt={"h": 3.0})
    far = mesh_node("far", 8 * GB, files=disk(BIG, 10 * GB), rtt={"h": 120.0})
    unknown = mesh_node("unknown", 8 * GB, files=disk(BIG, 10 * GB))
    plan = plan_mesh([host, near, far, unknown])
    assert only(plan["near"]).role is Role.SPLIT_WORKER
    assert plan["far"] == [] and plan["unknown"] == []
    assert "unknown has no RTT measured to the host yet" in only(plan["h"]).reasons


def test_the_hosts_own_measurement_wins_over_the_workers() -> None:
    host = mesh_node("h", 8 * GB, wants=(BIG,), files=disk(BIG, 10 * GB), rtt={"w": 90.0})
    worker = mesh_node("w", 8 * GB, files=disk(BIG, 10 * GB), rtt={"h": 1.0})
    assert only(plan_mesh([host, worker])["h"]).role is Role.DOES_NOT_FIT


def test_workers_are_added_nearest_first_and_only_as_many_as_needed() -> None:
    rtt = {"w1": 30.0, "w2": 4.0, "w3": 4.0, "w4": 1.0}
    host = mesh_node("h", 5 * GB, wants=(BIG,), files=disk(BIG, 10 * GB), rtt=rtt)
    workers = [mesh_node(w, 3 * GB, files=disk(BIG, 10 * GB)) for w in rtt]
    on_host = only(plan_mesh([host, *workers])["h"])
    # 5 + 3 + 3 = 11 GB: the two nearest; equal RTT goes to the lower id.
    assert [s.node_id for s in on_host.shares] == ["h", "w4", "w2"]
    assert tensor_split_for(on_host.shares, ["w4", "w2"], "h") == [3 / 11, 3 / 11, on_host.shares[0].fraction]


def test_too_little_capacity_waits_and_says_how_much_is_missing() -> None:
    host = mesh_node("h", 4 * GB, wants=(BIG,), files=disk(BIG, 10 * GB), rtt={"w": 2.0})
    worker = mesh_node("w", 3 * GB, files=disk(BIG, 10 * GB))
    plan = plan_mesh([host, worker])
    assignment = only(plan["h"])
    assert assignment.role is Role.WAITING
    assert assignment.reasons[0] == "waiting for capacity: group has 7.00 GB of the 11.00 GB needed"
    assert assignment.shares == ()
    assert plan["w"] == []  # nothing to run for a group that cannot start


def test_clients_and_leaving_nodes_never_take_part() -> None:
    files = disk(BIG, 10 * GB)
    host = mesh_node("h", 8 * GB, wants=(BIG,), files=files, rtt={"c": 1.0, "l": 1.0})
    client = mesh_node("c", 64 * GB, wants=(BIG,), files=files, client=True)
    leaving = mesh_node("l", 64 * GB, wants=(BIG,), files=files, leaving=True)
    plan = plan_mesh([host, client, leaving])
    assert set(plan) == {"h"}
    assert only(plan["h"]).role is Role.DOES_NOT_FIT
    assert plan_for_node([host, client, leaving], "c") == []
    [on_leaving] = plan_for_node([host, client, leaving], "l")
    assert on_leaving.role is Role.STANDBY and "leaving" in on_leaving.reasons[0]


def test_a_model_served_solo_elsewhere_puts_a_small_node_on_standby() -> None:
    files = disk(BIG, 10 * GB)
    big = mesh_node("big", 16 * GB, wants=(BIG,), files=files, rtt={"small": 1.0})
    small = mesh_node("small", 4 * GB, wants=(BIG,), files=files)
    plan = plan_mesh([big, small])
    assert only(plan["big"]).role is Role.SOLO
    standby = only(plan["small"])
    assert standby.role is Role.STANDBY
    assert standby.reasons[0] == "served solo by big"
    assert "does not fit alone" in standby.reasons[1]


def test_every_node_that_fits_runs_its_own_copy() -> None:
    files = disk(BIG, 10 * GB)
    plan = plan_mesh([mesh_node(n, 16 * GB, wants=(BIG,), files=files) for n in ("a", "b")])
    assert [only(plan[n]).role for n in ("a", "b")] == [Role.SOLO, Role.SOLO]


def test_a_node_without_the_file_waits_for_it() -> None:
    [assignment] = plan_for_node([mesh_node("h", 64 * GB, wants=(BIG,))], "h")
    assert assignment.role is Role.WAITING
    assert "not on this node's disk" in assignment.reasons[-1]


def test_an_unhashed_file_runs_solo_but_never_splits() -> None:
    unhashed = disk(BIG, 10 * GB, sha256=UNHASHED)
    assert only(plan_for_node([mesh_node("h", 12 * GB, wants=(BIG,), files=unhashed)], "h")).role is Role.SOLO
    host = mesh_node("h", 8 * GB, wants=(BIG,), files=unhashed, rtt={"w": 1.0})
    worker = mesh_node("w", 8 * GB, files=disk(BIG, 10 * GB))
    waiting = only(plan_mesh([host, worker])["h"])
    assert waiting.role is Role.WAITING and "content hash is not known yet" in waiting.reasons[-1]
    hashed_host = mesh_node("h", 8 * GB, wants=(BIG,), files=disk(BIG, 10 * GB), rtt={"w": 1.0})
    unhashed_worker = mesh_node("w", 8 * GB, files=unhashed)
    reasons = only(plan_mesh([hashed_host, unhashed_worker])["h"]).reasons
    assert "w has the file but its content hash is not known yet" in reasons


def test_forced_split_splits_a_model_that_would_fit() -> None:
    host = mesh_node("h", 64 * GB, wants=(BIG,), files=disk(BIG, 10 * GB), rtt={"w1": 1.0, "w2": 2.0})
    workers = [mesh_node(w, 8 * GB, files=disk(BIG, 10 * GB)) for w in ("w1", "w2")]
    assert only(plan_for_node([host, *workers], "h")).role is Role.SOLO
    forced = only(plan_for_node([replace(host, force_split=True), *workers], "h"))
    assert forced.role is Role.SPLIT_HOST
    assert [s.node_id for s in forced.shares] == ["h", "w1"]  # one worker is enough to be a split


def test_forced_split_alone_waits_for_peers() -> None:
    lonely = mesh_node("h", 64 * GB, wants=(BIG,), files=disk(BIG, 10 * GB), force_split=True)
    assignment = only(plan_for_node([lonely], "h"))
    assert assignment.role is Role.WAITING and assignment.reasons[0] == FORCED_SPLIT_WAITING


def test_forced_split_beside_a_solo_server_still_splits() -> None:
    files = disk(BIG, 10 * GB)
    solo = mesh_node("s", 64 * GB, wants=(BIG,), files=files, rtt={"h": 1.0, "w": 1.0})
    forced = mesh_node("h", 8 * GB, wants=(BIG,), files=files, rtt={"w": 1.0}, force_split=True)
    worker = mesh_node("w", 8 * GB, files=files)
    plan = plan_mesh([solo, forced, worker])
    assert only(plan["s"]).role is Role.SOLO
    assert only(plan["h"]).role is Role.SPLIT_HOST
    # The solo server already holds the whole model: it is never also a worker for it.
    assert [s.node_id for s in only(plan["h"]).shares] == ["h", "w"]


def test_solo_models_come_first_and_a_worker_lends_only_what_is_left() -> None:
    own = "own"
    host = mesh_node("h", 8 * GB, wants=(BIG,), files=disk(BIG, 10 * GB), rtt={"w": 1.0})
    files = {**disk(BIG, 10 * GB), **disk(own, 5 * GB)}
    worker = mesh_node("w", 14 * GB, wants=(own,), files=files)
    plan = plan_mesh([host, worker])
    assert [a.role for a in plan["w"]] == [Role.SOLO, Role.SPLIT_WORKER]
    [_, share] = only(plan["h"]).shares
    # 14 GB − 5.5 GB for its own model leaves 8.5 GB to lend: shares ∝ 8 : 8.5.
    assert math.isclose(share.fraction, 8.5 / 16.5)


def test_a_worker_for_one_model_has_less_for_the_next() -> None:
    first, second = "a-model", "b-model"
    both = {**disk(first, 10 * GB), **disk(second, 10 * GB)}
    h1 = mesh_node("h1", 8 * GB, wants=(first,), files=both, rtt={"w": 1.0})
    h2 = mesh_node("h2", 8 * GB, wants=(second,), files=both, rtt={"w": 1.0})
    worker = mesh_node("w", 6 * GB, files=both)
    plan = plan_mesh([h1, h2, worker])
    assert only(plan["h1"]).role is Role.SPLIT_HOST  # models are placed in name order
    # The worker spent 6/14 of a-model's 11 GB (4.71 GB) and has 1.29 GB left for b-model.
    waiting = only(plan["h2"])
    assert waiting.role is Role.WAITING
    assert waiting.reasons[0] == "waiting for capacity: group has 9.29 GB of the 11.00 GB needed"
    assert [a.model for a in plan["w"]] == [first]


def test_plan_for_node_lists_wanted_models_then_worker_roles() -> None:
    files = {**disk("z", 10 * GB), **disk("a", 1 * GB)}
    host = mesh_node("h", 8 * GB, wants=("z",), files=files, rtt={"w": 1.0})
    worker = mesh_node("w", 8 * GB, wants=("a",), files=files)
    assert [(a.model, a.role) for a in plan_for_node([host, worker], "w")] == [
        ("a", Role.SOLO),
        ("z", Role.SPLIT_WORKER),
    ]
    assert plan_for_node([host, worker], "nobody") == []


def test_a_repeated_node_id_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        plan_mesh([mesh_node("h", GB), mesh_node("h", 2 * GB)])


def test_a_long_exclusion_list_is_cut_short() -> None:
    far = {f"far{i:02d}": 200.0 for i in range(12)}
    host = mesh_node("h", 8 * GB, wants=(BIG,), files=disk(BIG, 10 * GB), rtt=far)
    peers = [mesh_node(n, 8 * GB, files=disk(BIG, 10 * GB)) for n in far]
    reasons = only(plan_mesh([host, *peers])["h"]).reasons
    assert reasons[-2] == "… and 7 more nodes excluded"
    assert len(reasons) == 1 + 5 + 1 + 1


def test_form_split_group_reports_capacity_and_order() -> None:
    host = mesh_node("h", 4 * GB, files=disk(BIG, 10 * GB), rtt={"a": 9.0, "b": 2.0})
    peers = [mesh_node(n, 8 * GB, files=disk(BIG, 10 * GB)) for n in ("a", "b")]
    group = form_split_group(host, BIG, [host, *peers], {"h": 4 * GB, "a": 8 * GB, "b": 8 * GB})
    assert group.workers == ("b",) and group.rtt_ms == (2.0,)
    assert group.capacity_bytes == 12 * GB and group.needed_bytes == 11 * GB and group.complete


def test_layer_shares_sum_exactly_and_the_host_takes_the_remainder() -> None:
    shares = layer_shares([("h", 3), ("a", 3), ("b", 3)], 10)
    assert [s.bytes for s in shares] == [4, 3, 3]
    assert math.isclose(sum(s.fraction for s in shares), 1.0)
    with pytest.raises(ValueError):
        layer_shares([("h", 0)], 10)


def test_tensor_split_lists_rpc_workers_then_the_host() -> None:
    shares = (LayerShare("h", 0.5, 5), LayerShare("a", 0.2, 2), LayerShare("b", 0.3, 3))
    assert tensor_split_for(shares, ["b", "a"], "h") == [0.3, 0.2, 0.5]
    with pytest.raises(ValueError):
        tensor_split_for(shares, ["a"], "h")
    with pytest.raises(ValueError):
        tensor_split_for(shares, ["a", "b", "c"], "h")
    with pytest.raises(ValueError):
        tensor_split_for(shares, ["a", "a"], "h")


def test_disk_file_is_a_plain_tuple() -> None:
    assert DiskFile(SHA_A, 1, "/p") == (SHA_A, 1, "/p")


def test_a_peer_whose_memory_went_to_its_own_model_is_named() -> None:
    own = "own"
    host = mesh_node("h", 8 * GB, wants=(BIG,), files=disk(BIG, 10 * GB), rtt={"w": 1.0})
    busy = mesh_node("w", 11 * GB, wants=(own,), files={**disk(BIG, 10 * GB), **disk(own, 10 * GB)})
    plan = plan_mesh([host, busy])
    assert "w has no memory free (its other models took it)" in only(plan["h"]).reasons
    assert [a.role for a in plan["w"]] == [Role.SOLO]


def test_no_wanting_node_able_to_host_waits_or_stands_by() -> None:
    files = disk(BIG, 10 * GB)
    solo = mesh_node("s", 64 * GB, wants=(BIG,), files=files)
    forced_without_file = mesh_node("h", 8 * GB, wants=(BIG,), force_split=True)
    plan = plan_mesh([solo, forced_without_file])
    assert only(plan["h"]).role is Role.STANDBY
    assert only(plan["h"]).reasons[:2] == ("served solo by s", "no node that wants it can host a split yet")
    assert only(plan_mesh([forced_without_file])["h"]).role is Role.WAITING


def test_host_and_workers_read_the_same_plan_from_their_own_rows() -> None:
    files = disk(BIG, 10 * GB)
    nodes = [
        mesh_node("h", 6 * GB, wants=(BIG,), files=files, rtt={"w1": 3.0, "w2": 1.0}),
        mesh_node("w1", 3 * GB, files=files),
        mesh_node("w2", 3 * GB, files=files),
    ]
    rows = {n.node_id: only(plan_for_node(nodes, n.node_id)) for n in nodes}
    assert {a.host_node_id for a in rows.values()} == {"h"}
    assert len({a.shares for a in rows.values()}) == 1
    shares = rows["h"].shares
    workers = [s.node_id for s in shares[1:]]
    assert workers == ["w2", "w1"]
    assert math.isclose(math.fsum(tensor_split_for(shares, workers, "h")), 1.0)
