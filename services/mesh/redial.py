"""Which peers to (re)dial and when, sans-IO: the mesh service feeds it facts and the clock.

A lost link is redialed for as long as the peer may be alive: while any record in our gossip view
says it is (someone still hears it), and for a while after we lost it ourselves even when nobody
vouches for it (we may be the one cut off: an isolated node's view is empty). Attempts back off
from REDIAL_FIRST_S to REDIAL_MAX_S with jitter, so a healed partition converges within seconds
without every node hammering the same peer in lockstep. A peer reached only through a relay is
retried directly every DIRECT_RETRY_S: the relay is a fallback, and direct comes back when it can.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

REDIAL_FIRST_S = 0.5
REDIAL_MAX_S = 3.0
REDIAL_JITTER_RATIO = 0.25
DIRECT_RETRY_S = 3.0
# We lost it and nobody in our view has it: dead, or we are the ones cut off. Keep trying this long
# while we have no other peers (cut off), this long when others agree it is gone (dead).
FORGET_LOST_WHILE_ALONE_S = 600.0
FORGET_LOST_WHILE_LINKED_S = 60.0
MAX_ADDRESSES_PER_PEER = 8
# A peer dropped for breaking the protocol is not redialed for this long (it may dial us itself).
BROKE_PROTOCOL_COOLDOWN_S = 60.0


@dataclass(frozen=True)
class RedialAttempt:
    node_id: str
    addresses: tuple[str, ...]
    direct_only: bool  # we already reach it through a relay: only a direct link is worth having


@dataclass
class _Peer:
    addresses: tuple[str, ...] = ()
    in_view: bool = False
    link: str = ""  # "", "direct" or "relayed"
    lost_at_s: float | None = None
    failures: int = 0
    next_attempt_s: float = 0.0
    in_flight: bool = False
    suspended_until_s: float = 0.0


@dataclass
class RedialSchedule:
    local_node_id: str
    rng: random.Random = field(default_factory=random.Random)
    _peers: dict[str, _Peer] = field(default_factory=dict)

    def _peer(self, node_id: str) -> _Peer:
        return self._peers.setdefault(node_id, _Peer())

    def learn(self, node_id: str, addresses: Iterable[str]) -> None:
        """Addresses someone gave for `node_id` (Hello, Admitted, announce, gossip): newest first."""
        if node_id == self.local_node_id:
            return
        peer = self._peer(node_id)
        peer.addresses = tuple(dict.fromkeys([*addresses, *peer.addresses]))[:MAX_ADDRESSES_PER_PEER]

    def set_view(self, alive: Mapping[str, Sequence[str]]) -> None:
        """The live records of our gossip view (node id → its advertised addresses)."""
        for node_id, peer in self._peers.items():
            peer.in_view = node_id in alive
        for node_id, addresses in alive.items():
            if node_id != self.local_node_id:
                self.learn(node_id, addresses)
                self._peer(node_id).in_view = True

    def set_links(self, links: Mapping[str, bool], now: float) -> None:
        """Current links: node id → relayed?. A peer that had a link and has none now was lost."""
        for node_id, peer in self._peers.items():
            if node_id not in links and peer.link:
                peer.link = ""
                peer.lost_at_s = now
                peer.failures = 0
                peer.next_attempt_s = now + self._jittered(REDIAL_FIRST_S)
        for node_id, relayed in links.items():
            if node_id == self.local_node_id:
                continue
            peer = self._peer(node_id)
            was = peer.link
            peer.link = "relayed" if relayed else "direct"
            peer.lost_at_s = None
            if peer.link != was:
                peer.failures = 0
                peer.next_attempt_s = now + (self._jittered(DIRECT_RETRY_S) if relayed else 0.0)

    def due(self, now: float) -> list[RedialAttempt]:
        """Attempts to start now; each is marked in flight until `finished` is called for it."""
        self._forget(now, alone=not any(p.link for p in self._peers.values()))
        attempts = []
        for node_id, peer in self._peers.items():
            if peer.in_flight or peer.link == "direct" or now < peer.next_attempt_s or not peer.addresses:
                continue
            if now < peer.suspended_until_s:
                continue
            if peer.link == "" and not peer.in_view and peer.lost_at_s is None:
                continue  # heard of once, never linked, not in anyone's view: nothing says it lives
            peer.in_flight = True
            attempts.append(RedialAttempt(node_id, peer.addresses, direct_only=peer.link == "relayed"))
        return attempts

    def broke_protocol(self, node_id: str, now: float) -> None:
        """We dropped `node_id` for a protocol violation: leave it alone for a while."""
        if node_id != self.local_node_id:
            self._peer(node_id).suspended_until_s = now + BROKE_PROTOCOL_COOLDOWN_S

    def finished(self, node_id: str, linked: bool, now: float) -> None:
        peer = self._peers.get(node_id)
        if peer is None:
            return
        peer.in_flight = False
        if linked and peer.link == "direct":
            peer.failures = 0
            return
        peer.failures += 1
        if peer.link == "relayed":
            peer.next_attempt_s = now + self._jittered(DIRECT_RETRY_S)
        else:
            backoff = min(REDIAL_FIRST_S * 2 ** (peer.failures - 1), REDIAL_MAX_S)
            peer.next_attempt_s = now + self._jittered(backoff)

    def _forget(self, now: float, alone: bool) -> None:
        keep_s = FORGET_LOST_WHILE_ALONE_S if alone else FORGET_LOST_WHILE_LINKED_S
        for node_id in [
            node_id
            for node_id, peer in self._peers.items()
            if not peer.link
            and not peer.in_view
            and not peer.in_flight
            and now >= peer.suspended_until_s
            and (peer.lost_at_s is None or now - peer.lost_at_s > keep_s)
        ]:
            del self._peers[node_id]

    def _jittered(self, seconds: float) -> float:
        return seconds * (1 + self.rng.uniform(-REDIAL_JITTER_RATIO, REDIAL_JITTER_RATIO))

    def wanted(self) -> list[str]:
        """Peers we are trying to reach (not linked directly), for status displays."""
        return sorted(node_id for node_id, peer in self._peers.items() if peer.link != "direct")
