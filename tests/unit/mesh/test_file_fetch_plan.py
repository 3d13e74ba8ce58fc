"""Which chunk comes from which source (services/mesh/file_fetch_plan.py): a pure plan, driven by
events and a fake clock: manifest agreement, resume, bad chunks, lost and bad sources."""

from __future__ import annotations

import hashlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from services.gossip.model_hashes import ChunkManifest
from services.mesh.file_fetch_plan import (
    LOST_SOURCE_WAIT_S,
    MANIFEST_QUORUM_WAIT_S,
    MIN_CHUNKS_IN_FLIGHT_PER_SOURCE,
    Complete,
    Failed,
    FetchPlan,
    Running,
    SourceState,
)

MIB = 1024 * 1024
A, B, C = "a" * 32, "b" * 32, "c" * 32


def manifest(chunks: int = 10, salt: bytes = b"", chunk_bytes: int = MIB) -> ChunkManifest:
    size = chunks * chunk_bytes - 7 if chunks else 0  # a short last chunk
    return ChunkManifest(
        size, chunk_bytes, tuple(hashlib.sha256(salt + bytes([i])).digest() for i in range(chunks))
    )


TRUE = manifest()
FALSE = manifest(salt=b"lie")


def plan(sources: list[str], m: ChunkManifest = TRUE, **kwargs: object) -> FetchPlan:
    return FetchPlan(m.file_bytes, sources, 0.0, **kwargs)  # type: ignore[arg-type]


def started(sources: list[str], m: ChunkManifest = TRUE, **kwargs: object) -> FetchPlan:
    """Every source answered `m`, nothing on disk yet."""
    p = plan(sources, m, **kwargs)
    for source in sources:
        p.manifest_from(source, m, 0.0)
    assert p.manifest == m and p.needs_resume_check
    p.resume_checked([], 0.0)
    return p


def fetch_all(p: FetchPlan, source: str, now: float = 0.0) -> None:
    while chunks := p.assign(source):
        for index in chunks:
            p.chunk_verified(source, index, now)


# ---- manifests


def test_one_source_one_manifest_then_every_chunk_completes() -> None:
    p = started([A])
    assert isinstance(p.outcome(0.0), Running)
    fetch_all(p, A)
    assert isinstance(p.outcome(0.0), Complete)
    assert p.bytes_done == TRUE.file_bytes and p.bytes_resumed == 0


def test_no_chunk_goes_out_before_the_manifest_is_chosen_and_the_part_checked() -> None:
    p = plan([A, B])
    p.manifest_from(A, TRUE, 0.0)
    assert p.manifest is None and p.assign(A) == []  # B may still answer
    p.manifest_from(B, TRUE, 0.5)
    assert p.manifest == TRUE and p.needs_resume_check
    assert p.assign(A) == []
    p.resume_checked([], 0.5)
    assert p.assign(A)


def test_a_silent_source_is_waited_for_only_so_long() -> None:
    p = plan([A, B])
    p.manifest_from(A, TRUE, 1.0)
    assert p.next_deadline() == 1.0 + MANIFEST_QUORUM_WAIT_S
    p.tick(1.0 + MANIFEST_QUORUM_WAIT_S - 0.01)
    assert p.manifest is None
    p.tick(1.0 + MANIFEST_QUORUM_WAIT_S)
    assert p.manifest == TRUE
    p.manifest_from(B, TRUE, 5.0)  # late but agreeing: welcome
    assert p.state_of(B) is SourceState.READY


def test_the_manifest_most_sources_agree_on_wins_and_the_others_are_bad() -> None:
    p = plan([A, B, C])
    p.manifest_from(A, FALSE, 0.0)
    p.manifest_from(B, TRUE, 0.0)
    p.manifest_from(C, TRUE, 0.0)
    assert p.manifest == TRUE
    assert p.bad_sources() == [(A, "its manifest disagrees with the one 2 source(s) sent")]
    assert p.chosen_sources() == [B, C]


def test_a_tie_goes_to_the_manifest_that_came_first() -> None:
    p = plan([A, B])
    p.manifest_from(B, FALSE, 0.0)
    p.manifest_from(A, TRUE, 0.1)
    assert p.manifest == FALSE and [n for n, _ in p.bad_sources()] == [A]


def test_a_late_disagreeing_manifest_makes_its_source_bad() -> None:
    p = plan([A, B])
    p.manifest_from(A, TRUE, 0.0)
    p.tick(MANIFEST_QUORUM_WAIT_S)
    p.manifest_from(B, FALSE, 3.0)
    assert p.state_of(B) is SourceState.BAD and "disagrees" in p.bad_sources()[0][1]


def test_a_manifest_for_another_size_is_bad_whatever_the_votes() -> None:
    p = plan([A, B])
    p.manifest_from(A, manifest(chunks=3), 0.0)
    p.manifest_from(B, TRUE, 0.0)
    assert p.manifest == TRUE
    assert p.bad_sources() == [(A, f"its manifest is for {3 * MIB - 7} bytes, not {TRUE.file_bytes}")]


