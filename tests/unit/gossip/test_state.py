import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gossip.digest import NUM_DIGEST_BUCKETS, bucket_of, node_key
from services.gossip.items import GossipItem, Tombstone, rank_of
from services.gossip.record_limits import InvalidRecord
from services.gossip.state import (
    LOCAL_REFRESH_INTERVAL_S,
    PEER_DEAD_AFTER_S,
    RECORD_STALE_AFTER_S,
    SWEEP_INTERVAL_S,
    TOMBSTONE_TTL_S,
    GossipState,
)
from services.proto.meshllm.gossip.v1 import gossip_pb2

LOCAL = "a" * 32
PEER = "b" * 32
OTHER = "c" * 32
T0 = 1_000.0


def record(node_id: str = PEER, version: int = 1, **fields: object) -> gossip_pb2.NodeRecord:
    fields.setdefault("name", node_id[:4])
    return gossip_pb2.NodeRecord(node_id=node_id, version=version, **fields)  # type: ignore[arg-type]


def state(now: float = T0) -> GossipState:
    return GossipState(record(LOCAL, vram_bytes=8), now)


def versions(s: GossipState) -> dict[str, int]:
    return {r.node_id: r.version for r in s.view()}


# --- the local record --------------------------------------------------------------------------------


def test_new_state_holds_only_the_local_record() -> None:
    s = state()
    assert [r.node_id for r in s.view()] == [LOCAL]
    assert s.known_peers() == ()
    assert s.digest() == {LOCAL: 2}


def test_set_local_bumps_version_and_stamps_time() -> None:
    s = state()
    stored = s.set_local(record(LOCAL, version=1, vram_bytes=16), T0 + 1)
    assert stored.version == 2
    assert stored.updated_unix_s == T0 + 1
    assert s.local.vram_bytes == 16


def test_set_local_keeps_a_version_already_ahead() -> None:
    s = state()
    assert s.set_local(record(LOCAL, version=9), T0).version == 9
    assert s.set_local(record(LOCAL, version=3), T0).version == 10


def test_set_local_refuses_another_node_id_and_bad_records() -> None:
    s = state()
    with pytest.raises(ValueError, match="node id"):
        s.set_local(record(PEER), T0)
    with pytest.raises(InvalidRecord):
        s.set_local(record(LOCAL, name="x" * 10_000), T0)


def test_caller_cannot_mutate_state_through_returned_records() -> None:
    s = state()
    s.merge([record(PEER)], None, T0)
    for r in s.view():
        r.name = "mutated"
    s.local.name = "mutated"
    assert {r.name for r in s.view()} == {LOCAL[:4], PEER[:4]}


def test_refresh_is_due_after_the_interval_and_re_versions() -> None:
    s = state()
    assert not s.refresh_due(T0 + LOCAL_REFRESH_INTERVAL_S - 1)
    assert s.refresh_due(T0 + LOCAL_REFRESH_INTERVAL_S)
    assert s.refresh_local(T0 + LOCAL_REFRESH_INTERVAL_S).version == 2
    assert not s.refresh_due(T0 + LOCAL_REFRESH_INTERVAL_S + 1)


def test_view_is_local_first_then_by_node_id() -> None:
    s = state()
    s.merge([record(OTHER), record(PEER), record("0" * 32)], None, T0)
    assert [r.node_id for r in s.view()] == [LOCAL, "0" * 32, PEER, OTHER]
    view = s.mesh_view()
    assert view.local_node_id == LOCAL and len(view.nodes) == 4


# --- merge -------------------------------------------------------------------------------------------


def test_merge_keeps_the_newest_version() -> None:
    s = state()
    result = s.merge([record(version=2)], None, T0)
    assert result.joined == [PEER] and result.view_changed
    assert s.merge([record(version=1)], None, T0).fresh == []
    result = s.merge([record(version=3, name="new")], None, T0)
    assert result.changed == [PEER]
    assert versions(s)[PEER] == 3


def test_merging_the_same_record_twice_changes_nothing() -> None:
    s = state()
    s.merge([record()], None, T0)
    result = s.merge([record()], None, T0)
    assert not result.view_changed and result.fresh == []


def test_equal_versions_with_different_content_pick_the_same_winner_in_any_order() -> None:
    a, b = record(version=4, name="one"), record(version=4, name="two")
    first, second = state(), state()
    first.merge([a, b], None, T0)
    second.merge([b, a], None, T0)
    assert first.view() == second.view()


def test_tombstone_beats_a_record_of_the_same_version() -> None:
    s = state()
    s.merge([record(version=3)], None, T0)
    result = s.merge([Tombstone(PEER, 3, T0)], None, T0)
    assert result.left == [PEER]
    assert PEER not in versions(s)
    assert s.merge([record(version=3)], None, T0).fresh == []
    assert s.merge([record(version=2)], None, T0).fresh == []


