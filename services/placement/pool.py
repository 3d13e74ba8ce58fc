"""The pool rules (DESIGN §5 "Demand"; seed "Multi-model", "Demand-aware rebalancing") as pure functions.

Spare capacity follows demand. Every node runs plan_pool on the same gossip view, so every node
names the same promoter for a need, and only that node acts (no herd):

1. Loss: a model some live node saw served within LOST_MODEL_MEMORY_S, that no live node serves
   now (none has it among the models it serves by choice), is taken up by one candidate.
2. Hot: a model whose mesh-wide demand per server is ≥ HOT_MIN_PER_SERVER_PER_MIN and ≥
   HOT_RATIO_TO_COLDEST × the coldest other served model's gets one more replica per pass.
   The new replica counts as a server as soon as it is adopted, so the next pass sees the
   demand per server drop: one promotion per need, however long the file takes to arrive.
3. Candidates: non-client nodes not serving the model, with free memory ≥ SOLO_HEADROOM × its
   bytes (after what they already serve), that can get the file (their own copy, a peer's hashed
   copy, or the catalog's URL). Best first: has its own copy (serves in seconds, no transfer),
   then most free memory, then higher node id (the split host's tie-break).
4. Retirement (the local node's own adoptions only, timed by its own clock): a replica the pool
   added whose model stays below COLD_MAX_PER_SERVER_PER_MIN per server for the retire window
   goes back to standby. The gap between 10 (promote) and 2 (retire) per server, and the window,
   are the hysteresis. The model's keeper (a server started with it, else the oldest adoption)
   never retires, so the last server never does. Of two nodes that took up one lost model in a
   race (views that differed for a moment), the later adopter steps back at once.

Demand is the sum of every live node's published request_rate_per_min (each request is counted
once, where it entered the mesh), decayed in the gateway (services/gateway/rates.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from services.placement.plan import format_gb, needed_bytes
from services.placement.split import short_id
from services.placement.view import UNHASHED, MeshNode

LOST_MODEL_MEMORY_S = 3600.0  # a model seen served this recently and then lost is restored
HOT_MIN_PER_SERVER_PER_MIN = 10.0
HOT_RATIO_TO_COLDEST = 3.0
COLD_MAX_PER_SERVER_PER_MIN = 2.0
RETIRE_AFTER_COLD_S = 300.0


@dataclass(frozen=True)
class PoolSettings:
    retire_after_cold_s: float = RETIRE_AFTER_COLD_S
    lost_model_memory_s: float = LOST_MODEL_MEMORY_S
    downloadable: frozenset[str] = frozenset()  # models the catalog can download by URL


class Promotion(NamedTuple):
    model: str
    node_id: str
    reason: str
    for_loss: bool


class Retirement(NamedTuple):
    model: str
    reason: str


@dataclass(frozen=True)
class ModelPool:
    """One model mesh-wide, as every node sees it."""

    model: str
    servers: tuple[str, ...]
    candidates: tuple[str, ...]  # best first
    requests_per_min: float
    per_server: float
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class PoolDecision:
    promotions: tuple[Promotion, ...]  # mesh-wide: the same on every node
    retirements: tuple[Retirement, ...]  # the local node's own
    pool: tuple[ModelPool, ...]
    cold_since: Mapping[str, float] = field(default_factory=dict)  # local timers for the next call
    standby_reason: str = ""  # set when the local node serves nothing


def _taking_part(nodes: Sequence[MeshNode]) -> list[MeshNode]:
    return sorted((n for n in nodes if not (n.is_client or n.leaving)), key=lambda n: n.node_id)


def model_bytes(nodes: Sequence[MeshNode], model: str, node: MeshNode | None = None) -> int:
    """The node's own copy's size, else the largest any node lists (on disk, then seen served)."""
    if node is not None and model in node.models_on_disk:
        return node.models_on_disk[model].bytes
    sizes = [n.models_on_disk[model].bytes for n in nodes if model in n.models_on_disk]
    sizes += [n.models_seen[model].bytes for n in nodes if model in n.models_seen]
    return max(sizes, default=0)


def free_memory(nodes: Sequence[MeshNode], node: MeshNode) -> int:
    """VRAM left after SOLO_HEADROOM × each model the node serves by choice (splits not counted apart)."""
    used = sum(needed_bytes(model_bytes(nodes, m, node)) for m in node.models_wanted)
    return node.vram_bytes - used


def demand_per_min(nodes: Sequence[MeshNode]) -> dict[str, float]:
    """Mesh-wide requests/min by model: clients' too (requests enter the mesh there)."""
    rates: dict[str, list[float]] = {}
    for node in sorted(nodes, key=lambda n: n.node_id):  # fsum: the same total in any view order
        if not node.leaving:
            for model, rate in node.request_rate_per_min.items():
                rates.setdefault(model, []).append(rate)
    return {model: math.fsum(values) for model, values in rates.items()}


