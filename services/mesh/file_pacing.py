"""How fast a source sends file bytes to a peer, sans-IO: inference traffic keeps priority.

While the link to a peer carries inference (an HTTP or RPC tunnel connection is open either way),
file bytes to that peer are paced to FILE_BYTES_PER_S_WHILE_INFERENCE, in slices small enough not
to hold a token stream or an RPC round trip behind a megabyte of file; otherwise they go at full
speed (or at an operator's cap). The clock is the caller's: tests drive it with plain numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator

from services.mesh.incoming import StreamHandler

MIB = 1024 * 1024
# About a tenth of a gigabit link: a model still arrives (a GB in a minute) while tokens flow.
FILE_BYTES_PER_S_WHILE_INFERENCE = 16 * MIB
# Paced bytes go in slices this big: at a gigabit one slice is ~0.5 ms of the link.
PACED_SLICE_BYTES = 64 * 1024
# A pacer that sat idle may send this much at once before pacing starts again.
PACING_BURST_S = 0.01


class TunnelActivity:
    """Open inference connections (HTTP and RPC tunnels, both directions) per peer."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    @contextlib.contextmanager
    def carrying(self, peer_id: str) -> Iterator[None]:
        self._open[peer_id] += 1
        try:
            yield
        finally:
            self._open[peer_id] -= 1
            if self._open[peer_id] <= 0:
                del self._open[peer_id]

    def busy(self, peer_id: str) -> bool:
        return self._open[peer_id] > 0

    def counting(self, handler: StreamHandler) -> StreamHandler:
        """`handler` for inference streams peers open to us, counted while they last."""

        async def counted(
            source: str, initial: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            with self.carrying(source):
                await handler(source, initial, reader, writer)

        return counted


class SendPacer:
    """One peer's file bytes: a virtual clock of when the link is free for the next slice."""

    def __init__(self, cap_bytes_per_s: float = 0.0) -> None:
        self.cap_bytes_per_s = cap_bytes_per_s  # 0: no cap (the operator's knob, for slow links)
        self._free_at = 0.0

    def rate(self, inference_busy: bool) -> float:
        """Bytes/s allowed now; 0 means unpaced."""
        rates = [r for r in (self.cap_bytes_per_s,) if r > 0]
        if inference_busy:
            rates.append(FILE_BYTES_PER_S_WHILE_INFERENCE)
        return min(rates) if rates else 0.0

    def slice_bytes(self, inference_busy: bool, remaining: int) -> int:
        """How much to send in one go: everything when unpaced, else one slice."""
        return remaining if not self.rate(inference_busy) else min(remaining, PACED_SLICE_BYTES)

    def delay_s(self, nbytes: int, now: float, inference_busy: bool) -> float:
        """Seconds to wait before sending `nbytes` (and reserve their time on the link)."""
        rate = self.rate(inference_busy)
        if not rate:
            self._free_at = now
            return 0.0
        start = max(self._free_at, now - PACING_BURST_S)
        self._free_at = start + nbytes / rate
        return max(0.0, start - now)
