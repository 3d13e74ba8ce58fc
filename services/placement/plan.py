"""Placement rules as pure functions (DESIGN §5): same inputs, same plan, on every node.

Solo: a model runs on one node when the node's VRAM budget (after --max-vram; system RAM on
CPU-only machines) is at least SOLO_HEADROOM × the model's bytes, counting the models already
placed on it. The headroom covers KV cache and compute buffers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

SOLO_HEADROOM = 1.1
BYTES_PER_GB = 1e9


class Role(enum.Enum):
    SOLO = "solo"
    SPLIT_HOST = "split_host"
    SPLIT_WORKER = "split_worker"
    STANDBY = "standby"
    WAITING = "waiting"
    DOES_NOT_FIT = "does_not_fit"
    FETCHING = "fetching"  # adopted; the file is on its way from peers


class LayerShare(NamedTuple):
    """One member's part of a split: its fraction of the layers and the model bytes that means."""

    node_id: str
    fraction: float
    bytes: int


@dataclass(frozen=True)
class ModelAssignment:
    model: str
    path: str  # this node's own copy (a split worker loads its layers from it, never over the wire)
    bytes: int
    role: Role
    reasons: tuple[str, ...]
    # Splits only: the host (also set for SPLIT_WORKER) and every member's share, host first,
    # then the workers in the order the host lists them in --rpc.
    host_node_id: str = ""
    shares: tuple[LayerShare, ...] = ()


def format_gb(value: float) -> str:
    """GB with two decimals; MB or KB below 0.1 GB, so small (test) models do not all read 0.00 GB."""
    for unit, scale in (("GB", BYTES_PER_GB), ("MB", 1e6)):
        if abs(value) >= 0.1 * scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value / 1e3:.1f} KB"


def needed_bytes(model_bytes: int) -> int:
    """Memory a model needs wherever it runs, solo or summed over a split group."""
    return int(model_bytes * SOLO_HEADROOM)


def _needs(needed: int, model_bytes: int) -> str:
    return f"needs {format_gb(needed)} ({SOLO_HEADROOM} × {format_gb(model_bytes)})"


def fits_reason(needed: int, model_bytes: int, free: int) -> str:
    return f"fits: {_needs(needed, model_bytes)}, {format_gb(free)} free"


def does_not_fit_reason(needed: int, model_bytes: int, free: int) -> str:
    return f"does not fit alone: {_needs(needed, model_bytes)}, {format_gb(free)} free"


# A share moving by less than this is less than one layer of any model under 1,000 layers:
# llama.cpp would place the same layers, so it is not worth a restart.
SHARE_CHANGE_DECIMALS = 3

ProcessKey = tuple[object, ...]


def _process_key(assignment: ModelAssignment) -> ProcessKey | None:
    """What the runner would start for this assignment; None when it starts nothing."""
    if assignment.role is Role.SOLO:
        return (Role.SOLO, assignment.path)
    if assignment.role is Role.SPLIT_HOST:
        # The host's --rpc list and --tensor-split follow the shares. Workers listed in another
        # order (RTTs trading places) load the same layers on the same nodes: no restart.
        split = [(s.node_id, round(s.fraction, SHARE_CHANGE_DECIMALS)) for s in assignment.shares]
        return (Role.SPLIT_HOST, assignment.path, split[0], tuple(sorted(split[1:])))
    if assignment.role is Role.SPLIT_WORKER:
        # An rpc-server does not know its share: the host decides which layers it sends.
        return (Role.SPLIT_WORKER, assignment.path, assignment.host_node_id)
    return None


def _processes(assignments: list[ModelAssignment]) -> dict[str, ProcessKey]:
    keys = {a.model: _process_key(a) for a in assignments}
    return {model: key for model, key in keys.items() if key is not None}


def assignment_changed(old: list[ModelAssignment], new: list[ModelAssignment]) -> bool:
    """True only if this node's processes differ: reasons, standby ↔ waiting and order do not count."""
    return _processes(old) != _processes(new)
