"""When this node's demand goes into its gossip record: sans-IO, the caller passes rates and the clock.

Placement promotes a standby for a hot model (≥ 10 req/min per server, DESIGN §5) and retires cold
replicas from the request rates every node gossips. Each change of a record is pushed to every peer,
so the rates go out at most every DEMAND_PUBLISH_INTERVAL_S and only when they say something new:
the set of models changed, or a rate moved by both DEMAND_MIN_DELTA_PER_MIN and
DEMAND_MIN_CHANGE_RATIO of what the record says now. Rates decay (services/gateway/rates.py) and a
model under DEMAND_FLOOR_PER_MIN leaves the record, so an idle node's record decays to {}.

The baseline is what the record says now, as gossip's Watch shows it, not what was last sent: a
gossip service that restarted comes back with an empty record, and the rates go out again.
"""

from __future__ import annotations

from collections.abc import Mapping

DEMAND_PUBLISH_INTERVAL_S = 3.0
# How often the publisher looks: the first request after an idle spell shows within this much.
DEMAND_CHECK_INTERVAL_S = 1.0
DEMAND_MIN_DELTA_PER_MIN = 0.5
DEMAND_MIN_CHANGE_RATIO = 0.2
# Far below any promote (10/min) or retire (2/min) threshold: about 2.3 min after a lone request.
DEMAND_FLOOR_PER_MIN = 0.1
DEMAND_DECIMALS = 2


def demand_to_publish(rates: Mapping[str, float]) -> dict[str, float]:
    """The rates worth gossiping: rounded, models under the floor left out."""
    return {
        model: round(rate, DEMAND_DECIMALS)
        for model, rate in sorted(rates.items())
        if rate >= DEMAND_FLOOR_PER_MIN
    }


def demand_moved(published: Mapping[str, float], current: Mapping[str, float]) -> bool:
    """True when `current` tells peers something `published` does not."""
    if set(published) != set(current):
        return True
    for model, rate in current.items():
        delta = abs(rate - published[model])
        if delta >= DEMAND_MIN_DELTA_PER_MIN and delta >= DEMAND_MIN_CHANGE_RATIO * published[model]:
            return True
    return False


class DemandSchedule:
    """Rate-limits the publishing: at most one try per interval, only when the rates moved."""

    def __init__(self, interval_s: float = DEMAND_PUBLISH_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._last_try_s: float | None = None

    def due(self, now_s: float, published: Mapping[str, float], current: Mapping[str, float]) -> bool:
        if self._last_try_s is not None and now_s - self._last_try_s < self._interval_s:
            return False
        return demand_moved(published, current)

    def tried(self, now_s: float) -> None:
        """A publish was sent (successful or not: a failed one is retried after the interval)."""
        self._last_try_s = now_s
