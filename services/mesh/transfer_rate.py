"""Bytes per second over a sliding window, and when a progress report is worth sending (sans-IO)."""

from __future__ import annotations

from collections import deque

RATE_WINDOW_S = 3.0
# Progress goes out on change, at most this often (a Watch stream, not a firehose).
PROGRESS_MIN_INTERVAL_S = 0.25


class TransferRate:
    """Feed it the running byte count with the caller's clock; it tells the recent rate."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self._window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def record(self, now: float, total_bytes: int) -> None:
        self._samples.append((now, total_bytes))
        # Keep one sample older than the window: the rate spans the whole window.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self._window_s:
            self._samples.popleft()

    def bytes_per_s(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def eta_s(self, remaining_bytes: int) -> float:
        """Seconds left at the recent rate; 0 when nothing is left or nothing moves."""
        rate = self.bytes_per_s()
        return remaining_bytes / rate if rate > 0 and remaining_bytes > 0 else 0.0


class ReportGate:
    """Whether a changed report goes out now: at most one per PROGRESS_MIN_INTERVAL_S."""

    def __init__(self, min_interval_s: float = PROGRESS_MIN_INTERVAL_S) -> None:
        self._min_interval_s = min_interval_s
        self._last_at: float | None = None
        self._last: object = None

    def wait_s(self, now: float, report: object) -> float | None:
        """None: nothing new to send. 0: send it now. >0: changed, but send after this long."""
        if report == self._last:
            return None
        if self._last_at is None or now - self._last_at >= self._min_interval_s:
            return 0.0
        return self._last_at + self._min_interval_s - now

    def sent(self, now: float, report: object) -> None:
        self._last_at, self._last = now, report
