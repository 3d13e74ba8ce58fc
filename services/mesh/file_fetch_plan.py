"""Which chunk of a file comes from which source, sans-IO: the decisions of a FetchFile.

Every source is asked for the chunk manifest; the manifest most sources agree on is the one used
and a source that disagrees is bad. Chunks go out lowest first, a few in flight per source. A chunk
that fails its hash makes its source bad, and it goes to another source; so do the chunks of a
source that was lost (it may come back). With no usable source left, the plan waits
LOST_SOURCE_WAIT_S for a lost one to return, then fails; with only bad ones left it fails at once.
The caller feeds events with its clock and asks what to do; nothing here does I/O.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from services.gossip.model_hashes import ChunkManifest

MIB = 1024 * 1024
# Requested and not yet verified, per source: the link's bandwidth-delay product (16 MiB keeps
# ~1.3 Gbit/s busy at 100 ms RTT), but never fewer than two chunks (a big file's are big).
IN_FLIGHT_BYTES_PER_SOURCE = 16 * MIB
MIN_CHUNKS_IN_FLIGHT_PER_SOURCE = 2
# After the first manifest arrives, wait this long for the other sources' before choosing one.
MANIFEST_QUORUM_WAIT_S = 2.0
# No source can send: wait this long for a lost one to come back before giving up.
LOST_SOURCE_WAIT_S = 10.0


class SourceState(Enum):
    ASKING = "asking"  # connecting, or waiting for its manifest
    READY = "ready"  # its manifest is the chosen one (or, before the choice, it has one)
    LOST = "lost"  # no link, or the link or stream broke: may come back
    BAD = "bad"  # refused, lied, or broke the protocol: never asked again


@dataclass
class _Source:
    node_id: str
    state: SourceState = SourceState.ASKING
    reason: str = ""
    manifest: ChunkManifest | None = None
    in_flight: set[int] = field(default_factory=set)
    was_lost: bool = False  # asking again after a loss: not usable until it answers

    @property
    def usable(self) -> bool:
        return self.state is SourceState.READY or (self.state is SourceState.ASKING and not self.was_lost)


@dataclass(frozen=True)
class Running:
    pass


@dataclass(frozen=True)
class Complete:
    """Every chunk is verified: the caller checks the whole file's hash."""


@dataclass(frozen=True)
class Failed:
    reason: str


Outcome = Running | Complete | Failed