def servers_of(part: Sequence[MeshNode], model: str) -> tuple[str, ...]:
    return tuple(n.node_id for n in part if model in n.models_wanted)


def lost_models(
    nodes: Sequence[MeshNode], part: Sequence[MeshNode], now_s: float, memory_s: float
) -> list[str]:
    """Models seen served within `memory_s` (and not dropped by hand since) that nobody serves now."""
    last: dict[str, float] = {}
    dropped: dict[str, float] = {}
    for node in nodes:
        if node.leaving:
            continue
        for model, seen in node.models_seen.items():
            last[model] = max(last.get(model, 0.0), seen.last_served_unix_s)
            dropped[model] = max(dropped.get(model, 0.0), seen.dropped_unix_s)
    served = {m for n in part for m in n.models_wanted}
    return sorted(
        m for m, at in last.items() if m not in served and now_s - at <= memory_s and dropped.get(m, 0.0) < at
    )


def _can_get_file(nodes: Sequence[MeshNode], node: MeshNode, model: str, settings: PoolSettings) -> bool:
    if model in node.models_on_disk:
        return True
    if model in settings.downloadable:
        return True
    return any(
        model in n.models_on_disk and n.models_on_disk[model].sha256 != UNHASHED
        for n in nodes
        if n.node_id != node.node_id and not n.leaving
    )


def candidates_for(
    nodes: Sequence[MeshNode],
    part: Sequence[MeshNode],
    model: str,
    free: Mapping[str, int],
    settings: PoolSettings,
) -> list[str]:
    """Who could take `model` up, best first (rule 3)."""
    ranked = []
    for node in part:
        if node.force_split or model in node.models_wanted or not _can_get_file(nodes, node, model, settings):
            continue
        if needed_bytes(model_bytes(nodes, model, node)) > free[node.node_id]:
            continue
        ranked.append((model in node.models_on_disk, free[node.node_id], node.node_id))
    return [node_id for *_, node_id in sorted(ranked, reverse=True)]


def _candidate_line(nodes: Sequence[MeshNode], node_id: str, model: str, free: int) -> str:
    node = next(n for n in nodes if n.node_id == node_id)
    source = "has the file" if model in node.models_on_disk else "fetches the file from peers"
    return f"{short_id(node_id)} {source}, {format_gb(free)} free"


@dataclass
class _PoolPass:
    nodes: Sequence[MeshNode]
    part: list[MeshNode]
    settings: PoolSettings
    free: dict[str, int]
    demand: dict[str, float]
    promotions: list[Promotion] = field(default_factory=list)
    pools: dict[str, ModelPool] = field(default_factory=dict)

    def promote(self, model: str, reason: str, for_loss: bool) -> tuple[str, ...]:
        """The best candidate takes `model` up; its memory is spent for the rest of this pass."""
        candidates = candidates_for(self.nodes, self.part, model, self.free, self.settings)
        if candidates:
            chosen = candidates[0]
            line = _candidate_line(self.nodes, chosen, model, self.free[chosen])
            self.promotions.append(Promotion(model, chosen, f"{reason}; {line}", for_loss))
            node = next(n for n in self.part if n.node_id == chosen)
            self.free[chosen] -= needed_bytes(model_bytes(self.nodes, model, node))
        return tuple(candidates)


def _per_server(p: _PoolPass, model: str) -> float:
    servers = len(servers_of(p.part, model)) + sum(1 for pr in p.promotions if pr.model == model)
    return p.demand.get(model, 0.0) / max(servers, 1)


def _place_lost(p: _PoolPass, now_s: float) -> None:
    for model in lost_models(p.nodes, p.part, now_s, p.settings.lost_model_memory_s):
        reason = f"{model} lost its last server"
        candidates = p.promote(model, reason, for_loss=True)
        if not candidates:
            needs = format_gb(needed_bytes(model_bytes(p.nodes, model)))
            line = f"{reason}; no node can take it up (needs {needs} free and a copy of the file to fetch)"
        else:
            line = f"{reason}; {short_id(candidates[0])} takes it up"
        rate = p.demand.get(model, 0.0)
        p.pools[model] = ModelPool(model, (), candidates, rate, rate, (line,))


def _hot_reason(model: str, per: float, coldest: tuple[str, float] | None) -> str | None:
    if per < HOT_MIN_PER_SERVER_PER_MIN:
        return None
    if coldest is not None and per < HOT_RATIO_TO_COLDEST * coldest[1]:
        return None
    versus = f", ≥ {HOT_RATIO_TO_COLDEST:g}× {coldest[0]}'s {coldest[1]:.1f}" if coldest else ""
    return f"{model} is hot: {per:.1f} req/min per server (≥ {HOT_MIN_PER_SERVER_PER_MIN:g}{versus})"