def test_tombstone_loses_to_an_older_version_than_the_record() -> None:
    s = state()
    s.merge([record(version=5)], None, T0)
    assert s.merge([Tombstone(PEER, 4, T0)], None, T0).fresh == []
    assert versions(s)[PEER] == 5


def test_a_node_that_comes_back_with_a_higher_version_rejoins() -> None:
    s = state()
    s.merge([Tombstone(PEER, 3, T0)], None, T0)
    result = s.merge([record(version=4)], None, T0 + 1)
    assert result.joined == [PEER]
    assert isinstance(s.item_for(PEER), gossip_pb2.NodeRecord)


def test_tombstone_expires_after_its_ttl_so_a_restarted_node_is_accepted_again() -> None:
    s = state()
    s.merge([record(version=7)], None, T0)
    s.leave(PEER, T0)
    assert s.merge([record(version=1)], None, T0 + TOMBSTONE_TTL_S - 1).fresh == []
    s.expire(T0 + TOMBSTONE_TTL_S + SWEEP_INTERVAL_S)
    assert s.item_for(PEER) is None
    assert s.merge([record(version=1)], None, T0 + TOMBSTONE_TTL_S + SWEEP_INTERVAL_S).joined == [PEER]


def test_a_tombstone_already_past_its_ttl_is_not_stored() -> None:
    s = state()
    assert s.merge([Tombstone(PEER, 3, T0 - TOMBSTONE_TTL_S)], None, T0).fresh == []
    assert s.item_for(PEER) is None


def test_a_tombstone_from_the_future_is_clamped_to_now() -> None:
    s = state()
    s.merge([Tombstone(PEER, 3, T0 + 10_000)], None, T0)
    item = s.item_for(PEER)
    assert isinstance(item, Tombstone) and item.died_unix_s == T0


def test_a_leaving_record_becomes_a_tombstone() -> None:
    s = state()
    s.merge([record(version=2)], None, T0)
    result = s.merge([record(version=3, leaving=True)], None, T0)
    assert result.left == [PEER]
    assert s.item_for(PEER) == Tombstone(PEER, 3, T0)
    assert result.fresh == [Tombstone(PEER, 3, T0)]


def test_leave_tombstones_a_known_peer_immediately() -> None:
    s = state()
    s.merge([record(version=2)], None, T0)
    assert s.leave(PEER, T0) == Tombstone(PEER, 2, T0)
    assert s.known_peers() == ()
    assert s.leave(OTHER, T0) is None
    with pytest.raises(ValueError, match="goodbye"):
        s.leave(LOCAL, T0)


def test_goodbye_marks_our_record_leaving_with_a_new_version() -> None:
    s = state()
    bye = s.goodbye(T0)
    assert bye.leaving and bye.version == 2
    peer = GossipState(record(PEER), T0)
    peer.merge([record(LOCAL)], None, T0)
    assert peer.merge([bye], None, T0).left == [LOCAL]


# --- our own record is ours --------------------------------------------------------------------------


def test_a_higher_version_of_our_id_makes_us_jump_past_it_keeping_our_content() -> None:
    s = state()
    result = s.merge([record(LOCAL, version=41, vram_bytes=999)], PEER, T0)
    assert result.local_bumped
    assert s.local.version == 42 and s.local.vram_bytes == 8
    assert result.fresh[0].version == 42


def test_a_tombstone_for_us_makes_us_refute_it() -> None:
    s = state()
    result = s.merge([Tombstone(LOCAL, 1, T0)], PEER, T0)
    assert result.local_bumped and s.local.version == 2
    assert LOCAL in versions(s)


def test_an_echo_of_our_own_record_changes_nothing() -> None:
    s = state()
    assert not s.merge([s.local], PEER, T0).view_changed
    assert s.local.version == 1


def test_same_version_of_our_id_with_other_content_is_overtaken() -> None:
    s = state()
    impostor = s.local
    impostor.name = "someone else"
    assert s.merge([impostor], PEER, T0).local_bumped
    assert s.local.version == 2 and s.local.name == LOCAL[:4]


def test_an_older_version_of_our_id_is_ignored() -> None:
    s = state()
    s.set_local(record(LOCAL, version=10), T0)
    assert not s.merge([record(LOCAL, version=3)], PEER, T0).local_bumped
    assert s.local.version == 10


# --- liveness ----------------------------------------------------------------------------------------


def watched_peer(heard_at: float = T0) -> GossipState:
    s = state()
    s.merge([record()], None, heard_at)
    s.mark_heard(PEER, heard_at)
    return s


