"""Which replica of a model takes the next request: sans-IO bookkeeping, no sockets, no clock.

The fewest requests in flight from this gateway wins. Among servers tied at the fewest, this node's own
llama-server goes first (no mesh hop: an idle local server is the fastest one), then the one chosen
longest ago: a sequential stream through a node that does not serve the model (a client) would
otherwise land on the same server every time and a replica the pool promoted for a hot model would
get nothing from there. A node that serves the model itself spills to its peers as soon as it has
more requests in flight than they do.
Servers are keyed by node id (this node's own id for its local llama-server); a node's load is shared
by all its models, so the counts are per node, not per model. The history is an int per node ever
used from here: small even in a churning mesh, so it is never pruned.
"""

from __future__ import annotations

from collections.abc import Iterable


class ReplicaBalancer:
    """In-flight counts and the order of last choice, per server."""

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}
        self._chosen_at: dict[str, int] = {}  # server → sequence number of its last start
        self._sequence = 0

    def order(self, servers: Iterable[str], preferred: str = "", local: str = "") -> list[str]:
        """The servers in the order to try them: `preferred` first when it is one of them; `local`
        (this node's own server) first among those tied at the fewest in flight."""
        ordered = sorted(
            set(servers),
            key=lambda s: (self._in_flight.get(s, 0), s != local, self._chosen_at.get(s, 0), s),
        )
        if preferred in ordered:
            ordered.remove(preferred)
            ordered.insert(0, preferred)
        return ordered

    def started(self, server: str) -> None:
        self._sequence += 1
        self._chosen_at[server] = self._sequence
        self._in_flight[server] = self._in_flight.get(server, 0) + 1

    def finished(self, server: str) -> None:
        remaining = self._in_flight.get(server, 0) - 1
        if remaining > 0:
            self._in_flight[server] = remaining
        else:
            self._in_flight.pop(server, None)

    def in_flight(self, server: str) -> int:
        return self._in_flight.get(server, 0)
