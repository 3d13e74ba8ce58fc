"""Files of the node home, written whole or not at all.

Each write goes to a temp file beside the target, is flushed to disk, and is renamed over the target:
a reader (or the next start, after a crash or a full disk) sees the old file or the new one, never a
part of one, and a write that fails leaves no temp file behind. A write the disk refuses (full, read
only, not ours) is a HomeWriteError that says which file and why in one line.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"
DEFAULT_FILE_MODE = 0o644


class HomeWriteError(OSError):
    """A file or folder of the node home could not be written: "cannot write PATH: REASON"."""

    def __init__(self, path: Path, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.path = path

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.strerror}"


def _write_temp(path: Path, data: bytes, mode: int, durable: bool = True) -> Path:
    """A complete copy of `data` in a new temp file beside `path` (unique: writers in other processes
    never share one), on the disk before it is renamed when `durable`: a crash right after the rename
    then finds the new file, not an empty one."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            if durable:  # some file systems also report a full disk only when the data reaches it
                os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return temp


def write_home_file(path: Path, data: bytes, mode: int = DEFAULT_FILE_MODE, durable: bool = True) -> None:
    """Replace `path` with `data` atomically. Raises HomeWriteError. `durable` False skips the fsync
    (milliseconds, seconds on a busy disk) for a hint that may as well be lost in a crash, written
    on an event loop that must not wait for the disk."""
    try:
        temp = _write_temp(path, data, mode, durable)
    except OSError as exc:
        raise HomeWriteError(path, exc) from exc
    try:
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise HomeWriteError(path, exc) from exc


def create_home_file(path: Path, data: bytes, mode: int = DEFAULT_FILE_MODE) -> bool:
    """Write `path` only if it does not exist yet; False (and nothing written) if it does. A link of
    the complete temp file: of two processes creating it at once, exactly one wins, whole."""
    try:
        temp = _write_temp(path, data, mode)
    except OSError as exc:
        raise HomeWriteError(path, exc) from exc
    try:
        os.link(temp, path)
    except FileExistsError:
        return False
    except OSError as exc:
        raise HomeWriteError(path, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            temp.unlink()
    return True


def make_home_dir(path: Path) -> None:
    """mkdir -p, with the refusal as a HomeWriteError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HomeWriteError(path, exc) from exc
