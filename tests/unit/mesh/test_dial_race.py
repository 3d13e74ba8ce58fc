"""Happy-eyeballs dialing (services/mesh/dial_race.py), on the event loop with no sockets."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.mesh.dial_race import AllAttemptsFailed, first_success


def attempt(result: str | Exception, after_s: float, log: list[str]):  # type: ignore[no-untyped-def]
    async def run() -> str:
        log.append(f"start {result}")
        try:
            await asyncio.sleep(after_s)
        except asyncio.CancelledError:
            log.append(f"cancelled {result}")
            raise
        if isinstance(result, Exception):
            raise result
        return result

    return run


async def test_a_silent_first_address_does_not_cost_its_whole_timeout() -> None:
    log: list[str] = []
    started = time.monotonic()
    got = await first_success([attempt("silent", 5.0, log), attempt("lan", 0.01, log)], stagger_s=0.05)
    assert got == "lan"
    assert time.monotonic() - started < 1.0
    assert "cancelled silent" in log  # the loser stops dialing


async def test_the_preferred_address_wins_when_it_answers_within_the_stagger() -> None:
    log: list[str] = []
    got = await first_success([attempt("first", 0.01, log), attempt("second", 0.0, log)], stagger_s=0.5)
    assert got == "first"
    assert "start second" not in log


async def test_a_failure_starts_the_next_attempt_at_once() -> None:
    log: list[str] = []
    started = time.monotonic()
    got = await first_success(
        [attempt(ConnectionError("refused"), 0.0, log), attempt("ok", 0.0, log)], stagger_s=5.0
    )
    assert got == "ok"
    assert time.monotonic() - started < 1.0


async def test_all_failing_reports_every_error_in_order() -> None:
    log: list[str] = []
    with pytest.raises(AllAttemptsFailed) as caught:
        await first_success(
            [attempt(ConnectionError("a"), 0.02, log), attempt(OSError("b"), 0.0, log)], stagger_s=0.01
        )
    assert [str(e) for e in caught.value.errors] == ["a", "b"]
    with pytest.raises(AllAttemptsFailed):
        await first_success([])


async def test_an_unexpected_exception_is_a_bug_and_propagates() -> None:
    log: list[str] = []
    with pytest.raises(KeyError):
        await first_success([attempt(KeyError("bug"), 0.0, log), attempt("ok", 1.0, log)], stagger_s=0.5)
