"""Typed console events from two mesh snapshots: pure, so a unit test drives it with hand-made states.

Every event carries the whole changed object (a peer, a model, the plan), so a browser applies it as an
upsert and an event that arrives after a newer snapshot does no harm.
"""

from __future__ import annotations

from dataclasses import asdict

from services.gateway.events import ConsoleEvent, EventKind
from services.gateway.mesh_summary import MeshModel, MeshSnapshot, PeerSummary

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


def diff_snapshots(old: MeshSnapshot, new: MeshSnapshot) -> list[ConsoleEvent]:
    """What a console that saw `old` needs to know to show `new`, in a sensible order: nodes first."""
    events: list[ConsoleEvent] = []
    if old.node != new.node:
        events.append(ConsoleEvent(EventKind.NODE_UPDATED, asdict(new.node)))
    events.extend(_peer_events(old.peers, new.peers))
    if old.roles != new.roles:
        events.append(ConsoleEvent(EventKind.PLAN_CHANGED, {"roles": [asdict(r) for r in new.roles]}))
    events.extend(_model_events(old.models, new.models))
    return events
