import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.gossip.digest import bucket_of, node_key
from services.gossip.dissemination import (
    MAX_ITEMS_PER_EXCHANGE,
    PUSH_FANOUT,
    DisseminationConfig,
    GossipProtocol,
    Outgoing,
    choose_gossip_targets,
)
from services.gossip.items import Tombstone
from services.gossip.state import PEER_DEAD_AFTER_S, GossipState
from services.gossip.wire import (
    Delta,
    DigestEntries,
    DigestSummary,
    GossipDecodeError,
    decode_message,
    encode_delta,
    encode_message,
)
from services.proto.meshllm.gossip.v1 import gossip_pb2

T0 = 1_000.0


def node_id(i: int) -> str:
    return f"{i:032x}"


def record(i: int, version: int = 1, **fields: object) -> gossip_pb2.NodeRecord:
    return gossip_pb2.NodeRecord(node_id=node_id(i), name=f"n{i}", version=version, **fields)  # type: ignore[arg-type]


def mesh(n: int, seed: int = 1) -> dict[str, GossipProtocol]:
    """n nodes that all know each other's version-1 records."""
    nodes = {}
    for i in range(n):
        state = GossipState(record(i), T0)
        state.merge([record(j) for j in range(n) if j != i], None, T0)
        nodes[node_id(i)] = GossipProtocol(state, random.Random(seed + i))
    return nodes


def deliver(nodes: dict[str, GossipProtocol], sender: str, outgoing: list[Outgoing], now: float = T0) -> int:
    """Deliver messages (and everything they cause) breadth-first; return how many were delivered."""
    queue = [(sender, out) for out in outgoing]
    delivered = 0
    while queue:
        src, out = queue.pop(0)
        delivered += 1
        reaction = nodes[out.peer_id].receive(src, out.payload, now)
        queue.extend((out.peer_id, reply) for reply in reaction.outgoing)
    return delivered


# --- choosing targets --------------------------------------------------------------------------------


@given(st.lists(st.text(min_size=1), unique=True, max_size=30), st.integers(0, 10), st.integers(0, 2**32))
def test_targets_are_distinct_peers_never_excluded(peers: list[str], fanout: int, seed: int) -> None:
    exclude = set(peers[:2])
    targets = choose_gossip_targets(peers, fanout, random.Random(seed), exclude)
    assert len(set(targets)) == len(targets)
    assert set(targets) <= set(peers) - exclude
    assert len(targets) == min(fanout, len(set(peers) - exclude))


def test_no_peers_no_targets() -> None:
    assert choose_gossip_targets([], 3, random.Random(0)) == []
    assert choose_gossip_targets(["a"], 0, random.Random(0)) == []


def test_targets_are_spread_evenly() -> None:
    peers = [f"p{i}" for i in range(10)]
    rng = random.Random(3)
    counts = Counter(t for _ in range(3000) for t in choose_gossip_targets(peers, 3, rng, {"p0"}))
    assert "p0" not in counts
    assert min(counts.values()) > 0.8 * max(counts.values())


# --- push on change ----------------------------------------------------------------------------------


def test_a_local_change_is_pushed_as_a_rumor_to_fanout_peers() -> None:
    nodes = mesh(10)
    me = nodes[node_id(0)]
    out = me.on_local_change(record(0, vram_bytes=5), T0)
    assert len({o.peer_id for o in out}) == PUSH_FANOUT
    message = decode_message(out[0].payload)
    assert isinstance(message, Delta) and message.rumor
    assert message.items[0].version == 2  # type: ignore[union-attr]


def test_a_rumor_is_passed_on_once_and_reaches_the_whole_mesh() -> None:
    nodes = mesh(30)
    out = nodes[node_id(0)].on_local_change(record(0, vram_bytes=5), T0)
    delivered = deliver(nodes, node_id(0), out)
    have_it = [n for n in nodes.values() if n.state.item_for(node_id(0)).version == 2]  # type: ignore[union-attr]
    assert len(have_it) >= 25  # a flood with fanout 3 reaches ~94%; anti-entropy does the rest
    assert delivered <= PUSH_FANOUT * len(nodes)


def test_the_rumor_is_not_sent_back_to_its_sender() -> None:
    nodes = mesh(2)
    out = nodes[node_id(0)].on_local_change(record(0, vram_bytes=5), T0)
    reaction = nodes[node_id(1)].receive(node_id(0), out[0].payload, T0)
    assert reaction.merge.changed == [node_id(0)]
    assert reaction.outgoing == []