def test_watched_peer_expires_at_exactly_the_threshold() -> None:
    s = watched_peer()
    assert s.expire(T0 + PEER_DEAD_AFTER_S - 0.001) == []
    assert s.expire(T0 + PEER_DEAD_AFTER_S) == [PEER]
    assert s.item_for(PEER) == Tombstone(PEER, 1, T0 + PEER_DEAD_AFTER_S)
    assert s.known_peers() == ()


def test_hearing_a_watched_peer_again_postpones_expiry() -> None:
    s = watched_peer()
    s.mark_heard(PEER, T0 + 4)
    assert s.expire(T0 + 8) == []
    assert s.expire(T0 + 4 + PEER_DEAD_AFTER_S) == [PEER]


def test_a_fresher_record_counts_as_hearing_the_node() -> None:
    s = watched_peer()
    s.merge([record(version=2)], OTHER, T0 + 3)
    assert s.expire(T0 + PEER_DEAD_AFTER_S) == []
    assert s.expire(T0 + 3 + PEER_DEAD_AFTER_S) == [PEER]


def test_a_stale_copy_does_not_count_as_hearing_the_node() -> None:
    s = watched_peer()
    s.merge([record(version=1)], OTHER, T0 + 3)
    assert s.expire(T0 + PEER_DEAD_AFTER_S) == [PEER]


def test_a_message_straight_from_the_peer_counts_as_hearing_it() -> None:
    s = watched_peer()
    s.merge([], PEER, T0 + 3)
    assert s.expire(T0 + PEER_DEAD_AFTER_S) == []


def test_unwatched_records_live_until_the_stale_deadline() -> None:
    s = state()
    s.merge([record()], None, T0)
    assert s.expire(T0 + 10 * PEER_DEAD_AFTER_S) == []
    assert s.expire(T0 + RECORD_STALE_AFTER_S) == [PEER]


def test_unwatching_a_peer_falls_back_to_the_stale_deadline() -> None:
    s = watched_peer()
    s.unwatch(PEER)
    assert s.expire(T0 + 2 * PEER_DEAD_AFTER_S) == []


def test_an_expired_peer_stays_dead_until_it_publishes_a_newer_version() -> None:
    s = watched_peer()
    s.expire(T0 + PEER_DEAD_AFTER_S)
    assert s.merge([record(version=1)], OTHER, T0 + 6).fresh == []
    assert s.merge([record(version=2)], OTHER, T0 + 6).joined == [PEER]


def test_we_never_expire_ourselves() -> None:
    s = state()
    s.mark_heard(LOCAL, T0)
    assert s.expire(T0 + RECORD_STALE_AFTER_S * 2) == []
    assert s.view()[0].node_id == LOCAL


# --- digests and anti-entropy ------------------------------------------------------------------------


def test_digest_covers_records_tombstones_and_us() -> None:
    s = state()
    s.merge([record(PEER, 3), Tombstone(OTHER, 2, T0)], None, T0)
    assert s.digest() == {LOCAL: 2, PEER: 6, OTHER: 5}


def test_delta_for_sends_only_what_the_peer_lacks_or_has_older() -> None:
    s = state()
    s.merge([record(PEER, 3), Tombstone(OTHER, 2, T0)], None, T0)
    peer_digest = {LOCAL: 2, PEER: 6, OTHER: 1}
    assert s.delta_for(peer_digest) == [Tombstone(OTHER, 2, T0)]
    assert {i.node_id for i in s.delta_for({})} == {LOCAL, PEER, OTHER}


def test_agreeing_summaries_need_no_entries() -> None:
    a, b = state(), GossipState(record(LOCAL, vram_bytes=8), T0)
    assert a.entries_for(b.summary()) is None


def exchange(a: GossipState, b: GossipState, now: float = T0) -> None:
    """The four anti-entropy steps, a starting."""
    entries = b.entries_for(a.summary())
    if entries is None:
        return
    delta = a.reconcile(entries)
    b.merge(delta.items, a.local_id, now)
    a.merge(b.items_for_keys(delta.want_keys), b.local_id, now)


def test_one_exchange_makes_two_views_equal() -> None:
    a, b = state(), GossipState(record(PEER), T0)
    a.merge([record(OTHER, 5), Tombstone("d" * 32, 2, T0)], None, T0)
    b.merge([record(OTHER, 7), record("e" * 32)], None, T0)
    exchange(a, b)
    assert a.digest() == b.digest()
    assert a.entries_for(b.summary()) is None
    assert versions(a)[OTHER] == 7


