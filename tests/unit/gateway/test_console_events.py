"""Mesh snapshots from gossip views, and the typed events between two of them (no sockets)."""

from __future__ import annotations

from services.gateway.event_diff import MODEL_GONE_STATE, diff_snapshots
from services.gateway.events import EventBus, EventKind
from services.gateway.mesh_summary import mesh_snapshot
from services.gateway.routing import LocalServer, PlannedModel, PlanRole, RoutingTable, ServerState
from services.gateway.sources import RoutingSources
from services.proto.meshllm.gossip.v1 import gossip_pb2

ME, PEER_B, PEER_C = "a" * 64, "b" * 64, "c" * 64
GiB = 1 << 30


def record(node_id: str, name: str, **kwargs) -> gossip_pb2.NodeRecord:  # type: ignore[no-untyped-def]
    return gossip_pb2.NodeRecord(node_id=node_id, name=name, vram_bytes=8 * GiB, **kwargs)


def serving(model: str, state: int = gossip_pb2.SERVE_STATE_READY) -> gossip_pb2.ServedModel:
    return gossip_pb2.ServedModel(name=model, role=gossip_pb2.MODEL_ROLE_SOLO, state=state)


def view(*peers: gossip_pb2.NodeRecord, rtt: dict[str, float] | None = None) -> gossip_pb2.MeshView:
    me = record(ME, "alpha", rtt_ms=rtt or {}, served=[serving("tiny-x")])
    return gossip_pb2.MeshView(local_node_id=ME, nodes=[me, *peers])


def snapshot_of(mesh: gossip_pb2.MeshView, plan: tuple[PlannedModel, ...] = ()):  # type: ignore[no-untyped-def]
    local = LocalServer("tiny-x", ServerState.READY, "127.0.0.1", 9000)
    table = RoutingTable.build([local], plan, (), ME)
    return mesh_snapshot(mesh, table.entries, plan)


def kinds(events) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.kind.value for e in events]


def test_snapshot_describes_this_node_peers_and_models() -> None:
    b = record(PEER_B, "beta", served=[serving("tiny-y", gossip_pb2.SERVE_STATE_LOADING)])
    c = record(PEER_C, "gamma", is_client=True)
    snap = snapshot_of(view(b, c, rtt={PEER_B: 1.234}))
    assert snap.node.node_id == ME and snap.node.short_id == ME[:8] and snap.node.name == "alpha"
    assert [p.name for p in snap.peers] == ["beta", "gamma"]
    assert snap.peers[0].rtt_ms == 1.2 and snap.peers[1].is_client
    assert snap.peers[0].served[0].state == "loading"
    by_model = {m.model: m for m in snap.models}
    assert by_model["tiny-x"].state == "ready" and by_model["tiny-x"].nodes == (ME,)
    # Only gossip knows Y, and nobody has it ready yet.
    assert by_model["tiny-y"].state == "loading" and by_model["tiny-y"].nodes == ()
    assert by_model["tiny-y"].placements[0].node_id == PEER_B


def test_a_joining_and_a_leaving_peer_are_events() -> None:
    before = snapshot_of(view(record(PEER_B, "beta")))
    after = snapshot_of(view(record(PEER_C, "gamma")))
    events = diff_snapshots(before, after)
    assert kinds(events) == ["peer_left", "peer_joined"]
    assert events[0].data == {"node_id": PEER_B, "short_id": PEER_B[:8], "name": "beta"}
    assert events[1].data["name"] == "gamma" and events[1].data["short_id"] == PEER_C[:8]


def test_a_goodbye_counts_as_leaving() -> None:
    before = snapshot_of(view(record(PEER_B, "beta")))
    after = snapshot_of(view(record(PEER_B, "beta", leaving=True)))
    assert kinds(diff_snapshots(before, after)) == ["peer_left"]


