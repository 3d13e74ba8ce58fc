"""This node's part of the pool: what it adopted or dropped, what it saw served, what it did and why.

Pure state (the caller passes the clock); placement/app.py persists it to <home>/pool.json so a
restarted placement service (or node) keeps its adoptions, and publishes it in gossip.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from services.node.home_files import HomeWriteError, write_home_file
from services.placement.pool import PoolDecision
from services.placement.view import Adopted, DiskFile, MeshNode, Seen

# A model's "last served" in our record moves at most this often: gossip stays quiet while a model
# is served, and a loss is judged against LOST_MODEL_MEMORY_S (an hour), not seconds.
SEEN_REFRESH_S = 60.0
# After `drop`, the pool does not hand this node the same model again for this long.
DROP_DECLINE_S = 600.0
MAX_EVENTS = 50
POOL_STATE_FILE = "pool.json"

logger = logging.getLogger("placement.pool_state")


class PoolEvent(NamedTuple):
    at_unix_s: float
    model: str
    kind: str  # promoted, retired, loaded, dropped, fetch_failed
    reason: str


@dataclass
class LocalPool:
    configured: tuple[str, ...]  # the models the node was started with
    adopted: dict[str, Adopted] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)  # configured models dropped by hand
    declined: dict[str, float] = field(default_factory=dict)  # model -> until (after a drop)
    seen: dict[str, Seen] = field(default_factory=dict)
    cold_since: dict[str, float] = field(default_factory=dict)
    events: deque[PoolEvent] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))

    @property
    def wanted(self) -> tuple[str, ...]:
        """What this node serves by choice: started with (not dropped), then adopted."""
        return tuple(dict.fromkeys([*(m for m in self.configured if m not in self.dropped), *self.adopted]))

    def overlay(self, nodes: Sequence[MeshNode], local_id: str) -> list[MeshNode]:
        """The view with our own row as we know it now (gossip echoes it back a moment later)."""
        return [
            replace(n, models_wanted=self.wanted, adopted=dict(self.adopted)) if n.node_id == local_id else n
            for n in nodes
        ]

    def note(self, now_s: float, model: str, kind: str, reason: str) -> PoolEvent:
        event = PoolEvent(now_s, model, kind, reason)
        self.events.append(event)
        return event

    def apply(self, decision: PoolDecision, local_id: str, now_s: float) -> list[PoolEvent]:
        """Take up what the rules gave this node, retire what they retired; what changed, as events."""
        changed: list[PoolEvent] = []
        for promotion in decision.promotions:
            if promotion.node_id != local_id or promotion.model in self.adopted:
                continue
            if self.declined.get(promotion.model, 0.0) > now_s:
                continue
            self.adopted[promotion.model] = Adopted(
                promotion.model, now_s, for_loss=promotion.for_loss, reason=promotion.reason
            )
            changed.append(self.note(now_s, promotion.model, "promoted", promotion.reason))
        for retirement in decision.retirements:
            if self.adopted.pop(retirement.model, None) is not None:
                changed.append(self.note(now_s, retirement.model, "retired", retirement.reason))
        self.cold_since = dict(decision.cold_since)
        return changed

    def load(self, model: str, now_s: float) -> str:
        self.declined.pop(model, None)
        if model in self.configured:
            self.dropped.discard(model)
            message = f"serving {model} again (this node was started with it)"
        elif model in self.adopted:
            self.adopted[model] = self.adopted[model]._replace(by_hand=True)
            message = f"already serving {model}; now kept until dropped"
        else:
            self.adopted[model] = Adopted(model, now_s, by_hand=True, reason="loaded by hand (mesh-llm load)")
            message = f"loading {model} on this node"
        self.note(now_s, model, "loaded", message)
        return message

    def drop(self, model: str, now_s: float, last_in_mesh: bool) -> str:
        self.adopted.pop(model, None)
        if model in self.configured:
            self.dropped.add(model)
        self.declined[model] = now_s + DROP_DECLINE_S
        if last_in_mesh:
            # Nobody restores it: a hand-dropped model is not a lost one.
            old = self.seen.get(model, Seen("", 0, now_s - 1))
            self.seen[model] = old._replace(dropped_unix_s=now_s)
            message = f"dropped {model}; it was the last server, so the mesh no longer serves it"
        else:
            message = f"dropped {model} here; other nodes keep serving it"
        self.note(now_s, model, "dropped", message)
        return message

    def update_seen(self, nodes: Sequence[MeshNode], now_s: float, memory_s: float) -> bool:
        """Remember models served now; copy peers' hand-drop markers; forget old ones. True if changed."""
        before = dict(self.seen)
        for model, file in _served_files(nodes).items():
            old = self.seen.get(model)
            if old is None or now_s - old.last_served_unix_s >= SEEN_REFRESH_S:
                dropped = old.dropped_unix_s if old else 0.0
                self.seen[model] = Seen(file.sha256, file.bytes, now_s, dropped)
        for node in nodes:
            for model, theirs in node.models_seen.items():
                mine = self.seen.get(model)
                if theirs.dropped_unix_s and (mine is None or theirs.dropped_unix_s > mine.dropped_unix_s):
                    base = mine or theirs
                    self.seen[model] = base._replace(dropped_unix_s=theirs.dropped_unix_s)
        for model in [
            m for m, s in self.seen.items() if now_s - max(s.last_served_unix_s, s.dropped_unix_s) > memory_s
        ]:
            del self.seen[model]
        return self.seen != before

    def to_json(self) -> str:
        return json.dumps(
            {
                "adopted": [a._asdict() for a in self.adopted.values()],
                "dropped": sorted(self.dropped),
                "declined": self.declined,
            }
        )

    def restore(self, text: str) -> None:
        """Best effort: a missing or damaged file means an empty pool state, never a crash."""
        try:
            data = json.loads(text)
            self.adopted = {a["model"]: Adopted(**a) for a in data.get("adopted", [])}
            self.dropped = set(data.get("dropped", [])) & set(self.configured)
            self.declined = {str(k): float(v) for k, v in data.get("declined", {}).items()}
        except (ValueError, TypeError, KeyError, AttributeError):
            self.adopted, self.dropped, self.declined = {}, set(), {}


def _served_files(nodes: Iterable[MeshNode]) -> Mapping[str, DiskFile]:
    """Each model READY somewhere, with the file its server has (for the hash and size)."""
    files: dict[str, DiskFile] = {}
    for node in sorted(nodes, key=lambda n: n.node_id):
        for served in node.serving:
            if served.ready and served.model in node.models_on_disk:
                files.setdefault(served.model, node.models_on_disk[served.model])
    return files


def save_pool(pool: LocalPool, home: Path) -> None:
    """Whole or not at all. A disk that refuses it is said in the log, not raised: the pool in memory
    is still right, and only a restart before the next save that succeeds forgets the change."""
    try:
        write_home_file(home / POOL_STATE_FILE, pool.to_json().encode())
    except HomeWriteError as exc:
        logger.warning("pool state not saved: %s", exc)


def load_pool(configured: tuple[str, ...], home: Path) -> LocalPool:
    pool = LocalPool(configured)
    try:
        pool.restore((home / POOL_STATE_FILE).read_text())
    except OSError:
        pass
    return pool