def test_announce_is_not_a_rumor() -> None:
    nodes = mesh(5)
    out = nodes[node_id(0)].announce()
    message = decode_message(out[0].payload)
    assert isinstance(message, Delta) and not message.rumor


# --- anti-entropy ------------------------------------------------------------------------------------


def test_a_round_sends_one_small_summary_when_nothing_changed() -> None:
    nodes = mesh(5)
    out = nodes[node_id(0)].on_round(T0 + 1)
    assert len(out) == 1 and len(out[0].payload) < 600
    assert isinstance(decode_message(out[0].payload), DigestSummary)
    assert deliver(nodes, node_id(0), out) == 1  # views agree: no reply


def test_anti_entropy_repairs_what_push_missed() -> None:
    nodes = mesh(2)
    a, b = nodes[node_id(0)], nodes[node_id(1)]
    a.state.set_local(record(0, vram_bytes=9), T0)  # changed without pushing
    a.state.merge([record(7), Tombstone(node_id(8), 4, T0)], None, T0)
    b.state.merge([record(9, version=3)], None, T0)
    deliver(nodes, node_id(0), a.on_round(T0 + 0.5))
    assert a.state.digest() == b.state.digest()
    assert b.state.item_for(node_id(0)).vram_bytes == 9  # type: ignore[union-attr]


def test_anti_entropy_replies_are_capped() -> None:
    nodes = mesh(2)
    a, b = nodes[node_id(0)], nodes[node_id(1)]
    b.state.merge([record(i) for i in range(100, 100 + 2 * MAX_ITEMS_PER_EXCHANGE)], None, T0)
    summary = a.on_round(T0 + 0.5)
    entries = b.receive(node_id(0), summary[0].payload, T0).outgoing
    want = a.receive(node_id(1), entries[0].payload, T0).outgoing
    reply = b.receive(node_id(0), want[0].payload, T0).outgoing
    message = decode_message(reply[0].payload)
    assert isinstance(message, Delta) and len(message.items) == MAX_ITEMS_PER_EXCHANGE
    for _ in range(3):
        deliver(nodes, node_id(0), a.on_round(T0 + 1, peers=[node_id(1)]))
    assert a.state.digest() == b.state.digest()


def test_a_restarted_node_moves_past_its_old_version() -> None:
    nodes = mesh(3)
    for other in (node_id(1), node_id(2)):
        nodes[other].state.merge([record(0, version=57)], None, T0)
    restarted = GossipProtocol(GossipState(record(0, version=1), T0), random.Random(9))
    restarted.state.merge([record(1), record(2)], None, T0)
    nodes[node_id(0)] = restarted
    deliver(nodes, node_id(0), restarted.on_round(T0 + 1))
    assert restarted.state.local.version == 58
    for other in (node_id(1), node_id(2)):
        assert nodes[other].state.item_for(node_id(0)).version == 58  # type: ignore[union-attr]


# --- liveness ----------------------------------------------------------------------------------------


def test_a_silent_watched_peer_is_tombstoned_and_the_news_pushed() -> None:
    nodes = mesh(6)
    me = nodes[node_id(0)]
    me.state.mark_heard(node_id(5), T0)
    out = me.on_round(T0 + PEER_DEAD_AFTER_S)
    pushes = [decode_message(o.payload) for o in out]
    tombstones = [i for m in pushes if isinstance(m, Delta) for i in m.items if isinstance(i, Tombstone)]
    assert tombstones and tombstones[0].node_id == node_id(5)
    del nodes[node_id(5)]
    deliver(nodes, node_id(0), [o for o in out if o.peer_id != node_id(5)], T0 + PEER_DEAD_AFTER_S)
    assert sum(n.state.item_for(node_id(5)) == tombstones[0] for n in nodes.values()) >= 3


def test_goodbye_removes_us_from_peers_at_once() -> None:
    nodes = mesh(4)
    deliver(nodes, node_id(0), nodes[node_id(0)].on_goodbye(T0 + 1), T0 + 1)
    gone = [n for i, n in nodes.items() if i != node_id(0) and node_id(0) not in n.state.known_peers()]
    assert len(gone) == 3


