"""This node's view of the mesh: one versioned record per node, tombstones for departed ones. Sans-IO.

Merge keeps the highest rank per node (see items.py); equal-rank records that differ are ordered by
their bytes. A max under a total order is commutative, associative and idempotent, so every delivery
order of the same items ends in the same view.

`now` is wall-clock unix seconds (time.time()) everywhere: tombstone death times travel between nodes.

Liveness is SWIM-style. A 5 s timeout on every record would need every node to re-version its record
every few seconds, O(N) record bytes per node per second at 1,000 nodes. Instead only peers this node
hears directly (`mark_heard`, fed by the mesh's pings) are timed out after PEER_DEAD_AFTER_S; the
tombstone that creates then spreads by gossip. Records nobody watches here expire after
RECORD_STALE_AFTER_S without a fresher version, and owners re-version every LOCAL_REFRESH_INTERVAL_S,
which catches a node whose watchers all died with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.gossip.digest import BucketDigest, node_key
from services.gossip.items import MAX_VERSION, GossipItem, Tombstone, rank_of, version_of_rank
from services.gossip.record_limits import check_record
from services.gossip.wire import MAX_DIGEST_ENTRIES, Delta, DigestEntries, DigestSummary
from services.proto.meshllm.gossip.v1 import gossip_pb2

PEER_DEAD_AFTER_S = 5.0
RECORD_STALE_AFTER_S = 600.0
LOCAL_REFRESH_INTERVAL_S = 180.0
# Long enough that every stale copy of a departed node's record has been overwritten everywhere
# (gossip converges in seconds), short enough that the tombstone set stays small.
TOMBSTONE_TTL_S = 120.0
# The unwatched-record and tombstone sweep is O(N); its deadlines are minutes, so run it every few seconds.
SWEEP_INTERVAL_S = 5.0


@dataclass
class MergeResult:
    """What a merge (or an expiry) changed in the view."""

    joined: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    fresh: list[GossipItem] = field(default_factory=list)  # accepted items, worth passing on
    # Tombstones refused because we hear their node ourselves: send each to its node, which refutes
    # it (re-versions its record past it) so the rest of the mesh learns it lives.
    refuted: list[Tombstone] = field(default_factory=list)
    local_bumped: bool = False  # a peer gossiped our id at or above our version; re-announce ours

    @property
    def view_changed(self) -> bool:
        return bool(self.joined or self.changed or self.left or self.local_bumped)


def _copy(record: gossip_pb2.NodeRecord) -> gossip_pb2.NodeRecord:
    fresh = gossip_pb2.NodeRecord()
    fresh.CopyFrom(record)
    return fresh


def _wins_tie(incoming: gossip_pb2.NodeRecord, current: gossip_pb2.NodeRecord) -> bool:
    """Equal versions with different contents (an owner that lost its counter): pick by bytes, everywhere."""
    if incoming == current:
        return False
    return incoming.SerializeToString(deterministic=True) > current.SerializeToString(deterministic=True)


class GossipState:
    """Records by node id, tombstones, last-heard times and the digest that summarises them."""

    def __init__(
        self,
        local: gossip_pb2.NodeRecord,
        now: float,
        *,
        peer_dead_after_s: float = PEER_DEAD_AFTER_S,
        record_stale_after_s: float = RECORD_STALE_AFTER_S,
        tombstone_ttl_s: float = TOMBSTONE_TTL_S,
        local_refresh_interval_s: float = LOCAL_REFRESH_INTERVAL_S,
    ) -> None:
        check_record(local)
        self._local = _copy(local)
        self._local_set_at = now
        self._peer_dead_after_s = peer_dead_after_s
        self._record_stale_after_s = record_stale_after_s
        self._tombstone_ttl_s = tombstone_ttl_s
        self._local_refresh_interval_s = local_refresh_interval_s
        self._records: dict[str, gossip_pb2.NodeRecord] = {}
        self._tombstones: dict[str, Tombstone] = {}
        self._heard_at: dict[str, float] = {}
        self._watched: set[str] = set()
        self._digest = BucketDigest()
        self._ids_by_key: dict[int, str] = {}
        self._known_peers: tuple[str, ...] | None = None
        self._entries_rotation = 0
        self._next_sweep_s = now + SWEEP_INTERVAL_S
        self._index(local.node_id, rank_of(self._local))

    # --- the local record -------------------------------------------------------------------------

    @property
    def local_id(self) -> str:
        return self._local.node_id

    @property
    def local(self) -> gossip_pb2.NodeRecord:
        return _copy(self._local)

    def set_local(self, record: gossip_pb2.NodeRecord, now: float) -> gossip_pb2.NodeRecord:
        """Replace our record; the version moves past the current one. Returns the record as stored."""
        if record.node_id != self.local_id:
            raise ValueError(f"local record must keep node id {self.local_id}")
        fresh = _copy(record)
        fresh.version = max(record.version, self._local.version + 1)
        fresh.updated_unix_s = now
        check_record(fresh)
        self._local = fresh
        self._local_set_at = now
        self._index(self.local_id, rank_of(fresh))
        return _copy(fresh)

    def refresh_due(self, now: float) -> bool:
        return now - self._local_set_at >= self._local_refresh_interval_s

    def refresh_local(self, now: float) -> gossip_pb2.NodeRecord:
        """Re-version an unchanged record so unwatched peers keep seeing it fresh."""
        return self.set_local(self._local, now)

    def goodbye(self, now: float) -> gossip_pb2.NodeRecord:
        """Our record saying we leave; peers turn it into a tombstone on receipt."""
        leaving = _copy(self._local)
        leaving.leaving = True
        return self.set_local(leaving, now)

    # --- reading the view -------------------------------------------------------------------------

    def view(self) -> list[gossip_pb2.NodeRecord]:
        """Every live record, ours first, then by node id (copies; mutate freely)."""
        return [_copy(self._local), *(_copy(self._records[i]) for i in sorted(self._records))]

    def mesh_view(self) -> gossip_pb2.MeshView:
        return gossip_pb2.MeshView(local_node_id=self.local_id, nodes=self.view())

    def known_peers(self) -> tuple[str, ...]:
        """Node ids of live peers (not us): gossip targets. Cached: asked for on every push."""
        if self._known_peers is None:
            self._known_peers = tuple(self._records)
        return self._known_peers

    def item_for(self, node_id: str) -> GossipItem | None:
        """What we hold for `node_id`: its record, its tombstone, or None (shared; do not mutate)."""
        if node_id == self.local_id:
            return self._local
        record = self._records.get(node_id)
        return record if record is not None else self._tombstones.get(node_id)

    def digest(self) -> dict[str, int]:
        """Rank by node id for everything we hold, us and tombstones included."""
        ranks = {node_id: rank_of(record) for node_id, record in self._records.items()}
        ranks.update((node_id, rank_of(t)) for node_id, t in self._tombstones.items())
        ranks[self.local_id] = rank_of(self._local)
        return ranks

    def delta_for(self, peer_digest: Mapping[str, int]) -> list[GossipItem]:
        """Everything a peer with `peer_digest` (see digest()) lacks or holds older."""
        return [
            item
            for node_id, rank in self.digest().items()
            if peer_digest.get(node_id, -1) < rank and (item := self.item_for(node_id)) is not None
        ]

    # --- anti-entropy steps (see wire.proto) ------------------------------------------------------

    def summary(self) -> DigestSummary:
        return DigestSummary(self._digest.bucket_hashes())

    def entries_for(self, summary: DigestSummary) -> DigestEntries | None:
        """Step 2: our entries in the buckets where the peer's summary differs; None when we agree."""
        buckets = self._buckets_that_fit(self._digest.differing_buckets(summary.bucket_hashes))
        if not buckets:
            return None
        return DigestEntries(tuple(buckets), self._digest.entries_in(buckets))

    def _buckets_that_fit(self, buckets: list[int]) -> list[int]:
        """Whole buckets up to MAX_DIGEST_ENTRIES entries. Only a mesh of ~10,000+ nodes needs more than
        one message; the start rotates per call so no bucket waits forever, later rounds do the rest."""
        if not buckets:
            return []
        start = self._entries_rotation % len(buckets)
        self._entries_rotation += 1
        chosen: list[int] = []
        total = 0
        for bucket in buckets[start:] + buckets[:start]:
            size = self._digest.bucket_size(bucket)
            if total + size <= MAX_DIGEST_ENTRIES:
                chosen.append(bucket)
                total += size
        return sorted(chosen)

    def reconcile(self, entries: DigestEntries) -> Delta:
        """Step 3: what the peer lacks or has older in those buckets, and the keys we want from it."""
        ours = self._digest.entries_in(entries.buckets)
        theirs = entries.ranks
        send = [key for key, rank in ours.items() if theirs.get(key, -1) < rank]
        want = tuple(key for key, rank in theirs.items() if ours.get(key, -1) < rank)
        return Delta(tuple(self.items_for_keys(send)), want)

    def items_for_keys(self, keys: Iterable[int]) -> list[GossipItem]:
        """Step 4: the items behind digest keys; keys we do not know are skipped."""
        items = []
        for key in keys:
            node_id = self._ids_by_key.get(key)
            item = self.item_for(node_id) if node_id is not None else None
            if item is not None:
                items.append(item)
        return items

    # --- merging what peers send ------------------------------------------------------------------

    def merge(self, items: Iterable[GossipItem], from_node: str | None, now: float) -> MergeResult:
        """Keep the newest state per node; `from_node` (the sender) counts as heard."""
        result = MergeResult()
        if from_node is not None:
            self.note_contact(from_node, now)
        for item in items:
            if not isinstance(item, Tombstone) and item.leaving:
                # The node's own goodbye: authoritative, unlike a tombstone someone else made.
                self._merge_tombstone(Tombstone(item.node_id, item.version, now), now, result)
                continue
            if item.node_id == self.local_id:
                self._defend_local(item, now, result)
            elif isinstance(item, Tombstone) and self.hears_directly(item.node_id, now):
                # Hearsay (a peer lost its path to it) against our own evidence that it lives.
                result.refuted.append(item)
            elif isinstance(item, Tombstone):
                self._merge_tombstone(item, now, result)
            else:
                self._merge_record(item, now, result)
        return result

    def _merge_record(self, record: gossip_pb2.NodeRecord, now: float, result: MergeResult) -> None:
        node_id = record.node_id
        current = self._records.get(node_id)
        if current is not None:
            if record.version < current.version:
                return
            if record.version == current.version and not _wins_tie(record, current):
                return
            result.changed.append(node_id)
        else:
            tombstone = self._tombstones.get(node_id)
            if tombstone is not None:
                if record.version <= tombstone.version:
                    return
                del self._tombstones[node_id]
            result.joined.append(node_id)
            self._known_peers = None
        stored = _copy(record)  # detach from the decoded message so its buffer can be freed
        self._records[node_id] = stored
        self._heard_at[node_id] = now  # a fresher version is news from the node itself
        self._index(node_id, rank_of(stored))
        result.fresh.append(stored)

    def _merge_tombstone(self, tombstone: Tombstone, now: float, result: MergeResult) -> None:
        node_id = tombstone.node_id
        if tombstone.died_unix_s > now:  # a peer's clock ahead of ours must not stretch the TTL
            tombstone = Tombstone(node_id, tombstone.version, now)
        expired = tombstone.died_unix_s + self._tombstone_ttl_s <= now
        record = self._records.get(node_id)
        if record is not None:
            if tombstone.version < record.version:
                return
            del self._records[node_id]
            self._heard_at.pop(node_id, None)
            self._known_peers = None
            result.left.append(node_id)
        else:
            current = self._tombstones.get(node_id)
            if current is not None and tombstone.version <= current.version:
                if tombstone.version == current.version and tombstone.died_unix_s > current.died_unix_s:
                    self._tombstones[node_id] = tombstone  # later death time: same order on every node
                return
            if expired:
                return
        if expired:
            self._tombstones.pop(node_id, None)
            self._unindex(node_id)
            return
        self._tombstones[node_id] = tombstone
        self._index(node_id, rank_of(tombstone))
        result.fresh.append(tombstone)

    def _defend_local(self, item: GossipItem, now: float, result: MergeResult) -> None:
        """Nobody else writes our record: if a peer holds our id at or above our version (we restarted
        and lost the counter, or were declared dead), move our version past it and re-announce."""
        ours = rank_of(self._local)
        theirs = rank_of(item)
        if self._local.leaving or theirs < ours:
            return
        if theirs == ours and (isinstance(item, Tombstone) or item == self._local):
            return
        version = version_of_rank(theirs) + 1
        if version > MAX_VERSION:  # only a hostile peer gets here; we cannot out-version it
            return
        bumped = _copy(self._local)
        bumped.version = version
        result.fresh.append(self.set_local(bumped, now))
        result.local_bumped = True

    # --- liveness ---------------------------------------------------------------------------------

    def mark_heard(self, node_id: str, now: float) -> None:
        """Direct evidence (a ping answered) from a peer we watch: it expires PEER_DEAD_AFTER_S after
        the last one."""
        if node_id == self.local_id:
            return
        self._watched.add(node_id)
        self._heard_at[node_id] = now

    def hears_directly(self, node_id: str, now: float) -> bool:
        """A peer we watch (the mesh links us) that answered within PEER_DEAD_AFTER_S."""
        heard = self._heard_at.get(node_id)
        return node_id in self._watched and heard is not None and now - heard < self._peer_dead_after_s

    def unwatch(self, node_id: str) -> None:
        """We stopped pinging this peer on purpose (connection closed while it lives): fall back to the
        unwatched deadline rather than declaring it dead."""
        self._watched.discard(node_id)

    def note_contact(self, node_id: str, now: float) -> None:
        """A message straight from `node_id`: it is alive, without making it a watched peer."""
        if node_id != self.local_id and (node_id in self._records or node_id in self._watched):
            self._heard_at[node_id] = now

    def leave(self, node_id: str, now: float) -> Tombstone | None:
        """A peer said goodbye (or the mesh saw it go): tombstone it now. None if we hold no record."""
        if node_id == self.local_id:
            raise ValueError("use goodbye() for this node's own departure")
        record = self._records.get(node_id)
        if record is None:
            return None
        tombstone = Tombstone(node_id, record.version, now)
        self._merge_tombstone(tombstone, now, MergeResult())
        return tombstone

    def expire(self, now: float) -> list[str]:
        """Remove and tombstone peers whose deadline passed (a deadline reached exactly counts)."""
        dead_after = self._peer_dead_after_s
        gone = [
            node_id
            for node_id in self._watched
            if node_id in self._records and now - self._heard_at[node_id] >= dead_after
        ]
        if now >= self._next_sweep_s:
            self._next_sweep_s = now + SWEEP_INTERVAL_S
            gone.extend(self._stale_unwatched(now))
            self._sweep(now)
        for node_id in gone:
            self.leave(node_id, now)
        return gone

    def _stale_unwatched(self, now: float) -> list[str]:
        stale_after = self._record_stale_after_s
        heard = self._heard_at
        return [
            node_id
            for node_id in self._records
            if node_id not in self._watched and now - heard[node_id] >= stale_after
        ]

    def _sweep(self, now: float) -> None:
        ttl = self._tombstone_ttl_s
        for node_id in [i for i, t in self._tombstones.items() if t.died_unix_s + ttl <= now]:
            del self._tombstones[node_id]
            self._unindex(node_id)
        forgotten = [
            node_id
            for node_id, heard in self._heard_at.items()
            if node_id not in self._records and now - heard >= self._record_stale_after_s
        ]
        for node_id in forgotten:  # long gone and never heard of since: stop tracking it at all
            del self._heard_at[node_id]
            self._watched.discard(node_id)

    # --- digest bookkeeping -----------------------------------------------------------------------

    def _index(self, node_id: str, rank: int) -> None:
        key = node_key(node_id)
        self._ids_by_key[key] = node_id
        self._digest.set(key, rank)

    def _unindex(self, node_id: str) -> None:
        key = node_key(node_id)
        self._ids_by_key.pop(key, None)
        self._digest.discard(key)