def test_entries_carry_whole_buckets_up_to_the_limit_and_rotate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.gossip.state.MAX_DIGEST_ENTRIES", 40)
    big, empty = state(), GossipState(record(PEER), T0)
    big.merge([record(f"{i:032x}") for i in range(400)], None, T0)
    covered: set[int] = set()
    for _ in range(NUM_DIGEST_BUCKETS):
        entries = big.entries_for(empty.summary())
        assert entries is not None and 0 < len(entries.ranks) <= 40
        assert all(bucket_of(key) in entries.buckets for key in entries.ranks)
        assert len(entries.ranks) == sum(bucket_of(node_key(i)) in entries.buckets for i in big.digest())
        covered.update(entries.buckets)
    assert covered == set(range(NUM_DIGEST_BUCKETS))


def test_unknown_keys_are_skipped() -> None:
    assert state().items_for_keys([12345, node_key(LOCAL)])[0].node_id == LOCAL


# --- merge is a join: any delivery order converges ---------------------------------------------------

NODE_IDS = [PEER, OTHER, "d" * 32]


@st.composite
def gossip_items(draw: st.DrawFn) -> GossipItem:
    node_id = draw(st.sampled_from(NODE_IDS))
    version = draw(st.integers(1, 4))
    if draw(st.booleans()):
        return Tombstone(node_id, version, T0 - draw(st.integers(0, 5)))
    return record(node_id, version, name=draw(st.sampled_from(["x", "y"])), leaving=draw(st.booleans()))


def final_state(items: list[GossipItem]) -> tuple[object, ...]:
    s = state()
    for item in items:
        s.merge([item], None, T0)
    return (s.view(), s.digest(), [s.item_for(n) for n in NODE_IDS])


@settings(max_examples=200)
@given(st.lists(gossip_items(), max_size=12), st.randoms(use_true_random=False))
def test_any_delivery_order_with_duplicates_converges(items: list[GossipItem], rnd: object) -> None:
    shuffled = list(items) + list(items[: len(items) // 2])
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert final_state(items) == final_state(shuffled)


@settings(max_examples=200)
@given(st.lists(gossip_items(), max_size=12))
def test_merge_keeps_the_highest_rank_per_node(items: list[GossipItem]) -> None:
    s = state()
    s.merge(items, None, T0)
    expected: dict[str, int] = {LOCAL: 2}
    for item in items:
        expected[item.node_id] = max(expected.get(item.node_id, 0), rank_of(item))
    assert s.digest() == expected


@settings(max_examples=100)
@given(st.lists(gossip_items(), max_size=8), st.lists(gossip_items(), max_size=8))
def test_anti_entropy_converges_any_two_views(left: list[GossipItem], right: list[GossipItem]) -> None:
    a, b = state(), GossipState(record(PEER), T0)
    a.merge([i for i in left if i.node_id != PEER], None, T0)
    b.merge([i for i in right if i.node_id != PEER], None, T0)
    exchange(a, b)
    assert a.digest() == b.digest()


def test_pairwise_merge_order_is_irrelevant_for_every_permutation() -> None:
    items: list[GossipItem] = [record(PEER, 2), Tombstone(PEER, 2, T0), record(PEER, 3, name="z")]
    items.append(record(PEER, 1))
    results = {repr(final_state(list(p))) for p in itertools.permutations(items)}
    assert len(results) == 1


# --- hearsay against direct evidence (a lost path is not a dead node) --------------------------------


def test_a_tombstone_for_a_peer_we_hear_ourselves_is_refused_and_handed_to_it() -> None:
    s = state()
    s.merge([record(PEER, 3)], PEER, T0)
    s.mark_heard(PEER, T0 + 1)
    result = s.merge([Tombstone(PEER, 3, T0 + 1)], OTHER, T0 + 2)
    assert versions(s)[PEER] == 3  # still in our view
    assert result.refuted == [Tombstone(PEER, 3, T0 + 1)]
    assert not result.left


def test_once_we_stop_hearing_the_peer_its_tombstone_is_taken() -> None:
    s = state()
    s.merge([record(PEER, 3)], PEER, T0)
    s.mark_heard(PEER, T0)
    result = s.merge([Tombstone(PEER, 3, T0 + 1)], OTHER, T0 + PEER_DEAD_AFTER_S + 0.1)
    assert PEER not in versions(s) and result.left == [PEER]


def test_a_peers_own_goodbye_is_taken_even_while_we_hear_it() -> None:
    s = state()
    s.merge([record(PEER, 3)], PEER, T0)
    s.mark_heard(PEER, T0)
    result = s.merge([record(PEER, 4, leaving=True)], PEER, T0 + 0.5)
    assert PEER not in versions(s) and result.left == [PEER] and not result.refuted


def test_the_mesh_losing_a_peer_we_watch_still_tombstones_it() -> None:
    s = state()
    s.merge([record(PEER, 3)], PEER, T0)
    s.mark_heard(PEER, T0)
    assert s.leave(PEER, T0 + 0.5) == Tombstone(PEER, 3, T0 + 0.5)
    assert PEER not in versions(s)
