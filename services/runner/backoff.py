"""When to restart a process that died, and when to stop trying (pure; no clocks, no sleeps)."""

from __future__ import annotations

from dataclasses import dataclass

RESTART_DELAY_INITIAL_S = 0.5
RESTART_DELAY_MAX_S = 10.0
RESTART_DELAY_FACTOR = 2.0
# A process that served this long before dying was working: its next failure starts a fresh count.
HEALTHY_RESET_AFTER_S = 30.0
# Quick consecutive failures before giving up (a bad model file fails the same way every time).
QUICK_FAILURES_BEFORE_GIVING_UP = 5


@dataclass
class RestartBackoff:
    """Counts quick consecutive deaths and turns each exit into a restart delay or "give up".

    Every quick death lengthens the delay; only the process's own failures count toward giving up. A
    process killed from outside (the OOM killer, a user: failure.killed_from_outside) is restarted
    for as long as it keeps being killed, at the capped delay: the model is not broken, and giving up
    would leave it unserved until the node restarts.

    `give_up` is False for a split host: its llama-server aborts whenever an --rpc endpoint is down,
    which is a normal mesh event (DESIGN §2), so it keeps retrying at the capped delay until the plan
    changes.
    """

    give_up: bool = True
    quick_failures: int = 0  # the process's own quick failures in a row; a kill neither counts nor resets
    quick_deaths: int = 0  # every quick death in a row, kills included: sets the delay

    def on_exit(self, healthy_for_s: float, killed_from_outside: bool = False) -> float | None:
        """The delay before the next start, or None to give up. `healthy_for_s`: time spent READY."""
        if healthy_for_s >= HEALTHY_RESET_AFTER_S:
            self.quick_failures = self.quick_deaths = 0
        self.quick_deaths += 1
        if not killed_from_outside:
            self.quick_failures += 1
        if self.give_up and self.quick_failures >= QUICK_FAILURES_BEFORE_GIVING_UP:
            return None
        return restart_delay_s(self.quick_deaths)


def restart_delay_s(failures: int) -> float:
    """0.5 s after the first failure, doubling, capped at 10 s."""
    if failures < 1:
        raise ValueError("failures counts from 1")
    exponent = min(failures - 1, 32)  # the cap is reached long before; avoids float overflow
    return min(RESTART_DELAY_INITIAL_S * RESTART_DELAY_FACTOR**exponent, RESTART_DELAY_MAX_S)
