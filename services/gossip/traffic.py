"""Gossip traffic counters (sans-IO): bytes and messages sent and received, by message kind.

The service calls `sent` when the mesh took a payload and `received` for every payload the mesh
delivered, decodable or not: two integer adds per payload, nothing per byte. Every kind starts at zero
so each series exists from the first scrape (Prometheus: a counter that appears late loses its first
increase). The gateway reads them through GetStats for `/metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from services.gossip.wire import MESSAGE_KINDS
from services.proto.meshllm.gossip.v1 import gossip_pb2

KIND_MALFORMED = "malformed"  # a received payload that did not decode (never sent)
TRAFFIC_KINDS = (*MESSAGE_KINDS, KIND_MALFORMED)


class UnknownKind(ValueError):
    """A kind outside TRAFFIC_KINDS: our bug (a new message kind not added here)."""


@dataclass
class KindTraffic:
    sent_bytes: int = 0
    sent_messages: int = 0
    received_bytes: int = 0
    received_messages: int = 0


class GossipTraffic:
    def __init__(self) -> None:
        self._kinds = {kind: KindTraffic() for kind in TRAFFIC_KINDS}

    def _of(self, kind: str) -> KindTraffic:
        try:
            return self._kinds[kind]
        except KeyError:
            raise UnknownKind(f"unknown gossip message kind {kind!r}") from None

    def sent(self, kind: str, size_bytes: int) -> None:
        counts = self._of(kind)
        counts.sent_bytes += size_bytes
        counts.sent_messages += 1

    def received(self, kind: str, size_bytes: int) -> None:
        counts = self._of(kind)
        counts.received_bytes += size_bytes
        counts.received_messages += 1

    def of(self, kind: str) -> KindTraffic:
        """A copy of one kind's counters."""
        return replace(self._of(kind))

    def stats(self) -> gossip_pb2.GossipStats:
        return gossip_pb2.GossipStats(
            kinds=[
                gossip_pb2.GossipKindTraffic(
                    kind=kind,
                    sent_bytes=c.sent_bytes,
                    sent_messages=c.sent_messages,
                    received_bytes=c.received_bytes,
                    received_messages=c.received_messages,
                )
                for kind, c in self._kinds.items()
            ]
        )
