"""The pool at the edges: what goes into gossip and the Plan message, and how the plan shows a fetch."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from services.placement.plan import ModelAssignment, Role, format_gb
from services.placement.pool import PoolDecision
from services.placement.pool_state import LocalPool, PoolEvent
from services.placement.split import short_id
from services.proto.meshllm.gossip.v1 import gossip_pb2
from services.proto.meshllm.placement.v1 import placement_pb2


def adopted_records(pool: LocalPool) -> list[gossip_pb2.Adoption]:
    return [
        gossip_pb2.Adoption(
            model=a.model,
            reason=a.reason,
            since_unix_s=a.since_unix_s,
            by_hand=a.by_hand,
            for_loss=a.for_loss,
        )
        for a in sorted(pool.adopted.values())
    ]


def seen_records(pool: LocalPool) -> list[gossip_pb2.SeenModel]:
    return [
        gossip_pb2.SeenModel(
            name=name,
            sha256=s.sha256,
            bytes=s.bytes,
            last_served_unix_s=s.last_served_unix_s,
            dropped_unix_s=s.dropped_unix_s,
        )
        for name, s in sorted(pool.seen.items())
    ]


def pool_messages(
    decision: PoolDecision, events: Sequence[PoolEvent]
) -> tuple[list[placement_pb2.ModelPool], list[placement_pb2.PoolEvent]]:
    pools = [
        placement_pb2.ModelPool(
            model=p.model,
            server_node_ids=list(p.servers),
            candidate_node_ids=list(p.candidates),
            requests_per_min=round(p.requests_per_min, 2),
            requests_per_min_per_server=round(p.per_server, 2),
            reasons=list(p.reasons),
        )
        for p in decision.pool
    ]
    shown = [
        placement_pb2.PoolEvent(at_unix_s=e.at_unix_s, model=e.model, kind=e.kind, reason=e.reason)
        for e in events
    ]
    return pools, shown


def transfer_line(transfer: gossip_pb2.FileTransfer) -> str:
    """ "fetching from a1b2c3d4, e5f6a7b8: 12.00 MB of 64.00 MB, 8.0 MB/s, 7 s left"."""
    # A mesh fetch always names the file's sha256; a Hub download (placement/fetching.py) does not.
    sources = ", ".join(short_id(s) for s in transfer.source_node_ids) or (
        "peers" if transfer.sha256 else "the Hub"
    )
    line = f"fetching from {sources}: {format_gb(transfer.bytes_done)} of {format_gb(transfer.bytes_total)}"
    if transfer.bytes_per_s > 0:
        left = max(transfer.bytes_total - transfer.bytes_done, 0) / transfer.bytes_per_s
        line += f", {format_gb(transfer.bytes_per_s)}/s, {left:.0f} s left"
    if transfer.error:
        line += f" (last error: {transfer.error})"
    return line


def fetching_assignments(
    assignments: Sequence[ModelAssignment],
    pool: LocalPool,
    on_disk: Mapping[str, object],
    transfers: Mapping[str, gossip_pb2.FileTransfer],
) -> list[ModelAssignment]:
    """An adopted model whose file is not here yet is FETCHING, with its progress as the reason."""
    result = []
    for a in assignments:
        adoption = pool.adopted.get(a.model)
        if adoption is not None and a.model not in on_disk and a.role is Role.WAITING:
            transfer = transfers.get(a.model)
            progress = transfer_line(transfer) if transfer is not None else "looking for a copy of the file"
            reasons = tuple(r for r in (f"promoted: {adoption.reason}", progress) if r)
            a = replace(a, role=Role.FETCHING, reasons=reasons)
        elif adoption is not None and a.role is Role.SOLO:
            a = replace(a, reasons=(f"promoted: {adoption.reason}", *a.reasons))
        result.append(a)
    return result


def downloadable_models(store: Path) -> dict[str, Callable[[Callable[[int, int], None]], Path]]:
    """Catalog models on the Hub: the fallback when no peer has the file (downloaded into `store`);
    each takes the (bytes done, bytes total) callback the fetcher shows progress with."""
    from services.node.catalog import CATALOG, fetch_entry

    return {e.name: functools.partial(fetch_entry, e, store, True) for e in CATALOG if e.hub}