def test_an_unknown_size_takes_the_manifest_size() -> None:
    p = FetchPlan(None, [A], 0.0)
    p.manifest_from(A, TRUE, 0.0)
    assert p.manifest == TRUE


def test_an_empty_file_is_complete_once_checked() -> None:
    empty = manifest(chunks=0)
    p = started([A], empty)
    assert p.assign(A) == [] and isinstance(p.outcome(0.0), Complete)


# ---- chunks


def test_chunks_go_out_lowest_first_up_to_the_in_flight_bytes() -> None:
    p = started([A, B], in_flight_bytes_per_source=3 * MIB)
    assert p.assign(A) == [0, 1, 2]
    assert p.assign(A) == []  # full
    assert p.assign(B) == [3, 4, 5]
    p.chunk_verified(A, 1, 0.0)
    assert p.assign(A) == [6]
    assert sorted(p.sending()) == [A, B]


def test_big_chunks_still_keep_two_in_flight() -> None:
    big = manifest(chunks=4, chunk_bytes=64 * MIB)
    p = started([A], big, in_flight_bytes_per_source=16 * MIB)
    assert p.assign(A) == list(range(MIN_CHUNKS_IN_FLIGHT_PER_SOURCE))


def test_a_chunk_that_fails_its_hash_makes_the_source_bad_and_goes_elsewhere() -> None:
    p = started([A, B], in_flight_bytes_per_source=2 * MIB)
    assert p.assign(A) == [0, 1]
    assert p.assign(B) == [2, 3]
    p.chunk_corrupt(B, 3, 0.0)
    assert p.bad_sources() == [(B, "chunk 3 did not match its hash")]
    assert p.assign(B) == []
    p.chunk_verified(A, 0, 0.0)
    p.chunk_verified(A, 1, 0.0)
    assert p.assign(A) == [2, 3]  # B's chunks, to the good source
    for index in (2, 3):
        p.chunk_verified(A, index, 0.0)
    fetch_all(p, A)
    assert isinstance(p.outcome(0.0), Complete)


def test_a_write_that_lands_after_its_source_was_lost_is_kept_and_not_fetched_again() -> None:
    p = started([A, B], in_flight_bytes_per_source=2 * MIB)
    assert p.assign(A) == [0, 1]
    p.lost(A, "reset", 0.0)
    p.chunk_verified(A, 0, 0.0)  # its thread finished the write after the loss
    assert p.assign(B) == [1, 2]
    assert p.bytes_done == MIB


def test_refused_and_broken_sources_are_bad_with_their_reason() -> None:
    p = plan([A, B, C])
    p.refused(A, "not advertised", 0.0)
    p.broke_protocol(B, "a ping frame where a file reply belongs", 0.0)
    assert dict(p.bad_sources()) == {
        A: "refused: not advertised",
        B: "broke the protocol: a ping frame where a file reply belongs",
    }
    assert isinstance(p.outcome(0.0), Running)  # C may still answer


def test_all_sources_bad_fails_at_once_with_every_reason() -> None:
    p = plan([A, B])
    p.refused(A, "not advertised", 0.0)
    p.refused(B, "not advertised", 0.0)
    outcome = p.outcome(0.0)
    assert isinstance(outcome, Failed)
    assert outcome.reason.startswith("no good source left")
    assert A[:8] in outcome.reason and B[:8] in outcome.reason


def test_every_source_corrupt_fails() -> None:
    p = started([A, B])
    for source in (A, B):
        [first, *_] = p.assign(source)
        p.chunk_corrupt(source, first, 0.0)
    assert isinstance(p.outcome(0.0), Failed)


# ---- lost sources


def test_a_lost_sources_chunks_move_to_the_others() -> None:
    p = started([A, B], in_flight_bytes_per_source=2 * MIB)
    assert p.assign(A) == [0, 1]
    assert p.assign(B) == [2, 3]
    p.lost(A, "connection reset", 1.0)
    assert p.state_of(A) is SourceState.LOST and not p.bad_sources()
    p.chunk_verified(B, 2, 1.0)
    p.chunk_verified(B, 3, 1.0)
    assert p.assign(B) == [0, 1]
    for index in (0, 1):
        p.chunk_verified(B, index, 1.0)
    fetch_all(p, B, 1.0)
    assert isinstance(p.outcome(1.0), Complete)


def test_a_lost_source_that_comes_back_is_used_again() -> None:
    p = started([A])
    p.assign(A)
    p.lost(A, "link gone", 1.0)
    p.retrying(A, 2.0)
    assert p.state_of(A) is SourceState.ASKING and p.assign(A) == []
    p.manifest_from(A, TRUE, 3.0)
    fetch_all(p, A, 3.0)
    assert isinstance(p.outcome(3.0), Complete)


