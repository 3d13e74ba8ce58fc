"""The set of supervised processes: reconcile to a desired set, and publish every change."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from services.runner.pidfile import PidRegistry
from services.runner.process import SupervisedProcess
from services.runner.spec import ProcessSpec, ProcessStatus

log = logging.getLogger("runner.fleet")


class ProcessFleet:
    """Keyed supervised processes. `generation` grows by one on every change anyone could observe."""

    def __init__(self, find_bin_dir: Callable[[], Path], log_dir: Path, pids: PidRegistry) -> None:
        self._find_bin_dir = find_bin_dir
        self._log_dir = log_dir
        self._pids = pids
        self._processes: dict[str, SupervisedProcess] = {}
        self._apply_lock = asyncio.Lock()
        self._change = asyncio.Event()
        self.generation = 0

    def snapshot(self) -> tuple[int, list[ProcessStatus]]:
        statuses = [self._processes[key].status for key in sorted(self._processes)]
        return self.generation, statuses

    def _bump(self) -> None:
        self.generation += 1
        # One Event per generation: setting it wakes every watcher of the old one, none is missed.
        self._change.set()
        self._change = asyncio.Event()

    async def watch(self) -> AsyncIterator[tuple[int, list[ProcessStatus]]]:
        """The current snapshot, then one per change (changes that land together are coalesced)."""
        while True:
            change = self._change
            yield self.snapshot()
            await change.wait()

    async def apply(self, desired: dict[str, ProcessSpec]) -> None:
        """Start new keys, restart those whose spec changed, stop the rest; returns once stops are done.

        A FAILED process whose spec is unchanged stays FAILED: re-asserting the same broken spec
        (placement re-applies often) must not turn into a restart loop. Changing the spec retries,
        unless only its memory budget changed and the context stays (SupervisedProcess.respec_in_place).
        """
        async with self._apply_lock:
            outgoing = []
            for key, process in self._processes.items():
                wanted = desired.get(key)
                if wanted is None or (wanted != process.spec and not process.respec_in_place(wanted)):
                    outgoing.append(process)
            await asyncio.gather(*(self._stop(process) for process in outgoing))
            for key, spec in desired.items():
                if key not in self._processes:
                    self._start(spec)

    def _start(self, spec: ProcessSpec) -> None:
        log.info("starting %s", spec.key)
        process = SupervisedProcess(spec, self._find_bin_dir, self._log_dir, self._pids, self._bump)
        self._processes[spec.key] = process
        process.start()
        self._bump()

    async def _stop(self, process: SupervisedProcess) -> None:
        try:
            await process.stop()
        finally:
            if self._processes.get(process.spec.key) is process:
                del self._processes[process.spec.key]
            self._bump()

    async def stop_all(self) -> None:
        await self.apply({})
