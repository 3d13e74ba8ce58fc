"""The mesh-wide plan, split groups included, as pure functions (DESIGN §5; seed "Tensor split").

Every node runs plan_mesh on the same gossip view and reads its own row, so a host and its
workers agree without talking to each other. The rules, in the order they are applied:

1. Solo first. Each node (in node-id order) takes the models it wants, in the order it asked for
   them, while each fits in what is left of its memory with SOLO_HEADROOM and --split is off.
2. Then each model (in name order) that no wanting node runs solo gets one split group. Host: the
   wanting node with a hashed copy and the most free memory (tie: higher node id). Workers: other
   nodes holding the identical file (same sha256: a worker loads its layers from its own disk, so
   zero weight bytes cross the mesh), lowest RTT from the host first (tie: lower node id), none
   above SPLIT_RTT_CAP_MS, added until the group has SOLO_HEADROOM × the model's bytes. A model
   some node runs solo is split only for a node that asked for --split.
3. Memory is a budget spent in that order: a node's "free memory" is what its own solo models and
   its parts of earlier groups (as host or worker) left. Layer shares are ∝ free memory, host
   included, and each member's part is spent before the next group is formed. With one model
   per node, free memory is simply the node's VRAM.

Clients and leaving nodes take no part. Nothing depends on the order of the node list or of any
mapping: nodes are sorted by id, models by name, candidates by (RTT, node id).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.placement.plan import (
    SOLO_HEADROOM,
    LayerShare,
    ModelAssignment,
    Role,
    does_not_fit_reason,
    fits_reason,
    format_gb,
    needed_bytes,
)
from services.placement.view import UNHASHED, DiskFile, MeshNode

# Per-token decode makes ~2 blocking RPC round trips (DESIGN §2), so a far peer slows every
# token; beyond this it stays an API client instead (seed: "80ms hard cap").
SPLIT_RTT_CAP_MS = 80.0
SHORT_ID_CHARS = 8
MAX_EXCLUSIONS_LISTED = 5  # a 1,000-node mesh must not produce a 1,000-line reason

NO_FILE = DiskFile(UNHASHED, 0, "")
FORCED_SPLIT_WAITING = "--split forces a split; waiting for peers to split with"


def short_id(node_id: str) -> str:
    return node_id[:SHORT_ID_CHARS]


@dataclass(frozen=True)
class SplitGroup:
    model: str
    host_file: DiskFile
    host_id: str
    workers: tuple[str, ...]  # lowest RTT first: the host's --rpc order
    rtt_ms: tuple[float, ...]  # per worker, from the host
    capacity_bytes: int  # free memory of host + workers
    needed_bytes: int
    excluded: tuple[str, ...]  # plain-language lines: who could not join and why

    @property
    def complete(self) -> bool:
        return bool(self.workers) and self.capacity_bytes >= self.needed_bytes


def rtt_between(host: MeshNode, worker: MeshNode) -> float | None:
    """The host's measurement; the worker's of the host when the host has none yet; else unknown."""
    if worker.node_id in host.rtt_ms:
        return host.rtt_ms[worker.node_id]
    return worker.rtt_ms.get(host.node_id)


def _exclusion(name: str, peer_sha256: str, host_sha256: str, free: int, rtt: float | None) -> str | None:
    if peer_sha256 == UNHASHED:
        return f"{name} has the file but its content hash is not known yet"
    if peer_sha256 != host_sha256:
        return f"{name} has a different file under this name (sha256 differs), so it cannot share layers"
    if free <= 0:
        return f"{name} has no memory free (its other models took it)"
    if rtt is None:
        return f"{name} has no RTT measured to the host yet"
    if rtt > SPLIT_RTT_CAP_MS:
        return f"{name} is {rtt:.1f} ms from the host, above the {SPLIT_RTT_CAP_MS:.0f} ms cap"
    return None


def _listed(lines: list[str]) -> tuple[str, ...]:
    if len(lines) <= MAX_EXCLUSIONS_LISTED:
        return tuple(lines)
    more = len(lines) - MAX_EXCLUSIONS_LISTED
    return (*lines[:MAX_EXCLUSIONS_LISTED], f"… and {more} more nodes excluded")


def _worker_candidates(
    host: MeshNode, model: str, peers: Sequence[MeshNode], free: Mapping[str, int]
) -> tuple[list[tuple[float, str]], list[str]]:
    """(RTT, node id) of every peer that may join, and a line for each that holds a copy but may not."""
    host_sha256 = host.models_on_disk[model].sha256
    candidates: list[tuple[float, str]] = []
    excluded: list[str] = []
    for peer in sorted(peers, key=lambda n: n.node_id):
        peer_file = peer.models_on_disk.get(model)
        if peer.node_id == host.node_id or peer_file is None:
            continue
        rtt = rtt_between(host, peer)
        name = short_id(peer.node_id)
        reason = _exclusion(name, peer_file.sha256, host_sha256, free.get(peer.node_id, 0), rtt)
        if reason is not None:
            excluded.append(reason)
        elif rtt is not None:  # always, once _exclusion passed it; said again for the type checker
            candidates.append((rtt, peer.node_id))
    return candidates, excluded


def form_split_group(
    host: MeshNode, model: str, peers: Sequence[MeshNode], free: Mapping[str, int]
) -> SplitGroup:
    """The host's group: identical copies only, nearest first, until it holds the model.

    A group always has at least one worker: a host that could hold the model alone would run it
    solo, unless --split asked for a split.
    """
    host_file = host.models_on_disk[model]
    candidates, excluded = _worker_candidates(host, model, peers, free)
    needed = needed_bytes(host_file.bytes)
    capacity = free.get(host.node_id, 0)
    chosen: list[tuple[float, str]] = []
    for rtt, node_id in sorted(candidates):
        if chosen and capacity >= needed:
            break
        chosen.append((rtt, node_id))
        capacity += free[node_id]
    return SplitGroup(
        model=model,
        host_file=host_file,
        host_id=host.node_id,
        workers=tuple(node_id for _, node_id in chosen),
        rtt_ms=tuple(rtt for rtt, _ in chosen),
        capacity_bytes=capacity,
        needed_bytes=needed,
        excluded=_listed(excluded),
    )


def layer_shares(members: Sequence[tuple[str, int]], model_bytes: int) -> tuple[LayerShare, ...]:
    """Fractions ∝ each member's free memory, host (first member) included.

    Workers' figures are rounded down and the host takes the remainder, so the fractions sum to 1
    and the bytes to model_bytes exactly, and no member is given more than its proportion.
    """
    total = sum(free for _, free in members)
    if total <= 0:
        raise ValueError("a split group needs some free memory")
    workers = [
        LayerShare(node_id, free / total, int(free * model_bytes // total)) for node_id, free in members[1:]
    ]
    host_fraction = 1.0 - math.fsum(share.fraction for share in workers)
    host_bytes = model_bytes - sum(share.bytes for share in workers)
    return (LayerShare(members[0][0], host_fraction, host_bytes), *workers)


def tensor_split_for(shares: Sequence[LayerShare], worker_order: Sequence[str], host_id: str) -> list[float]:
    """llama-server's --tensor-split values: one per --rpc endpoint in worker_order, then the host.

    llama.cpp puts RPC devices at the front of its device list, in --rpc order, and local GPUs
    after them (src/llama.cpp, "add RPC servers at the front"). A CPU-only host has no local
    device in that list: its share is the layers left off the GPU (-ngl), not a split value.
    """
    by_node = {share.node_id: share.fraction for share in shares}
    order = [*worker_order, host_id]
    if sorted(order) != sorted(by_node) or len(set(order)) != len(order):
        raise ValueError(f"shares name {sorted(by_node)}, the split order names {order}")
    return [by_node[node_id] for node_id in order]


@dataclass
class _MeshPass:
    """One plan_mesh run's working state: free memory per node and the assignments so far."""

    nodes: dict[str, MeshNode]  # the nodes taking part, by id, in id order
    free: dict[str, int]
    rows: dict[str, dict[str, ModelAssignment]]  # node id → model → assignment

    def assign(self, node_id: str, assignment: ModelAssignment) -> None:
        self.rows[node_id][assignment.model] = assignment