class FetchPlan:
    def __init__(
        self,
        file_bytes: int | None,
        sources: Sequence[str],
        now: float,
        in_flight_bytes_per_source: int = IN_FLIGHT_BYTES_PER_SOURCE,
        manifest_wait_s: float = MANIFEST_QUORUM_WAIT_S,
        lost_wait_s: float = LOST_SOURCE_WAIT_S,
    ) -> None:
        self.file_bytes = file_bytes
        self._sources = {node_id: _Source(node_id) for node_id in dict.fromkeys(sources)}
        self._in_flight_bytes = in_flight_bytes_per_source
        self._in_flight_limit = MIN_CHUNKS_IN_FLIGHT_PER_SOURCE  # set from the chosen manifest
        self._manifest_wait_s = manifest_wait_s
        self._lost_wait_s = lost_wait_s
        self._arrivals: list[str] = []  # sources in the order their manifests came
        self._first_manifest_at: float | None = None
        self.manifest: ChunkManifest | None = None
        self._resume_checked = False
        self._missing: list[int] = []  # a heap: the lowest missing chunk goes out first
        self._verified: set[int] = set()
        self.bytes_done = 0
        self.bytes_resumed = 0
        self._failure = ""
        self._starved_since: float | None = None
        self._update(now)

    # ---- events -----------------------------------------------------------------------------

    def manifest_from(self, node_id: str, manifest: ChunkManifest, now: float) -> None:
        source = self._sources[node_id]
        if source.state is SourceState.BAD:
            return
        if self.file_bytes is not None and manifest.file_bytes != self.file_bytes:
            self._bad(source, f"its manifest is for {manifest.file_bytes} bytes, not {self.file_bytes}")
        elif self.manifest is not None and manifest != self.manifest:
            self._bad(source, "its manifest disagrees with the one chosen")
        else:
            source.state, source.manifest, source.reason = SourceState.READY, manifest, ""
            source.was_lost = False
            if node_id not in self._arrivals:
                self._arrivals.append(node_id)
            if self._first_manifest_at is None:
                self._first_manifest_at = now
        self._update(now)

    def refused(self, node_id: str, reason: str, now: float) -> None:
        self._bad(self._sources[node_id], f"refused: {reason}")
        self._update(now)

    def broke_protocol(self, node_id: str, reason: str, now: float) -> None:
        self._bad(self._sources[node_id], f"broke the protocol: {reason}")
        self._update(now)

    def lost(self, node_id: str, reason: str, now: float) -> None:
        source = self._sources[node_id]
        if source.state is not SourceState.BAD:
            source.state, source.reason, source.was_lost = SourceState.LOST, reason, True
            self._give_back(source)
        self._update(now)

    def retrying(self, node_id: str, now: float) -> None:
        """The caller is reaching a lost source again (it answers with its manifest once more)."""
        source = self._sources[node_id]
        if source.state is SourceState.LOST:
            source.state = SourceState.ASKING
        self._update(now)

    def resume_checked(self, verified: Iterable[int], now: float) -> None:
        """The chunks already in the .part that match the chosen manifest."""
        assert self.manifest is not None, "resume is checked against the chosen manifest"
        have = {i for i in verified if 0 <= i < self.manifest.chunk_count}
        self._verified = have
        self.bytes_resumed = self.bytes_done = sum(self.manifest.span(i)[1] for i in have)
        self._missing = [i for i in range(self.manifest.chunk_count) if i not in have]
        heapq.heapify(self._missing)
        self._resume_checked = True
        self._update(now)

    def chunk_verified(self, node_id: str, index: int, now: float) -> None:
        source = self._sources[node_id]
        source.in_flight.discard(index)
        if index not in self._verified and self.manifest is not None:
            self._verified.add(index)
            self.bytes_done += self.manifest.span(index)[1]
        self._update(now)

    def chunk_corrupt(self, node_id: str, index: int, now: float) -> None:
        self._bad(self._sources[node_id], f"chunk {index} did not match its hash")
        self._update(now)

    def whole_file_mismatch(self, now: float) -> None:
        """Every chunk matched the manifest, the file did not match its sha256: the manifest lied."""
        for source in self._sources.values():
            if source.manifest is not None and source.manifest == self.manifest:
                self._bad(source, "its manifest does not describe the file with this sha256")
        self._failure = "the fetched file does not match its sha256 (its sources sent a false manifest)"
        self._update(now)

    def tick(self, now: float) -> None:
        """Time passed (the caller wakes at next_deadline())."""
        self._update(now)

    # ---- what to do -------------------------------------------------------------------------

    @property
    def needs_resume_check(self) -> bool:
        return self.manifest is not None and not self._resume_checked

    def assign(self, node_id: str) -> list[int]:
        """Chunks `node_id` should fetch now (up to its in-flight limit), lowest first."""
        source = self._sources[node_id]
        if source.state is not SourceState.READY or not self._resume_checked or self._failure:
            return []
        chosen = []
        while self._missing and len(source.in_flight) < self._in_flight_limit:
            index = heapq.heappop(self._missing)
            if index in self._verified:
                continue  # a lost or bad source's write landed after its chunks were given back
            source.in_flight.add(index)
            chosen.append(index)
        return chosen

    def outcome(self, now: float) -> Outcome:
        self._update(now)
        if self._failure:
            return Failed(self._failure)
        if self.manifest is not None and self._resume_checked:
            if len(self._verified) == self.manifest.chunk_count:
                return Complete()
        return Running()

    def next_deadline(self) -> float | None:
        """When outcome() or the manifest choice may change with no event but time."""
        deadlines = []
        if self.manifest is None and self._first_manifest_at is not None:
            deadlines.append(self._first_manifest_at + self._manifest_wait_s)
        if self._starved_since is not None:
            deadlines.append(self._starved_since + self._lost_wait_s)
        return min(deadlines) if deadlines else None

    def state_of(self, node_id: str) -> SourceState:
        return self._sources[node_id].state

    def sending(self) -> list[str]:
        return [s.node_id for s in self._sources.values() if s.in_flight]

    def bad_sources(self) -> list[tuple[str, str]]:
        return [(s.node_id, s.reason) for s in self._sources.values() if s.state is SourceState.BAD]

    def chosen_sources(self) -> list[str]:
        """The sources whose manifest is the chosen one (what a later fetch may trust)."""
        return [s.node_id for s in self._sources.values() if self.manifest and s.manifest == self.manifest]

    # ---- internals --------------------------------------------------------------------------

    def _bad(self, source: _Source, reason: str) -> None:
        if source.state is not SourceState.BAD:
            source.state, source.reason = SourceState.BAD, reason
        self._give_back(source)

    def _give_back(self, source: _Source) -> None:
        for index in source.in_flight:
            heapq.heappush(self._missing, index)
        source.in_flight.clear()

    def _update(self, now: float) -> None:
        self._maybe_choose(now)
        if any(s.usable for s in self._sources.values()):
            self._starved_since = None
            return
        if self._failure:
            return
        if all(s.state is SourceState.BAD for s in self._sources.values()):
            self._failure = "no good source left: " + self._reasons()
            return
        if self._starved_since is None:
            self._starved_since = now
        elif now - self._starved_since >= self._lost_wait_s:
            self._failure = f"every source was lost for {self._lost_wait_s:.0f}s: " + self._reasons()

    def _maybe_choose(self, now: float) -> None:
        if self.manifest is not None:
            return
        offered = {
            n: s.manifest
            for n, s in self._sources.items()
            if s.state is SourceState.READY and s.manifest is not None
        }
        if not offered:
            return
        asking = any(s.state is SourceState.ASKING and not s.was_lost for s in self._sources.values())
        assert self._first_manifest_at is not None
        if asking and now < self._first_manifest_at + self._manifest_wait_s:
            return
        votes = Counter(offered.values())
        # Most votes wins; a tie goes to the manifest that arrived first.
        first_seen: dict[ChunkManifest, int] = {}
        for order, node_id in enumerate(self._arrivals):
            if node_id in offered:
                first_seen.setdefault(offered[node_id], order)
        chosen = max(votes, key=lambda m: (votes[m], -first_seen[m]))
        self.manifest = chosen
        per_chunk = self._in_flight_bytes // chosen.chunk_bytes
        self._in_flight_limit = max(MIN_CHUNKS_IN_FLIGHT_PER_SOURCE, per_chunk)
        for node_id, manifest in offered.items():
            if manifest != chosen:
                source = self._sources[node_id]
                self._bad(source, f"its manifest disagrees with the one {votes[chosen]} source(s) sent")

    def _reasons(self) -> str:
        return "; ".join(f"{s.node_id[:8]}: {s.reason or s.state.value}" for s in self._sources.values())
