"""Download progress drawn with rich, in place of huggingface_hub's tqdm bars.

tqdm writes carriage returns straight to stderr; under a rich live display (the CLI's "preparing
models…" spinner) rich captures those writes and prints every update as a new line. A rich
progress bar on the same console nests in the live display instead. `http_get` takes any class
with tqdm's constructor keywords, `update(n)` and the context-manager protocol.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


@functools.cache
def stderr_console() -> Console:
    """The one stderr console of a CLI run, so live displays on it nest rather than fight."""
    return Console(stderr=True)


class _Bars:
    """One rich Progress for every file of a run (a split's parts stack up as rows)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = 0
        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=stderr_console(),
            transient=False,
        )

    def opened(self) -> None:
        with self._lock:
            self._open += 1
            if self._open == 1:
                self.progress.start()

    def closed(self) -> None:
        with self._lock:
            self._open -= 1
            if self._open == 0:
                self.progress.stop()


@functools.cache
def _bars() -> _Bars:
    return _Bars()


class RichDownloadBar:
    """The part of tqdm's interface huggingface_hub's http_get uses."""

    def __init__(
        self, *args: Any, desc: str = "", total: float | None = None, initial: float = 0, **_: Any
    ) -> None:
        self._bars = _bars()
        self._task: TaskID = self._bars.progress.add_task(desc, total=total, completed=int(initial))
        self._bars.opened()
        self._closed = False

    def update(self, n: float | None = 1) -> None:
        self._bars.progress.advance(self._task, n or 0)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bars.closed()

    def __enter__(self) -> RichDownloadBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# (bytes done, bytes total) of the file being downloaded; called from the downloading thread.
ByteProgress = Callable[[int, int], None]


def callback_bar(report: ByteProgress) -> type:
    """A bar class that reports each update to `report` (a service has no terminal to draw on)."""

    class _CallbackBar:
        def __init__(self, *args: Any, total: float | None = None, initial: int = 0, **_: Any) -> None:
            self._total, self._done = int(total or 0), int(initial)
            report(self._done, self._total)

        def update(self, n: float | None = 1) -> None:
            self._done += int(n or 0)
            report(self._done, self._total)

        def close(self) -> None:
            pass

        def __enter__(self) -> _CallbackBar:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    return _CallbackBar