def _assign_solo(p: _MeshPass) -> None:
    for node in p.nodes.values():
        if node.force_split:
            continue
        for model in node.models_wanted:
            file = node.models_on_disk.get(model)
            if file is None or model in p.rows[node.node_id]:
                continue
            needed, free = needed_bytes(file.bytes), p.free[node.node_id]
            if needed <= free:
                reason = fits_reason(needed, file.bytes, free)
                p.assign(node.node_id, ModelAssignment(model, file.path, file.bytes, Role.SOLO, (reason,)))
                p.free[node.node_id] -= needed


def _own_line(p: _MeshPass, node: MeshNode, model: str) -> str:
    """Why this node does not simply run the model itself."""
    file = node.models_on_disk.get(model)
    if file is None:
        return "the model file is not on this node's disk yet"
    if node.force_split:
        line = "--split is set, so it never runs solo"
    else:
        line = does_not_fit_reason(needed_bytes(file.bytes), file.bytes, p.free[node.node_id])
    if file.sha256 == UNHASHED:
        line += "; its content hash is not known yet, and a split only joins identical copies"
    return line


def _assign_rest(
    p: _MeshPass, nodes: Sequence[MeshNode], model: str, role: Role, reasons: tuple[str, ...]
) -> None:
    """Every wanting node the rules have not placed yet gets `role`, and its own reason last."""
    for node in nodes:
        if model in p.rows[node.node_id]:
            continue
        file = node.models_on_disk.get(model, NO_FILE)
        own = _own_line(p, node, model)
        p.assign(node.node_id, ModelAssignment(model, file.path, file.bytes, role, (*reasons, own)))


