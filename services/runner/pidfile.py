"""A file of the llama.cpp pids the runner started, so a restarted runner can reap what a crash left.

On Linux PR_SET_PDEATHSIG already kills a child when the runner dies; this file is the second belt
(and the only one on macOS). A pid is killed only if it still runs one of our binaries: pids get reused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
from pathlib import Path

from services.runner.commands import BINARIES

log = logging.getLogger("runner.pidfile")
PS_TIMEOUT_S = 5


def _command_name(pid: int) -> str:
    """argv[0]'s base name of a live pid, or '' if it is gone or unknowable."""
    proc_cmdline = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            argv0 = proc_cmdline.read_bytes().split(b"\0", 1)[0].decode(errors="replace")
        except OSError:
            return ""
        return os.path.basename(argv0)
    try:  # macOS and other Unixes without /proc
        probe = subprocess.run(
            ["ps", "-p", str(pid), "-o", "comm="], capture_output=True, text=True, timeout=PS_TIMEOUT_S
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return os.path.basename(probe.stdout.strip())


def is_llama_process(pid: int) -> bool:
    return _command_name(pid) in BINARIES


def kill_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group led by `pid` (every child starts its own session, so pgid == pid).

    Only the group, never a bare pid: once a child is reaped its pid may belong to a stranger,
    but a group id stays ours while any member of that group lives.
    """
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        log.warning("not allowed to signal process group %d", pid)


class PidRegistry:
    """The pids of live children, mirrored to <home>/run/runner-pids.json on every change."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._pids: set[int] = set()

    @property
    def pids(self) -> frozenset[int]:
        return frozenset(self._pids)

    def add(self, pid: int) -> None:
        self._pids.add(pid)
        self._save()

    def discard(self, pid: int) -> None:
        if pid in self._pids:
            self._pids.discard(pid)
            self._save()

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(self._pids)))
        tmp.replace(self._path)

    def _load(self) -> list[int]:
        try:
            data = json.loads(self._path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self._path, exc)
            return []
        return [pid for pid in data if isinstance(pid, int) and pid > 0] if isinstance(data, list) else []

    def reap_leftovers(self) -> list[int]:
        """SIGKILL the groups of recorded pids that still run a llama.cpp binary; forget the rest."""
        killed = []
        for pid in self._load():
            if pid != os.getpid() and is_llama_process(pid):
                kill_group(pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):  # verified above: it runs our binary
                    os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        if killed:
            log.info("killed %d leftover llama.cpp process(es) from a previous runner", len(killed))
        self._pids.clear()
        self._save()
        return killed

    def kill_all_now(self) -> None:
        """Last resort on the way out: SIGKILL every child group we still know of."""
        for pid in list(self._pids):
            kill_group(pid, signal.SIGKILL)
        self._pids.clear()
        self._save()
