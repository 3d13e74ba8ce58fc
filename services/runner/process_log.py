"""The log of one llama.cpp process key: <home>/logs/<key>.log, rotated by size.

The child's stdout+stderr come to the runner through a pipe, so each line can be written the way the
node logs (pretty: llama.cpp's line as it printed it; json: one object with llama.cpp's fields, see
services/runner/llama_log_lines.py) and the file can rotate while a process runs for weeks.
The parsing is pure (services/runner/llama_log_lines.py); this module is the I/O around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from pathlib import Path

from services.node.log_limits import LogFileLimits, safe_log_file_limits
from services.node.logs import configured_log_format
from services.node.rotating_log import RotatingLineLog
from services.runner.llama_log_lines import parse_llama_line

log = logging.getLogger("runner.process_log")

# What summarizing a death reads: the last this many bytes of the current run's own lines.
LOG_TAIL_BYTES = 16 * 1024
# The pipe reader's longest line (asyncio's default, 64 KiB, is short for a verbose llama-server
# printing a whole prompt); a longer one is cut, never stalls the pump (and with it the child).
LINE_LIMIT_BYTES = 1024 * 1024
# After the process exits, how long its last lines may take to come through the pipe.
DRAIN_TIMEOUT_S = 2.0
CUT_LINE_NOTE = f"(mesh-llm: a line longer than {LINE_LIMIT_BYTES} bytes was cut here)"


class ProcessLog:
    """Every run starts with a header line; `pump` copies the child's output until it closes."""

    def __init__(
        self,
        path: Path,
        key: str,
        kind: str,
        model: str = "",
        log_format: str | None = None,
        limits: LogFileLimits | None = None,
    ) -> None:
        self.path = path
        self._key, self._kind, self._model = key, kind, model
        self._json = (log_format or configured_log_format()) == "json"
        self._limits = limits or safe_log_file_limits(os.environ)
        self._file: RotatingLineLog | None = None
        self._tail: deque[str] = deque()
        self._tail_bytes = 0
        self._level = "info"  # of the last prefixed line: unprefixed continuation lines keep it
        self._pump: asyncio.Task[None] | None = None

    def _out(self) -> RotatingLineLog:
        if self._file is None:  # the first run creates <home>/logs
            self._file = RotatingLineLog(self.path, self._limits.max_bytes, self._limits.backups)
        return self._file

    def open_run(self, argv: list[str]) -> None:
        """A new run: its header line, and a tail that holds only what this run writes."""
        self._tail.clear()
        self._tail_bytes = 0
        self._level = "info"
        if self._json:
            entry = self._labelled({"ts": round(time.time(), 3), "level": "info"})
            entry.update(logger="runner.process", msg=f"starting {self._key}", event="start", argv=argv)
            self._out().write(json.dumps(entry))
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self._out().write(f"\n=== {stamp} mesh-llm runner: {' '.join(argv)}")

    def start_pump(self, stream: asyncio.StreamReader) -> None:
        self._pump = asyncio.create_task(self._copy(stream), name=f"log {self._key}")

    async def finish(self) -> None:
        """Wait (DRAIN_TIMEOUT_S at most) for the pipe to close, so the tail has the last lines."""
        pump, self._pump = self._pump, None
        if pump is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(pump), DRAIN_TIMEOUT_S)
        except TimeoutError:  # something the child left behind keeps the pipe open: stop reading
            pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump

    def tail(self) -> str:
        """The last LOG_TAIL_BYTES of this run's lines, as the process printed them."""
        return "".join(self._tail)

    async def _copy(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # past LINE_LIMIT_BYTES: the reader dropped it; keep the pipe flowing
                self.write_line(CUT_LINE_NOTE)
                continue
            if not raw:
                return
            self.write_line(raw.decode(errors="replace").rstrip("\r\n"))

    def write_line(self, line: str) -> None:
        """One line of the child's output, in the node's log format; an unwritable log is logged once
        per run by the runner, never stops the child."""
        self._remember(line)
        try:
            self._out().write(self._render(line))
        except OSError as exc:
            log.warning("cannot write %s: %s", self.path, exc)

    def _render(self, line: str) -> str:
        if not self._json:
            return line
        logger = f"{self._kind}.{self._model}" if self._model else self._kind
        entry = parse_llama_line(line, logger, time.time())
        if "elapsed_s" in entry:
            self._level = str(entry["level"])
        else:  # not llama.cpp's own format: the rest of a multi-line print, an rpc-server banner
            entry["level"] = self._level
        return json.dumps(self._labelled(entry), ensure_ascii=False)

    def _labelled(self, entry: dict[str, object]) -> dict[str, object]:
        entry.update(service=self._kind, process=self._key)
        if self._model:
            entry["model"] = self._model
        return entry

    def _remember(self, line: str) -> None:
        text = line + "\n"
        self._tail.append(text)
        self._tail_bytes += len(text)
        while self._tail_bytes > LOG_TAIL_BYTES and len(self._tail) > 1:
            self._tail_bytes -= len(self._tail.popleft())
