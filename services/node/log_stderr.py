"""With `--log-format json`, what a service writes to stderr outside logging becomes JSON lines too.

Libraries print around logging: grpc's aio server prints the traceback of a cancelled handler,
Python prints an uncaught exception. In a json log each such line would be the one a log shipper
cannot parse, so sys.stderr becomes a writer that turns each line, and each whole traceback, into
one object of the shape services/node/logs.py JsonFormatter writes. (C code writing to fd 2, such as
grpc core's own rare errors, is not seen here.)
"""

from __future__ import annotations

import atexit
import io
import json
import sys
import threading
import time
from typing import TextIO

TRACEBACK_START = "Traceback (most recent call last):"
STDERR_LOGGER = "stderr"
# A traceback is an error; anything else a library prints to stderr is at least worth a look.
TRACEBACK_LEVEL = "error"
STDERR_LEVEL = "warning"


class StderrLines:
    """Pure: text as written, in whatever pieces, to whole messages: a line, or a whole traceback
    (from its "Traceback" line through the exception line that ends it)."""

    def __init__(self) -> None:
        self._partial = ""
        self._traceback: list[str] = []

    def feed(self, text: str) -> list[str]:
        *lines, self._partial = (self._partial + text).split("\n")
        return [message for line in lines for message in self._line(line.rstrip("\r"))]

    def flush(self) -> list[str]:
        """What is left (an unfinished traceback, a line without its newline)."""
        rest = [*self._traceback, self._partial] if self._partial else self._traceback
        self._traceback, self._partial = [], ""
        return ["\n".join(rest)] if any(line.strip() for line in rest) else []

    def _line(self, line: str) -> list[str]:
        if self._traceback:
            self._traceback.append(line)
            if line[:1].strip():  # not indented: "ValueError: ..." closes it
                whole, self._traceback = "\n".join(self._traceback), []
                return [whole]
            return []
        if line.startswith(TRACEBACK_START):
            self._traceback = [line]
            return []
        return [line] if line.strip() else []


def stderr_entry(service: str, message: str, ts: float) -> str:
    level = TRACEBACK_LEVEL if message.startswith(TRACEBACK_START) else STDERR_LEVEL
    entry = {"ts": round(ts, 3), "level": level, "service": service, "logger": STDERR_LOGGER, "msg": message}
    return json.dumps(entry)


class JsonStderr(io.TextIOBase):
    """sys.stderr for a json-logging service: writes one JSON object a message to `real`."""

    def __init__(self, service: str, real: TextIO) -> None:
        self.service, self.real = service, real
        self._lines = StderrLines()
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._emit(self._lines.feed(text))
        return len(text)

    def flush(self) -> None:
        # A half-written line or traceback stays buffered: a flush between its pieces must not split it.
        self.real.flush()

    def drain(self) -> None:
        """At exit: whatever is buffered, as it is."""
        with self._lock:
            self._emit(self._lines.flush())

    def _emit(self, messages: list[str]) -> None:
        now = time.time()
        for message in messages:
            self.real.write(stderr_entry(self.service, message, now) + "\n")
        if messages:
            self.real.flush()


def json_stderr(service: str) -> TextIO:
    """Make sys.stderr a JsonStderr (once) and return the real stream, for JSON log records."""
    current = sys.stderr
    if isinstance(current, JsonStderr):
        current.service = service
        return current.real
    writer = JsonStderr(service, current)
    atexit.register(writer.drain)
    sys.stderr = writer  # type: ignore[assignment]
    return current
