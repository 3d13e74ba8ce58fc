"""Try several ways to reach a peer at once and keep the first that works (happy eyeballs).

A token or a peer's Hello lists every address the peer might be dialed at (LAN, public side of a NAT,
a forwarded port, loopback): most of them do not answer from where we are, and each silent one costs
a whole dial timeout. Attempts start DIAL_STAGGER_S apart in order of preference; the first success
wins and the attempts still running are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

DIAL_STAGGER_S = 0.15


class AllAttemptsFailed(ConnectionError):
    """Every attempt failed; `errors` says how, in attempt order."""

    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = errors
        detail = "; ".join(f"{type(e).__name__}: {e}" for e in errors) or "nothing to try"
        super().__init__(detail)


async def first_success(
    attempts: Sequence[Callable[[], Awaitable[T]]],
    stagger_s: float = DIAL_STAGGER_S,
    expected: tuple[type[BaseException], ...] = (ConnectionError, OSError, TimeoutError),
) -> T:
    """The result of the first attempt to succeed. Exceptions of `expected` types count as failures;
    any other exception is a bug and propagates at once."""
    errors: list[tuple[int, BaseException]] = []
    running: dict[asyncio.Future[T], int] = {}
    next_index = 0
    try:
        while next_index < len(attempts) or running:
            if next_index < len(attempts):
                running[asyncio.ensure_future(attempts[next_index]())] = next_index
                next_index += 1
            # Wait for an outcome, or for the moment the next attempt is due to start.
            timeout = stagger_s if next_index < len(attempts) else None
            done, _ = await asyncio.wait(running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                index = running.pop(future)
                error = future.exception()
                if error is None:
                    return future.result()
                if not isinstance(error, expected):
                    raise error
                errors.append((index, error))
                # A failure frees its slot: start the next attempt now rather than after the stagger.
        raise AllAttemptsFailed([error for _, error in sorted(errors, key=lambda pair: pair[0])])
    finally:
        for future in running:
            future.cancel()
        for future in running:
            with contextlib.suppress(BaseException):
                await future
