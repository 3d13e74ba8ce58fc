"""A line log that rotates by size: what the runner writes each llama.cpp process's output to."""

from __future__ import annotations

from pathlib import Path


class RotatingLineLog:
    """Append-only lines in `path`, rotated to `path.1` .. `path.N` when it would pass `max_bytes`.

    Blocking (small writes): for a process log pump, which runs off the event loop or accepts that.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._size = path.stat().st_size if path.exists() else 0

    def write(self, line: str) -> None:
        data = (line.rstrip("\n") + "\n").encode()
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        with self.path.open("ab") as out:
            out.write(data)
        self._size += len(data)

    def _rotate(self) -> None:
        for index in range(self.backups, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            newer = self.path.with_name(f"{self.path.name}.{index - 1}") if index > 1 else self.path
            if newer.exists():
                newer.replace(older)
        if not self.backups:
            self.path.unlink(missing_ok=True)
        self._size = 0