def _choose_host(p: _MeshPass, wanting: Sequence[MeshNode], model: str) -> MeshNode | None:
    hosts = [
        node
        for node in wanting
        if model in node.models_on_disk
        and node.models_on_disk[model].sha256 != UNHASHED
        and p.free[node.node_id] > 0
    ]
    return max(hosts, key=lambda node: (p.free[node.node_id], node.node_id), default=None)


def _names(node_ids: Sequence[str]) -> str:
    return ", ".join(short_id(node_id) for node_id in node_ids)


def _group_lines(group: SplitGroup, shares: Sequence[LayerShare]) -> tuple[str, ...]:
    rtts = ", ".join(
        f"{short_id(w)} {rtt:.1f} ms" for w, rtt in zip(group.workers, group.rtt_ms, strict=True)
    )
    split = ", ".join(f"{short_id(s.node_id)} {s.fraction:.2f} ({format_gb(s.bytes)})" for s in shares)
    return (f"workers by RTT from the host: {rtts}", f"layer shares ∝ free memory: {split}", *group.excluded)


def _assign_group(p: _MeshPass, group: SplitGroup) -> None:
    members = [(node_id, p.free[node_id]) for node_id in (group.host_id, *group.workers)]
    shares = layer_shares(members, group.host_file.bytes)
    common = _group_lines(group, shares)
    needs = f"{format_gb(group.needed_bytes)} ({SOLO_HEADROOM} × {format_gb(group.host_file.bytes)})"
    for share in shares:
        file = p.nodes[share.node_id].models_on_disk[group.model]
        if share.node_id == group.host_id:
            role = Role.SPLIT_HOST
            first = f"split host (most free memory of the nodes that want it): needs {needs}, "
            first += f"the group has {format_gb(group.capacity_bytes)} on {len(shares)} nodes"
        else:
            role = Role.SPLIT_WORKER
            first = f"split worker for {short_id(group.host_id)}: {share.fraction:.2f} of the layers "
            first += f"({format_gb(share.bytes)}), loaded from this node's own copy"
        reasons = (first, *common)
        assignment = ModelAssignment(
            group.model, file.path, file.bytes, role, reasons, host_node_id=group.host_id, shares=shares
        )
        p.assign(share.node_id, assignment)
        spent = math.ceil(share.fraction * group.needed_bytes)
        p.free[share.node_id] -= min(p.free[share.node_id], spent)


