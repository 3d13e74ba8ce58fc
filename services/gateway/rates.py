"""Request rates per model as an exponentially decayed count: sans-IO, the caller passes the clock.

Each request adds 1 to a value that decays by e^(-dt/τ). In a steady stream of r requests per second the
value settles at r·τ, so with τ = 60 s the value itself reads as requests per minute, and a model that
stops getting traffic fades to zero within a few minutes instead of dropping off a window's edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

RATE_DECAY_TIME_CONSTANT_S = 60.0
SECONDS_PER_MINUTE = 60.0
# Below this a model counts as idle and leaves the reported rates (about 8 minutes after one request).
RATE_FLOOR_PER_MIN = 0.01
RATE_DECIMALS = 2


@dataclass
class DecayingRate:
    """One model's decayed request count; `per_minute` is the rate estimate."""

    value: float = 0.0
    updated_s: float = 0.0

    def _decay_to(self, now_s: float) -> None:
        elapsed_s = max(0.0, now_s - self.updated_s)
        self.value *= math.exp(-elapsed_s / RATE_DECAY_TIME_CONSTANT_S)
        self.updated_s = max(self.updated_s, now_s)

    def hit(self, now_s: float) -> None:
        self._decay_to(now_s)
        self.value += 1.0

    def per_minute(self, now_s: float) -> float:
        self._decay_to(now_s)
        return self.value * SECONDS_PER_MINUTE / RATE_DECAY_TIME_CONSTANT_S


@dataclass
class RequestRates:
    """Decayed request rates of every model this gateway has routed."""

    by_model: dict[str, DecayingRate] = field(default_factory=dict)

    def record(self, model: str, now_s: float) -> None:
        rate = self.by_model.get(model)
        if rate is None:
            rate = self.by_model[model] = DecayingRate(updated_s=now_s)
        rate.hit(now_s)

    def per_minute(self, now_s: float) -> dict[str, float]:
        """Rounded rates of the models above the floor; idle models are forgotten."""
        rates: dict[str, float] = {}
        for model, rate in list(self.by_model.items()):
            value = rate.per_minute(now_s)
            if value < RATE_FLOOR_PER_MIN:
                del self.by_model[model]
            else:
                rates[model] = round(value, RATE_DECIMALS)
        return rates
