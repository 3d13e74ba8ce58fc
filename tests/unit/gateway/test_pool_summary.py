"""The pool as the console shows it: roles, adoptions, transfers, the plan's pool and its events."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from services.gateway.event_diff import diff_snapshots
from services.gateway.events import EventKind
from services.gateway.mesh_summary import mesh_snapshot
from services.gateway.pool_summary import (
    STANDBY_REASON,
    PlanPool,
    PoolEvent,
    eta_s,
    gossip_pool,
    local_role,
    plan_pool,
    pool_models,
    record_role,
    transfers,
)
from services.gateway.routing import PlannedModel, PlanRole
from services.gateway.sources import RoutingSources
from services.proto.meshllm.gossip.v1 import gossip_pb2
from services.proto.meshllm.placement.v1 import placement_pb2

ME, B, C = "a" * 64, "b" * 64, "c" * 64
X = "tiny-x"
MB = 1_000_000


def serving(model: str = X, role: int = gossip_pb2.MODEL_ROLE_SOLO) -> gossip_pb2.ServedModel:
    return gossip_pb2.ServedModel(name=model, role=role, state=gossip_pb2.SERVE_STATE_READY)


def record(node_id: str, name: str, **kwargs) -> gossip_pb2.NodeRecord:  # type: ignore[no-untyped-def]
    return gossip_pb2.NodeRecord(node_id=node_id, name=name, vram_bytes=8 << 30, **kwargs)


def fetch(done: int, total: int = 100 * MB, rate: float = 10.0 * MB) -> gossip_pb2.FileTransfer:
    return gossip_pb2.FileTransfer(
        name=f"{X}.gguf", sha256="ab" * 32, bytes_total=total, bytes_done=done, bytes_per_s=rate,
        source_node_ids=[ME],
    )  # fmt: skip


def view(*peers: gossip_pb2.NodeRecord, me: gossip_pb2.NodeRecord | None = None) -> gossip_pb2.MeshView:
    return gossip_pb2.MeshView(local_node_id=ME, nodes=[me or record(ME, "alpha"), *peers])


STANDBY_PLAN = placement_pb2.Plan(
    node_id=ME, standby=True, standby_reason="standby: serves nothing until the mesh needs it (8 GB offered)"
)


def test_a_peer_serving_nothing_that_is_no_client_is_a_standby() -> None:
    assert record_role(record(B, "b")).role == "standby"
    assert record_role(record(B, "b")).standby_reason == STANDBY_REASON
    assert record_role(record(B, "b", is_client=True)).role == "client"
    assert record_role(record(B, "b", served=[serving()])).role == "serving"
    worker = serving(role=gossip_pb2.MODEL_ROLE_SPLIT_WORKER)
    assert record_role(record(B, "b", served=[worker])).role == "serving"
    assert record_role(record(B, "b", fetching=[fetch(0)])).role == "fetching"


def test_this_node_takes_its_role_from_the_plan() -> None:
    mine = record(ME, "alpha")
    role = local_role(mine, plan_pool(STANDBY_PLAN))
    assert role.standby and role.standby_reason == STANDBY_PLAN.standby_reason
    solo = placement_pb2.Plan(assignments=[placement_pb2.Assignment(model=X, role=1)])
    assert local_role(mine, plan_pool(solo)).role == "serving"
    fetching = placement_pb2.Assignment(model=X, role=placement_pb2.ASSIGNMENT_ROLE_FETCHING)
    assert local_role(mine, plan_pool(placement_pb2.Plan(assignments=[fetching]))).role == "fetching"
    assert local_role(mine, PlanPool(), is_client=True).role == "client"
    # Promoted, the flag not yet cleared: the assignment wins.
    lagging = placement_pb2.Plan()
    lagging.CopyFrom(STANDBY_PLAN)
    lagging.assignments.append(placement_pb2.Assignment(model=X, role=1))
    assert local_role(mine, plan_pool(lagging)).role == "serving"


def test_without_the_standby_flag_a_node_serving_nothing_is_still_shown_as_standby() -> None:
    # A plan that says only "served elsewhere" (a placement that predates the flag).
    elsewhere = placement_pb2.Assignment(
        model=X, role=placement_pb2.ASSIGNMENT_ROLE_STANDBY, reasons=["tiny-x is served by bravo"]
    )
    role = local_role(record(ME, "alpha"), plan_pool(placement_pb2.Plan(assignments=[elsewhere])))
    assert role.standby and role.standby_reason == "tiny-x is served by bravo"
    assert local_role(record(ME, "alpha"), PlanPool()).standby  # no plan yet: as a peer would see it


@pytest.mark.parametrize(
    ("total", "done", "rate", "eta"),
    [(100, 50, 10.0, 5.0), (100, 100, 0.0, 0.0), (100, 0, 0.0, None), (0, 0, 5.0, None)],
)
def test_eta_of_a_transfer(total: int, done: int, rate: float, eta: float | None) -> None:
    assert eta_s(total, done, rate) == eta


def test_transfers_carry_bytes_rate_eta_and_sources() -> None:
    [transfer] = transfers(record(B, "b", fetching=[fetch(40 * MB)]))
    assert (transfer.bytes_done, transfer.bytes_total, transfer.bytes_per_s) == (40 * MB, 100 * MB, 10.0 * MB)
    assert transfer.eta_s == 6.0 and transfer.source_node_ids == (ME,) and transfer.error == ""


def test_the_plan_pool_and_events_mirror_the_proto() -> None:
    plan = placement_pb2.Plan(
        node_id=ME,
        pool=[
            placement_pb2.ModelPool(
                model=X, server_node_ids=[B], candidate_node_ids=[ME, C], requests_per_min=30.0,
                requests_per_min_per_server=30.0, reasons=["hot: 30 req/min per server"],
            )
        ],
        events=[placement_pb2.PoolEvent(at_unix_s=1.5, model=X, kind="promoted", reason="hot")],
    )  # fmt: skip
    pool = plan_pool(plan)
    [model] = pool.models
    assert (model.servers, model.candidates, model.requests_per_min_per_server) == ((B,), (ME, C), 30.0)
    assert pool.events == (PoolEvent(1.5, X, "promoted", "hot", ME),)
    assert pool_models(pool, view()) == pool.models


def test_without_a_plan_pool_gossip_gives_servers_and_summed_demand() -> None:
    mesh = view(
        record(B, "b", served=[serving()], request_rate_per_min={X: 10.0}),
        record(C, "c", served=[serving()]),
        record("d" * 64, "client", is_client=True, request_rate_per_min={X: 20.0}),
        me=record(ME, "alpha", request_rate_per_min={"y": 1.0}),
    )
    by_model = {m.model: m for m in gossip_pool(mesh)}
    assert by_model[X].servers == (B, C) and by_model[X].requests_per_min == 30.0
    assert by_model[X].requests_per_min_per_server == 15.0
    assert by_model["y"].servers == () and by_model["y"].requests_per_min == 1.0


def snapshot(mesh: gossip_pb2.MeshView, plan: placement_pb2.Plan | None = None):  # type: ignore[no-untyped-def]
    pool = plan_pool(plan) if plan is not None else PlanPool()
    return mesh_snapshot(mesh, (), (PlannedModel(X, PlanRole.STANDBY),), None, pool)


def test_snapshots_show_roles_adoptions_and_transfers_per_node() -> None:
    adopted = gossip_pb2.Adoption(model=X, reason="tiny-x is hot", since_unix_s=5.0)
    snap = snapshot(view(record(B, "b", adopted=[adopted], fetching=[fetch(1)])), STANDBY_PLAN)
    assert snap.node.role == "standby" and snap.node.standby
    assert snap.node.standby_reason == STANDBY_PLAN.standby_reason
    [peer] = snap.peers
    assert peer.role == "fetching" and not peer.standby and peer.adopted[0].reason == "tiny-x is hot"
    data = asdict(peer)
    assert data["fetching"][0]["bytes_done"] == 1 and data["adopted"][0]["model"] == X


def test_a_peer_taking_a_model_up_and_giving_it_back_are_pool_events() -> None:
    standby = snapshot(view(record(B, "bravo")))
    adopted = gossip_pb2.Adoption(model=X, reason="tiny-x is hot", since_unix_s=5.0)
    promoted = snapshot(view(record(B, "bravo", adopted=[adopted], served=[serving()])))
    [event] = [e for e in diff_snapshots(standby, promoted) if e.kind is EventKind.POOL_EVENT]
    assert event.data == {
        "at_unix_s": 5.0, "model": X, "kind": "promoted", "reason": "tiny-x is hot",
        "node_id": B, "short_id": B[:8], "name": "bravo",
    }  # fmt: skip
    [event] = [e for e in diff_snapshots(promoted, standby) if e.kind is EventKind.POOL_EVENT]
    assert (event.data["kind"], event.data["model"], event.data["node_id"]) == ("retired", X, B)


def test_new_plan_events_and_a_changed_pool_are_events() -> None:
    mesh = view(record(B, "bravo", served=[serving()], request_rate_per_min={X: 3.0}))
    before = snapshot(mesh, STANDBY_PLAN)
    plan = placement_pb2.Plan()
    plan.CopyFrom(STANDBY_PLAN)
    plan.events.append(placement_pb2.PoolEvent(at_unix_s=9.0, model=X, kind="promoted", reason="hot"))
    plan.pool.append(placement_pb2.ModelPool(model=X, server_node_ids=[B, ME], requests_per_min=40.0))
    events = diff_snapshots(before, snapshot(mesh, plan))
    [pool_event] = [e for e in events if e.kind is EventKind.POOL_EVENT]
    assert pool_event.data["node_id"] == ME and pool_event.data["name"] == "alpha"
    [changed] = [e for e in events if e.kind is EventKind.POOL_CHANGED]
    assert changed.data["pool"][0]["servers"] == (B, ME)
    assert diff_snapshots(snapshot(mesh, plan), snapshot(mesh, plan)) == []


def test_transfer_progress_is_an_event_per_node_until_it_ends() -> None:
    start = snapshot(view(record(B, "bravo", fetching=[fetch(10 * MB)])))
    later = snapshot(view(record(B, "bravo", fetching=[fetch(60 * MB)])))
    done = snapshot(view(record(B, "bravo")))
    [progress] = [e for e in diff_snapshots(start, later) if e.kind is EventKind.TRANSFER_PROGRESS]
    assert progress.data["node_id"] == B and progress.data["fetching"][0]["bytes_done"] == 60 * MB
    assert progress.data["fetching"][0]["eta_s"] == 4.0
    [ended] = [e for e in diff_snapshots(later, done) if e.kind is EventKind.TRANSFER_PROGRESS]
    assert ended.data["fetching"] == []


async def test_sources_keep_the_plan_pool() -> None:
    sources = RoutingSources()
    await sources.on_plan(STANDBY_PLAN)
    assert sources.pool.received and sources.pool.standby
    await sources.on_placement_lost()
    assert sources.pool.standby  # the last word stays until placement is back
