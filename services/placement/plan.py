"""Placement rules as pure functions (DESIGN §5): same inputs, same plan, on every node.

Solo: a model runs on one node when the node's VRAM budget (after --max-vram; system RAM on
CPU-only machines) is at least SOLO_HEADROOM × the model's bytes, counting the models already
placed on it. The headroom covers KV cache and compute buffers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

SOLO_HEADROOM = 1.1
BYTES_PER_GB = 1e9


class Role(enum.Enum):
    SOLO = "solo"
    SPLIT_HOST = "split_host"
    SPLIT_WORKER = "split_worker"
    STANDBY = "standby"
    WAITING = "waiting"
    DOES_NOT_FIT = "does_not_fit"


@dataclass(frozen=True)
class ModelWant:
    name: str
    path: str
    bytes: int


@dataclass(frozen=True)
class NodeCapacity:
    node_id: str
    vram_bytes: int
    vram_capped: bool = False  # --max-vram lowered the detected figure


@dataclass(frozen=True)
class ModelAssignment:
    model: str
    path: str
    bytes: int
    role: Role
    reasons: tuple[str, ...]


def _gb(value: float) -> str:
    return f"{value / BYTES_PER_GB:.2f} GB"


def plan_local_models(
    node: NodeCapacity, wants: list[ModelWant], force_split: bool = False
) -> list[ModelAssignment]:
    """Assign each wanted model, in order, against what is left of the node's budget."""
    remaining = node.vram_bytes
    budget_source = "--max-vram" if node.vram_capped else "detected memory"
    assignments = []
    for want in wants:
        needed = int(want.bytes * SOLO_HEADROOM)
        if force_split:
            role, reason = Role.WAITING, "--split forces a split; waiting for peers to split with"
        elif needed <= remaining:
            role = Role.SOLO
            reason = f"fits: needs {_gb(needed)} ({SOLO_HEADROOM} × {_gb(want.bytes)}), {_gb(remaining)} free"
            remaining -= needed
        else:
            role = Role.DOES_NOT_FIT
            reason = (
                f"does not fit: needs {_gb(needed)} ({SOLO_HEADROOM} × {_gb(want.bytes)}), "
                f"{_gb(remaining)} free of {_gb(node.vram_bytes)} ({budget_source}); no peers to split with"
            )
        assignments.append(ModelAssignment(want.name, want.path, want.bytes, role, (reason,)))
    return assignments
