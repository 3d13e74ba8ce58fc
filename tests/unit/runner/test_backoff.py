"""Restart delays and giving up (services/runner/backoff.py)."""

from __future__ import annotations

import pytest

from services.runner.backoff import (
    HEALTHY_RESET_AFTER_S,
    QUICK_FAILURES_BEFORE_GIVING_UP,
    RESTART_DELAY_INITIAL_S,
    RESTART_DELAY_MAX_S,
    RestartBackoff,
    restart_delay_s,
)


def test_delay_starts_small_and_doubles() -> None:
    assert [restart_delay_s(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]


def test_delay_is_capped() -> None:
    assert restart_delay_s(6) == RESTART_DELAY_MAX_S
    assert restart_delay_s(10_000) == RESTART_DELAY_MAX_S


def test_delay_needs_a_failure() -> None:
    with pytest.raises(ValueError):
        restart_delay_s(0)


def test_gives_up_after_quick_consecutive_failures() -> None:
    backoff = RestartBackoff()
    delays = [backoff.on_exit(healthy_for_s=0.0) for _ in range(QUICK_FAILURES_BEFORE_GIVING_UP)]
    assert delays[:-1] == [restart_delay_s(n) for n in range(1, QUICK_FAILURES_BEFORE_GIVING_UP)]
    assert delays[-1] is None


def test_a_long_healthy_run_resets_the_count() -> None:
    backoff = RestartBackoff()
    for _ in range(QUICK_FAILURES_BEFORE_GIVING_UP - 1):
        backoff.on_exit(healthy_for_s=1.0)
    assert backoff.on_exit(healthy_for_s=HEALTHY_RESET_AFTER_S) == RESTART_DELAY_INITIAL_S
    assert backoff.quick_failures == 1


def test_short_healthy_runs_still_count_as_quick_failures() -> None:
    backoff = RestartBackoff()
    results = [backoff.on_exit(healthy_for_s=HEALTHY_RESET_AFTER_S / 2) for _ in range(10)]
    assert results[QUICK_FAILURES_BEFORE_GIVING_UP - 1] is None


def test_split_host_never_gives_up() -> None:
    backoff = RestartBackoff(give_up=False)
    delays = [backoff.on_exit(healthy_for_s=0.0) for _ in range(50)]
    assert None not in delays
    assert delays[-1] == RESTART_DELAY_MAX_S


def test_kills_from_outside_back_off_but_never_give_up() -> None:
    """An OOM-kill loop: the delay grows to its cap, the model is never given up on."""
    backoff = RestartBackoff()
    delays = [backoff.on_exit(healthy_for_s=0.0, killed_from_outside=True) for _ in range(50)]
    assert delays[:4] == [restart_delay_s(n) for n in (1, 2, 3, 4)]
    assert None not in delays
    assert delays[-1] == RESTART_DELAY_MAX_S
    assert backoff.quick_failures == 0


def test_kills_between_own_failures_neither_count_nor_reset() -> None:
    backoff = RestartBackoff()
    results = []
    for _ in range(QUICK_FAILURES_BEFORE_GIVING_UP):
        results.append(backoff.on_exit(healthy_for_s=0.0, killed_from_outside=True))
        results.append(backoff.on_exit(healthy_for_s=0.0))
    # Only the last own failure reaches the limit; the delay counted every death before it.
    assert None not in results[:-1] and results[-1] is None
    assert results[-2] == restart_delay_s(2 * QUICK_FAILURES_BEFORE_GIVING_UP - 1)


def test_a_long_healthy_run_resets_the_delay_after_kills() -> None:
    backoff = RestartBackoff()
    for _ in range(6):
        backoff.on_exit(healthy_for_s=0.0, killed_from_outside=True)
    assert backoff.on_exit(HEALTHY_RESET_AFTER_S, killed_from_outside=True) == RESTART_DELAY_INITIAL_S