def test_with_every_source_lost_the_plan_waits_then_fails() -> None:
    p = started([A, B])
    p.lost(A, "link gone", 10.0)
    p.lost(B, "link gone", 11.0)
    assert p.next_deadline() == 11.0 + LOST_SOURCE_WAIT_S
    for t in range(12, 21):  # retries that find no link do not restart the wait
        p.retrying(A, float(t))
        p.lost(A, "not linked", float(t))
    assert isinstance(p.outcome(11.0 + LOST_SOURCE_WAIT_S - 0.1), Running)
    outcome = p.outcome(11.0 + LOST_SOURCE_WAIT_S)
    assert isinstance(outcome, Failed) and "lost" in outcome.reason


def test_a_source_back_before_the_deadline_saves_the_fetch() -> None:
    p = started([A])
    p.lost(A, "link gone", 0.0)
    p.retrying(A, LOST_SOURCE_WAIT_S - 1)
    p.manifest_from(A, TRUE, LOST_SOURCE_WAIT_S - 0.5)
    assert p.next_deadline() is None
    assert isinstance(p.outcome(LOST_SOURCE_WAIT_S * 3), Running)


def test_sources_never_linked_count_as_lost() -> None:
    p = plan([A])
    p.lost(A, "not linked", 0.0)
    assert isinstance(p.outcome(LOST_SOURCE_WAIT_S - 0.1), Running)
    assert isinstance(p.outcome(LOST_SOURCE_WAIT_S), Failed)


# ---- resume and the whole file


def test_resume_fetches_only_what_the_part_file_lacks() -> None:
    p = plan([A])
    p.manifest_from(A, TRUE, 0.0)
    p.resume_checked([0, 1, 2, 5, 99], 0.0)  # 99: not a chunk of this file
    assert p.bytes_resumed == p.bytes_done == 4 * MIB
    fetched = []
    while chunks := p.assign(A):
        fetched += chunks
        for index in chunks:
            p.chunk_verified(A, index, 0.0)
    assert fetched == [3, 4, 6, 7, 8, 9]
    assert isinstance(p.outcome(0.0), Complete) and p.bytes_done == TRUE.file_bytes


def test_a_part_file_with_everything_is_complete_at_once() -> None:
    p = plan([A])
    p.manifest_from(A, TRUE, 0.0)
    p.resume_checked(range(TRUE.chunk_count), 0.0)
    assert isinstance(p.outcome(0.0), Complete) and p.bytes_resumed == TRUE.file_bytes


def test_a_whole_file_mismatch_blames_the_manifests_sources_and_fails() -> None:
    p = plan([A, B, C])
    p.manifest_from(A, FALSE, 0.0)
    p.manifest_from(B, FALSE, 0.0)
    p.manifest_from(C, TRUE, 0.0)
    p.resume_checked([], 0.0)
    fetch_all(p, A)
    assert isinstance(p.outcome(0.0), Complete)
    p.whole_file_mismatch(0.0)
    outcome = p.outcome(0.0)
    assert isinstance(outcome, Failed) and "sha256" in outcome.reason
    assert {n for n, _ in p.bad_sources()} == {A, B, C}  # C disagreed with the (false) majority


# ---- any order of events


events = st.lists(
    st.tuples(st.sampled_from(["verify", "corrupt", "lose", "retry", "tick"]), st.sampled_from([B, C])),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(steps=events, seed=st.integers(0, 2**16))
def test_an_honest_source_that_stays_always_completes_the_file(
    steps: list[tuple[str, str]], seed: int
) -> None:
    """A stays honest and linked; B and C fail in every way in any order. No chunk is ever out to
    two sources at once, bytes_done never exceeds the file, and the file completes."""
    rng = random.Random(seed)
    p = started([A, B, C], in_flight_bytes_per_source=3 * MIB)
    out: dict[str, list[int]] = {A: [], B: [], C: []}
    now = 0.0
    for action, source in steps:
        now += 0.1
        for node in (A, B, C):
            out[node] += p.assign(node)
        flat = [i for chunks in out.values() for i in chunks]
        assert len(flat) == len(set(flat)), out
        if action == "verify" and out[source]:
            p.chunk_verified(source, out[source].pop(rng.randrange(len(out[source]))), now)
        elif action == "corrupt" and out[source]:
            p.chunk_corrupt(source, out[source][0], now)
            out[source] = []
        elif action == "lose":
            p.lost(source, "gone", now)
            out[source] = []
        elif action == "retry" and p.state_of(source) is SourceState.LOST:
            p.retrying(source, now)
            p.manifest_from(source, TRUE, now)
        if out[A]:
            p.chunk_verified(A, out[A].pop(0), now)
        assert p.bytes_done <= TRUE.file_bytes
    while not isinstance(p.outcome(now), Complete):
        out[A] += p.assign(A)
        assert out[A] or out[B] or out[C], "the plan stalled"
        for node in (A, B, C):
            if out[node]:
                p.chunk_verified(node, out[node].pop(0), now)
    assert p.bytes_done == TRUE.file_bytes
