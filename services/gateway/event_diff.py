"""Typed console events from two mesh snapshots: pure, so a unit test drives it with hand-made states.

Every event carries the whole changed object (a peer, a model, the plan), so a browser applies it as an
upsert and an event that arrives after a newer snapshot does no harm.
"""

from __future__ import annotations

from dataclasses import asdict

from services.gateway.events import ConsoleEvent, EventKind
from services.gateway.mesh_summary import MeshModel, MeshSnapshot, PeerSummary
from services.gateway.pool_summary import Adoption, PoolEvent

MODEL_GONE_STATE = "gone"


def _peer_events(old: tuple[PeerSummary, ...], new: tuple[PeerSummary, ...]) -> list[ConsoleEvent]:
    before = {p.node_id: p for p in old}
    after = {p.node_id: p for p in new}
    events = [
        ConsoleEvent(EventKind.PEER_LEFT, {"node_id": p.node_id, "short_id": p.short_id, "name": p.name})
        for node_id, p in before.items()
        if node_id not in after
    ]
    for node_id, peer in after.items():
        previous = before.get(node_id)
        if previous is None:
            events.append(ConsoleEvent(EventKind.PEER_JOINED, asdict(peer)))
        elif previous != peer:
            events.append(ConsoleEvent(EventKind.PEER_UPDATED, asdict(peer)))
    return events


def _model_events(old: tuple[MeshModel, ...], new: tuple[MeshModel, ...]) -> list[ConsoleEvent]:
    before = {m.model: m for m in old}
    after = {m.model: m for m in new}
    events = [
        ConsoleEvent(EventKind.MODEL_STATE, {"model": model, "state": MODEL_GONE_STATE})
        for model in before
        if model not in after
    ]
    for model, entry in after.items():
        previous = before.get(model)
        if previous == entry:
            continue
        events.append(ConsoleEvent(EventKind.MODEL_STATE, asdict(entry)))
        if entry.state == "ready" and (previous is None or previous.state != "ready"):
            events.append(ConsoleEvent(EventKind.MODEL_READY, asdict(entry)))
    return events


def _node_ref(node: PeerSummary) -> dict[str, str]:
    return {"node_id": node.node_id, "short_id": node.short_id, "name": node.name}


def _pool_event(node: PeerSummary, event: PoolEvent) -> ConsoleEvent:
    data = {**asdict(event), **_node_ref(node)}
    return ConsoleEvent(EventKind.POOL_EVENT, data)


def _adoption_events(old: PeerSummary, new: PeerSummary) -> list[ConsoleEvent]:
    """A peer's promotions and retirements, read off its adoptions (its plan's events are its own)."""
    before: dict[str, Adoption] = {a.model: a for a in old.adopted}
    after: dict[str, Adoption] = {a.model: a for a in new.adopted}
    events = []
    for model, adoption in after.items():
        if model not in before:
            kind = "loaded" if adoption.by_hand else "promoted"
            events.append(_pool_event(new, PoolEvent(adoption.since_unix_s, model, kind, adoption.reason)))
    for model, adoption in before.items():
        if model not in after:
            kind = "dropped" if adoption.by_hand else "retired"
            events.append(_pool_event(new, PoolEvent(0.0, model, kind, "")))
    return events


def _pool_events(old: MeshSnapshot, new: MeshSnapshot) -> list[ConsoleEvent]:
    seen = set(old.pool_events)
    events = [_pool_event(new.node, e) for e in new.pool_events if e not in seen]
    before = {p.node_id: p for p in old.peers}
    for peer in new.peers:
        previous = before.get(peer.node_id)
        if previous is not None and previous.adopted != peer.adopted:
            events.extend(_adoption_events(previous, peer))
    if old.pool != new.pool:
        events.append(ConsoleEvent(EventKind.POOL_CHANGED, {"pool": [asdict(m) for m in new.pool]}))
    return events


def _transfer_events(old: MeshSnapshot, new: MeshSnapshot) -> list[ConsoleEvent]:
    before = {n.node_id: n.fetching for n in (old.node, *old.peers)}
    return [
        ConsoleEvent(
            EventKind.TRANSFER_PROGRESS,
            {**_node_ref(node), "fetching": [asdict(t) for t in node.fetching]},
        )
        for node in (new.node, *new.peers)
        if node.fetching != before.get(node.node_id, ())
    ]


def diff_snapshots(old: MeshSnapshot, new: MeshSnapshot) -> list[ConsoleEvent]:
    """What a console that saw `old` needs to know to show `new`, in a sensible order: nodes first."""
    events: list[ConsoleEvent] = []
    if old.node != new.node:
        events.append(ConsoleEvent(EventKind.NODE_UPDATED, asdict(new.node)))
    events.extend(_peer_events(old.peers, new.peers))
    events.extend(_pool_events(old, new))
    events.extend(_transfer_events(old, new))
    if old.roles != new.roles:
        events.append(ConsoleEvent(EventKind.PLAN_CHANGED, {"roles": [asdict(r) for r in new.roles]}))
    events.extend(_model_events(old.models, new.models))
    return events
