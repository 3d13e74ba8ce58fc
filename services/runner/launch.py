"""Spawning one llama.cpp process so that it can never outlive the runner.

Each child runs in its own session (so one killpg reaches everything it spawned) and, on Linux,
with PR_SET_PDEATHSIG=SIGKILL so the kernel kills it if the runner dies, even by SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

LOG_ROTATE_BYTES = 10 * 1024 * 1024
LOG_TAIL_BYTES = 16 * 1024
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def log_path_for(log_dir: Path, key: str) -> Path:
    """<home>/logs/<key>.log with the key made file-name safe ("llama-server/x" -> "llama-server_x")."""
    return log_dir / f"{_UNSAFE_FILE_CHARS.sub('_', key).strip('_') or 'process'}.log"


def pick_port(preferred: int = 0) -> int:
    """A free TCP port on 127.0.0.1; `preferred` first, so a restart keeps its address if it can."""
    for candidate in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError("no free TCP port on 127.0.0.1")


def _death_signal_preexec() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    # Resolved in the parent: after fork, only async-signal-safe work should happen.
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl
    parent_pid = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        # The runner may have died between fork and prctl; then nobody would ever signal us.
        if os.getppid() != parent_pid:
            os._exit(1)

    return arm


class ProcessLog:
    """The append-only log of one process key; every run starts with a header line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def open_run(self, argv: list[str]) -> tuple[int, int]:
        """Open for a new run; returns (fd for the child's stdout+stderr, offset where this run starts)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_size > LOG_ROTATE_BYTES:
                self.path.replace(self.path.with_suffix(".log.1"))
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        header = f"\n=== {stamp} mesh-llm runner: {' '.join(argv)}\n".encode()
        offset = os.lseek(fd, 0, os.SEEK_END)
        os.write(fd, header)
        return fd, offset + len(header)

    def tail_since(self, offset: int) -> str:
        """The last LOG_TAIL_BYTES of what the run starting at `offset` wrote."""
        try:
            with self.path.open("rb") as handle:
                end = handle.seek(0, os.SEEK_END)
                handle.seek(max(offset, end - LOG_TAIL_BYTES) if end >= offset else 0)
                return handle.read().decode(errors="replace")
        except OSError:
            return ""


async def spawn(argv: list[str], log_fd: int) -> asyncio.subprocess.Process:
    """Start argv in a new session with stdout+stderr appended to log_fd (closed here)."""
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # PDEATHSIG fires when the forking *thread* exits: this runs on the event loop (main) thread.
            preexec_fn=_death_signal_preexec(),
        )
    finally:
        os.close(log_fd)