def _short_group(group: SplitGroup, forced: bool) -> tuple[Role, tuple[str, ...]]:
    """The role and reasons of a group that cannot start; each node's own reason follows."""
    if group.workers:
        have, needed = format_gb(group.capacity_bytes), format_gb(group.needed_bytes)
        waiting = f"waiting for capacity: group has {have} of the {needed} needed"
        members = f"host {short_id(group.host_id)} and workers {_names(group.workers)}"
        return Role.WAITING, (waiting, members, *group.excluded)
    if forced:
        return Role.WAITING, (FORCED_SPLIT_WAITING, *group.excluded)
    alone = f"does not fit: no peer with an identical copy within {SPLIT_RTT_CAP_MS:.0f} ms to split with"
    return Role.DOES_NOT_FIT, (alone, *group.excluded)


def _place_model(p: _MeshPass, model: str) -> None:
    wanting = [node for node in p.nodes.values() if model in node.models_wanted]
    unplaced = [node for node in wanting if model not in p.rows[node.node_id]]
    if not unplaced:
        return
    # Only the solo pass has placed this model so far: every model is placed once, in name order.
    solo = [node.node_id for node in wanting if model in p.rows[node.node_id]]
    served_solo = (f"served solo by {_names(solo)}",) if solo else ()
    if solo and not any(node.force_split for node in unplaced):
        _assign_rest(p, unplaced, model, Role.STANDBY, served_solo)
        return
    host = _choose_host(p, unplaced, model)
    if host is None:
        role = Role.STANDBY if solo else Role.WAITING
        _assign_rest(p, unplaced, model, role, (*served_solo, "no node that wants it can host a split yet"))
        return
    peers = [node for node in p.nodes.values() if node.node_id not in solo]
    group = form_split_group(host, model, peers, p.free)
    if group.complete:
        _assign_group(p, group)
        hosted = f"served by the split group hosted on {short_id(host.node_id)}"
        _assign_rest(p, unplaced, model, Role.STANDBY, (hosted,))
        return
    forced = any(node.force_split for node in unplaced)
    role, reasons = _short_group(group, forced)
    if solo:
        role, reasons = Role.STANDBY, (*served_solo, *reasons)
    _assign_rest(p, unplaced, model, role, reasons)


def plan_mesh(nodes: Sequence[MeshNode]) -> dict[str, list[ModelAssignment]]:
    """Every node's assignments, by node id; each list in the node's wanted order, then by name."""
    if len({node.node_id for node in nodes}) != len(nodes):
        raise ValueError("the mesh view lists a node id twice")
    ordered = sorted(nodes, key=lambda node: node.node_id)
    taking_part = {node.node_id: node for node in ordered if not (node.is_client or node.leaving)}
    p = _MeshPass(
        taking_part,
        {node_id: max(node.vram_bytes, 0) for node_id, node in taking_part.items()},
        {node_id: {} for node_id in taking_part},
    )
    _assign_solo(p)
    for model in sorted({model for node in taking_part.values() for model in node.models_wanted}):
        _place_model(p, model)
    return {node_id: _in_order(p.rows[node_id], node.models_wanted) for node_id, node in taking_part.items()}


def _in_order(row: Mapping[str, ModelAssignment], wanted: Sequence[str]) -> list[ModelAssignment]:
    first = [row[model] for model in dict.fromkeys(wanted) if model in row]
    return first + [row[model] for model in sorted(row) if model not in wanted]


def plan_for_node(view_nodes: Sequence[MeshNode], local_id: str) -> list[ModelAssignment]:
    """This node's role per model: the models it wants, then those it is a split worker for."""
    local = next((node for node in view_nodes if node.node_id == local_id), None)
    if local is None or local.is_client:
        return []
    if local.leaving:
        leaving = ("this node is leaving the mesh",)
        files = {model: local.models_on_disk.get(model, NO_FILE) for model in local.models_wanted}
        return [ModelAssignment(m, f.path, f.bytes, Role.STANDBY, leaving) for m, f in files.items()]
    return plan_mesh(view_nodes)[local_id]
