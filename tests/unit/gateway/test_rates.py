"""Decayed request rates: requests in, a per-minute estimate out (the clock is a parameter)."""

from __future__ import annotations

import math

import pytest

from services.gateway.rates import RATE_DECAY_TIME_CONSTANT_S, DecayingRate, RequestRates
from services.gateway.status import RequestCounters


def test_steady_traffic_reads_as_requests_per_minute() -> None:
    rate = DecayingRate()
    for second in range(0, 600, 2):  # 30 requests a minute for ten minutes
        rate.hit(float(second))
    assert rate.per_minute(600.0) == pytest.approx(30.0, rel=0.05)


def test_rate_decays_by_e_every_time_constant() -> None:
    rate = DecayingRate()
    rate.hit(0.0)
    first = rate.per_minute(0.0)
    assert rate.per_minute(RATE_DECAY_TIME_CONSTANT_S) == pytest.approx(first / math.e)


def test_a_clock_going_backwards_never_inflates_the_rate() -> None:
    rate = DecayingRate()
    rate.hit(100.0)
    assert rate.per_minute(50.0) == pytest.approx(1.0)


def test_idle_models_are_forgotten() -> None:
    rates = RequestRates()
    rates.record("busy", 0.0)
    rates.record("idle", 0.0)
    for second in range(1000, 1060):
        rates.record("busy", float(second))
    snapshot = rates.per_minute(1060.0)
    assert set(snapshot) == {"busy"}
    assert "idle" not in rates.by_model


def test_request_counters_feed_the_rates() -> None:
    now = [10.0]
    counters = RequestCounters(clock=lambda: now[0])
    for _ in range(3):
        counters.started("tiny")
        counters.finished()
    assert counters.by_model == {"tiny": 3}
    assert counters.in_flight == 0
    assert counters.rates_per_minute() == {"tiny": pytest.approx(3.0)}