def test_rtt_change_is_a_peer_update_and_no_change_is_silence() -> None:
    before = snapshot_of(view(record(PEER_B, "beta"), rtt={PEER_B: 1.0}))
    after = snapshot_of(view(record(PEER_B, "beta"), rtt={PEER_B: 7.0}))
    assert kinds(diff_snapshots(before, before)) == []
    events = diff_snapshots(before, after)
    assert "peer_updated" in kinds(events)
    update = next(e for e in events if e.kind is EventKind.PEER_UPDATED)
    assert update.data["rtt_ms"] == 7.0


def test_model_becoming_ready_is_a_state_and_a_ready_event() -> None:
    loading = record(PEER_B, "beta", served=[serving("tiny-y", gossip_pb2.SERVE_STATE_LOADING)])
    ready = record(PEER_B, "beta", served=[serving("tiny-y")])
    events = diff_snapshots(snapshot_of(view(loading)), snapshot_of(view(ready)))
    model_events = [e for e in events if e.kind in (EventKind.MODEL_STATE, EventKind.MODEL_READY)]
    assert kinds(model_events) == ["model_state", "model_ready"]
    assert model_events[1].data["model"] == "tiny-y" and list(model_events[1].data["nodes"]) == [PEER_B]


def test_a_model_nobody_has_any_more_is_gone() -> None:
    before = snapshot_of(view(record(PEER_B, "beta", served=[serving("tiny-y")])))
    after = snapshot_of(view(record(PEER_B, "beta")))
    gone = [e for e in diff_snapshots(before, after) if e.kind is EventKind.MODEL_STATE]
    assert gone[0].data == {"model": "tiny-y", "state": MODEL_GONE_STATE}


def test_plan_change_is_an_event() -> None:
    mesh = view()
    before = snapshot_of(mesh, (PlannedModel("tiny-x", PlanRole.SOLO),))
    after = snapshot_of(mesh, (PlannedModel("tiny-x", PlanRole.STANDBY, ("served elsewhere",)),))
    plan = [e for e in diff_snapshots(before, after) if e.kind is EventKind.PLAN_CHANGED]
    assert plan[0].data == {
        "roles": [{"model": "tiny-x", "role": "standby", "reasons": ("served elsewhere",)}]
    }


async def test_the_feed_publishes_diffs_of_routing_source_changes() -> None:
    from services.gateway.console_feed import ConsoleFeed
    from services.gateway.status import RequestCounters

    sources, bus = RoutingSources(), EventBus()
    counters = RequestCounters(clock=lambda: 0.0)
    ConsoleFeed(sources, counters, bus)
    await sources.on_view(view(record(PEER_B, "beta")))  # nobody listens: nothing is built
    subscription = bus.subscribe()
    await sources.on_view(view(record(PEER_B, "beta"), record(PEER_C, "gamma")))
    event = await subscription.next(1.0)
    assert event is not None and event.kind is EventKind.PEER_JOINED and event.data["name"] == "gamma"
    await sources.on_view(view(record(PEER_C, "gamma")))
    event = await subscription.next(1.0)
    assert event is not None and event.kind is EventKind.PEER_LEFT and event.data["node_id"] == PEER_B


async def test_gateway_log_lines_become_log_events_from_any_thread() -> None:
    import asyncio
    import logging
    import threading

    from services.gateway.console_feed import install_log_events, remove_log_events

    bus = EventBus()
    handler = install_log_events(bus, "gateway.test")
    try:
        subscription = bus.subscribe()
        logging.getLogger("gateway.test.routing").warning("routes: %s", "tiny=ready")
        event = await subscription.next(1.0)
        assert event is not None and event.kind is EventKind.LOG
        assert event.data["level"] == "warning" and event.data["message"] == "routes: tiny=ready"
        worker = threading.Thread(target=lambda: logging.getLogger("gateway.test").warning("from a thread"))
        worker.start()
        await asyncio.to_thread(worker.join)
        event = await subscription.next(1.0)
        assert event is not None and event.data["message"] == "from a thread"
    finally:
        remove_log_events(handler, "gateway.test")