def _place_hot(p: _PoolPass) -> None:
    served = sorted({m for n in p.part for m in n.models_wanted})
    per = {m: _per_server(p, m) for m in served}
    for model in sorted(served, key=lambda m: (-per[m], m)):
        others = [(m, per[m]) for m in served if m != model]
        coldest = min(others, key=lambda item: (item[1], item[0]), default=None)
        reason = _hot_reason(model, per[model], coldest)
        lines = [f"served by {', '.join(short_id(s) for s in servers_of(p.part, model))}"]
        lines.append(f"{p.demand.get(model, 0.0):.1f} req/min mesh-wide, {per[model]:.1f} per server")
        candidates: tuple[str, ...] = ()
        if reason is not None:
            candidates = p.promote(model, reason, for_loss=False)
            chosen = [pr.node_id for pr in p.promotions if pr.model == model]
            lines.append(
                f"{reason}; " + (f"{short_id(chosen[0])} adds a replica" if chosen else "no node has room")
            )
        else:
            candidates = tuple(candidates_for(p.nodes, p.part, model, p.free, p.settings))
        rate = p.demand.get(model, 0.0)
        p.pools[model] = ModelPool(
            model, servers_of(p.part, model), candidates, rate, per[model], tuple(lines)
        )


def _keeper(part: Sequence[MeshNode], model: str) -> str:
    """The server that never retires: one started with the model, else the oldest adoption."""

    def rank(node: MeshNode) -> tuple[int, float, str]:
        adoption = node.adopted.get(model)
        if adoption is None or adoption.by_hand:
            return (0, 0.0, node.node_id)
        return (1, adoption.since_unix_s, node.node_id)

    return min((n for n in part if model in n.models_wanted), key=rank).node_id


def _retirements(
    part: Sequence[MeshNode],
    local: MeshNode,
    demand: Mapping[str, float],
    now_s: float,
    settings: PoolSettings,
    cold_since: Mapping[str, float],
) -> tuple[list[Retirement], dict[str, float]]:
    retire: list[Retirement] = []
    timers: dict[str, float] = {}
    for model, adoption in sorted(local.adopted.items()):
        servers = servers_of(part, model)
        if adoption.by_hand or len(servers) < 2:
            continue
        rivals = [
            n
            for n in part
            if n.node_id != local.node_id
            and (a := n.adopted.get(model)) is not None
            and a.for_loss
            and (a.since_unix_s, n.node_id) < (adoption.since_unix_s, local.node_id)
        ]
        if adoption.for_loss and rivals:
            retire.append(Retirement(model, f"{short_id(rivals[0].node_id)} took {model} up first"))
            continue
        per = demand.get(model, 0.0) / len(servers)
        if per >= COLD_MAX_PER_SERVER_PER_MIN:
            continue
        timers[model] = since = cold_since.get(model, now_s)
        if now_s - since >= settings.retire_after_cold_s and _keeper(part, model) != local.node_id:
            minutes = settings.retire_after_cold_s / 60
            reason = f"{model} stayed below {COLD_MAX_PER_SERVER_PER_MIN:g} req/min per server for "
            reason += f"{minutes:g} min ({per:.1f} now); {len(servers) - 1} other server(s) keep it"
            retire.append(Retirement(model, reason))
    return retire, timers


def _standby_reason(p: _PoolPass, local: MeshNode) -> str:
    if local.models_wanted or local.is_client:
        return ""
    line = f"standby: serves nothing until the mesh needs it ({format_gb(local.vram_bytes)} offered)"
    hottest = max(p.pools.values(), key=lambda pool: (pool.per_server, pool.model), default=None)
    if hottest is None:
        return f"{line}; no model is served in the mesh yet"
    return (
        f"{line}; hottest: {hottest.model} at {hottest.per_server:.1f} req/min per server "
        f"(a replica is added at ≥ {HOT_MIN_PER_SERVER_PER_MIN:g})"
    )


def plan_pool(
    nodes: Sequence[MeshNode],
    local_id: str,
    now_s: float,
    settings: PoolSettings = PoolSettings(),
    cold_since: Mapping[str, float] | None = None,
) -> PoolDecision:
    """Promotions mesh-wide, the local node's retirements, and the pool as `meshctl plan` shows it."""
    part = _taking_part(nodes)
    p = _PoolPass(
        nodes, part, settings, {n.node_id: free_memory(nodes, n) for n in part}, demand_per_min(nodes)
    )
    _place_lost(p, now_s)
    _place_hot(p)
    local = next((n for n in part if n.node_id == local_id), None)
    retire: list[Retirement] = []
    timers: dict[str, float] = {}
    if local is not None:
        retire, timers = _retirements(part, local, p.demand, now_s, settings, cold_since or {})
    standby = _standby_reason(p, local) if local is not None else ""
    pools = tuple(p.pools[m] for m in sorted(p.pools))
    return PoolDecision(tuple(p.promotions), tuple(retire), pools, timers, standby)