def test_peer_left_is_tombstoned_and_spread() -> None:
    nodes = mesh(4)
    out = nodes[node_id(0)].on_peer_left(node_id(3), T0 + 1)
    assert node_id(3) not in nodes[node_id(0)].state.known_peers()
    assert {o.peer_id for o in out} == {node_id(1), node_id(2)}
    assert nodes[node_id(0)].on_peer_left(node_id(42), T0) == []


# --- hostile peers -----------------------------------------------------------------------------------


def test_garbage_from_a_peer_raises_a_typed_error_and_changes_nothing() -> None:
    nodes = mesh(2)
    before = nodes[node_id(0)].state.digest()
    with pytest.raises(GossipDecodeError):
        nodes[node_id(0)].receive(node_id(1), b"\xff\x00garbage", T0)
    assert nodes[node_id(0)].state.digest() == before


def test_config_controls_fanout() -> None:
    state = GossipState(record(0), T0)
    state.merge([record(i) for i in range(1, 10)], None, T0)
    config = DisseminationConfig(push_fanout=5, anti_entropy_peers=2)
    protocol = GossipProtocol(state, random.Random(0), config)
    assert len(protocol.on_local_change(record(0), T0)) == 5
    assert len(protocol.on_round(T0 + 1)) == 2


fuzz_items = st.one_of(
    st.builds(
        record,
        st.integers(0, 5),
        st.integers(1, 2**63 - 1),
        leaving=st.booleans(),
        vram_bytes=st.integers(0, 2**40),
    ),
    st.builds(Tombstone, st.integers(0, 5).map(node_id), st.integers(1, 2**63 - 1), st.floats(0, 2e9)),
)
fuzz_keys = st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 5).map(lambda i: node_key(node_id(i))))
fuzz_entries = st.lists(st.tuples(fuzz_keys, st.integers(0, 2**64 - 1)), max_size=8).map(
    lambda pairs: DigestEntries(tuple(sorted({bucket_of(k) for k, _ in pairs})), dict(pairs))
)
fuzz_messages = st.one_of(
    fuzz_entries,
    st.builds(DigestSummary, st.lists(st.integers(0, 2**64 - 1), min_size=64, max_size=64).map(tuple)),
    st.builds(
        Delta,
        st.lists(fuzz_items, max_size=6).map(tuple),
        st.lists(fuzz_keys, max_size=6).map(tuple),
        st.booleans(),
    ),
)


@given(st.lists(fuzz_messages, max_size=6), st.binary(max_size=64))
def test_a_hostile_but_well_formed_peer_cannot_crash_the_protocol(
    messages: list[object], junk: bytes
) -> None:
    nodes = mesh(3)
    me = nodes[node_id(0)]
    for message in messages:
        me.receive(node_id(1), encode_message(message), T0)  # type: ignore[arg-type]
        me.on_round(T0 + 1)
    try:
        me.receive(node_id(1), junk, T0)
    except GossipDecodeError:
        pass
    assert me.state.view()[0].node_id == node_id(0)


# --- refuting hearsay ----------------------------------------------------------------------------------


def test_a_refused_tombstone_goes_to_the_node_it_names_which_refutes_it() -> None:
    me, peer, other = node_id(1), node_id(2), node_id(3)
    mine = GossipProtocol(GossipState(record(1), T0), random.Random(1))
    theirs = GossipProtocol(GossipState(record(2, version=5), T0), random.Random(2))
    mine.state.merge([theirs.state.local], peer, T0)
    mine.state.mark_heard(peer, T0)
    [payload] = encode_delta([Tombstone(peer, 5, T0)])
    reaction = mine.receive(other, payload, T0 + 1, [peer, other])
    to_peer = [o for o in reaction.outgoing if o.peer_id == peer]
    assert to_peer, "the tombstone must reach the node it names"
    theirs.receive(me, to_peer[0].payload, T0 + 1, [me])
    assert theirs.state.local.version > 5  # it re-versioned past the tombstone: the mesh learns it lives


def test_a_newly_linked_peer_we_hold_a_tombstone_for_is_shown_it() -> None:
    peer = node_id(2)
    mine = GossipProtocol(GossipState(record(1), T0), random.Random(1))
    mine.state.merge([record(2, version=2)], peer, T0)
    mine.state.leave(peer, T0 + 1)  # we lost it (a partition)
    assert [o.peer_id for o in mine.on_peers_joined([peer])] == [peer]
    assert mine.on_peers_joined([node_id(4)]) == []  # nothing held: nothing to show
