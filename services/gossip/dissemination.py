"""Who to tell what, and when: push on change plus periodic anti-entropy, as a sans-IO endpoint.

The service feeds GossipProtocol the clock, peers' payloads and local changes; it answers with
(peer, bytes) pairs to hand to the mesh. No sockets, no tasks: a test or a simulation drives it.

- A change (ours, or news a rumor brought us) is pushed to PUSH_FANOUT random peers as a rumor; a
  node passes each new version on once, so a change floods the mesh in O(log N) hops, milliseconds
  apart rather than rounds apart.
- Each round every node starts anti-entropy with ANTI_ENTROPY_PEERS_PER_ROUND random peers (bucket
  summary, ~0.5 KB). It repairs whatever the flood missed. Its deltas are not rumors and carry at
  most MAX_ITEMS_PER_EXCHANGE records, so mass reconciliation (cold start, a healed partition) costs
  about one copy of each record per node and no node serves the whole mesh to everyone at once.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from services.gossip.items import GossipItem, Tombstone
from services.gossip.state import GossipState, MergeResult
from services.gossip.wire import (
    KIND_DELTA,
    KIND_ENTRIES,
    KIND_RUMOR,
    KIND_SUMMARY,
    Delta,
    DigestEntries,
    DigestSummary,
    GossipMessage,
    decode_message,
    encode_delta,
    encode_message,
    message_kind,
)
from services.proto.meshllm.gossip.v1 import gossip_pb2

PUSH_FANOUT = 3
ANTI_ENTROPY_PEERS_PER_ROUND = 1
GOSSIP_ROUND_S = 1.0  # how often the service should call on_round
# Records one anti-entropy reply may carry (~100 KB of typical records). Why: after a mass restart
# every node knows only the bootstrap peers and asks them first; uncapped, each would send the
# whole mesh to everyone in the first round (~160 MB per bootstrap peer at 1,000 nodes). A random
# subset per reply also hands different askers different peers to ask next.
MAX_ITEMS_PER_EXCHANGE = 128


@dataclass(frozen=True)
class DisseminationConfig:
    push_fanout: int = PUSH_FANOUT
    anti_entropy_peers: int = ANTI_ENTROPY_PEERS_PER_ROUND


@dataclass(frozen=True)
class Outgoing:
    """One payload for the mesh to deliver (mesh.v1.GossipMessage); `kind` (wire.KIND_*) for counting."""

    peer_id: str
    payload: bytes
    kind: str


@dataclass
class Reaction:
    """What receiving one payload did: the view change, what to send because of it, and what the
    payload was (wire.KIND_*, for counting)."""

    outgoing: list[Outgoing] = field(default_factory=list)
    merge: MergeResult = field(default_factory=MergeResult)
    kind: str = ""


def choose_gossip_targets(
    peers: Sequence[str], fanout: int, rng: random.Random, exclude: Collection[str] = ()
) -> list[str]:
    """Up to `fanout` distinct peers, uniformly at random, none of them in `exclude`."""
    if fanout <= 0 or not peers:
        return []
    # Sample enough to survive the exclusions, then filter: O(fanout), not O(len(peers)).
    picked = rng.sample(peers, min(len(peers), fanout + len(exclude)))
    return [peer for peer in picked if peer not in exclude][:fanout]


class GossipProtocol:
    """One node's gossip endpoint over a GossipState."""

    def __init__(
        self, state: GossipState, rng: random.Random, config: DisseminationConfig | None = None
    ) -> None:
        self._state = state
        self._rng = rng
        self._config = config or DisseminationConfig()

    @property
    def state(self) -> GossipState:
        return self._state

    def on_round(self, now: float, peers: Sequence[str] | None = None) -> list[Outgoing]:
        """Call every GOSSIP_ROUND_S: expire silent peers (and spread their tombstones), refresh our
        record when due (anti-entropy carries it; no hurry), start anti-entropy."""
        gone = self._state.expire(now)
        peers = self._peers(peers)  # after expiry: no round spent on peers just declared dead
        tombstones = [item for item in map(self._state.item_for, gone) if item is not None]
        outgoing = self.push(tombstones, peers, exclude=set(gone))
        if self._state.refresh_due(now):
            self._state.refresh_local(now)
        summary = encode_message(self._state.summary())
        targets = choose_gossip_targets(peers, self._config.anti_entropy_peers, self._rng)
        outgoing.extend(Outgoing(peer, summary, KIND_SUMMARY) for peer in targets)
        return outgoing

    def on_local_change(
        self, record: gossip_pb2.NodeRecord, now: float, peers: Sequence[str] | None = None
    ) -> list[Outgoing]:
        """Our record changed: store it (version bumped) and push it."""
        return self.push([self._state.set_local(record, now)], self._peers(peers))

    def announce(self, peers: Sequence[str] | None = None) -> list[Outgoing]:
        """Send our record as it is to PUSH_FANOUT peers (on joining: the bootstrap peers), without
        making it a rumor: anti-entropy spreads it in O(log N) rounds. Why not a rumor: a whole mesh
        restarting at once would flood N² x fanout records."""
        targets = choose_gossip_targets(self._peers(peers), self._config.push_fanout, self._rng)
        payloads = encode_delta([self._state.local]) if targets else []
        return [Outgoing(peer, payload, KIND_DELTA) for peer in targets for payload in payloads]

    def on_peers_joined(self, joined: Sequence[str]) -> list[Outgoing]:
        """Newly linked peers we hold tombstones for (we had lost them): show each its tombstone so it
        refutes it at once, instead of waiting for anti-entropy to pick it."""
        outgoing: list[Outgoing] = []
        for node_id in joined:
            item = self._state.item_for(node_id)
            if isinstance(item, Tombstone):
                outgoing.extend(Outgoing(node_id, p, KIND_DELTA) for p in encode_delta([item]))
        return outgoing

    def on_goodbye(self, now: float, peers: Sequence[str] | None = None) -> list[Outgoing]:
        return self.push([self._state.goodbye(now)], self._peers(peers))

    def on_peer_left(self, node_id: str, now: float, peers: Sequence[str] | None = None) -> list[Outgoing]:
        """The mesh saw `node_id` say goodbye: tombstone it and spread the news."""
        tombstone = self._state.leave(node_id, now)
        return self.push([tombstone], self._peers(peers), exclude={node_id}) if tombstone else []

    def push(
        self, items: Sequence[GossipItem], peers: Sequence[str], exclude: Collection[str] = ()
    ) -> list[Outgoing]:
        """Send `items` as a rumor to PUSH_FANOUT random peers (one encoding shared by all)."""
        if not items:
            return []
        targets = choose_gossip_targets(peers, self._config.push_fanout, self._rng, exclude)
        payloads = encode_delta(items, rumor=True) if targets else []
        return [Outgoing(peer, payload, KIND_RUMOR) for peer in targets for payload in payloads]

    def receive(
        self, peer_id: str, payload: bytes, now: float, peers: Sequence[str] | None = None
    ) -> Reaction:
        """Handle one payload from `peer_id`. `peers` are the candidates for passing a rumor on (default:
        every live node we know). Raises GossipDecodeError if the peer broke the protocol; nothing
        in the view changes then."""
        message = decode_message(payload)
        reaction = self._react(peer_id, message, now, peers)
        reaction.kind = message_kind(message)
        return reaction

    def _react(
        self, peer_id: str, message: GossipMessage, now: float, peers: Sequence[str] | None
    ) -> Reaction:
        if isinstance(message, DigestSummary):
            self._state.note_contact(peer_id, now)
            entries = self._state.entries_for(message)
            return Reaction([Outgoing(peer_id, encode_message(entries), KIND_ENTRIES)] if entries else [])
        if isinstance(message, DigestEntries):
            self._state.note_contact(peer_id, now)
            delta = self._state.reconcile(message)
            if not (delta.items or delta.want_keys):
                return Reaction()
            items = self._capped(delta.items)
            return Reaction([Outgoing(peer_id, p, KIND_DELTA) for p in encode_delta(items, delta.want_keys)])
        return self._receive_delta(peer_id, message, now, peers)

    def _receive_delta(self, peer_id: str, delta: Delta, now: float, peers: Sequence[str] | None) -> Reaction:
        result = self._state.merge(delta.items, peer_id, now)
        outgoing: list[Outgoing] = []
        if delta.want_keys:
            wanted = self._capped(self._state.items_for_keys(delta.want_keys))
            outgoing.extend(Outgoing(peer_id, p, KIND_DELTA) for p in encode_delta(wanted) if wanted)
        for tombstone in result.refuted:
            outgoing.extend(Outgoing(tombstone.node_id, p, KIND_DELTA) for p in encode_delta([tombstone]))
        local_id = self._state.local_id
        # Rumors spread on; a re-versioned own record (local_bumped) spreads whatever brought it.
        forward = result.fresh if delta.rumor else [i for i in result.fresh if i.node_id == local_id]
        if forward:
            outgoing.extend(self.push(forward, self._peers(peers), exclude={peer_id}))
        return Reaction(outgoing, result)

    def _capped(self, items: Sequence[GossipItem]) -> Sequence[GossipItem]:
        if len(items) <= MAX_ITEMS_PER_EXCHANGE:
            return items
        return self._rng.sample(items, MAX_ITEMS_PER_EXCHANGE)

    def _peers(self, peers: Sequence[str] | None) -> Sequence[str]:
        return self._state.known_peers() if peers is None else peers
