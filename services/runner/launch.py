"""Spawning one llama.cpp process so that it can never outlive the runner.

Each child runs in its own session (so one killpg reaches everything it spawned) and, on Linux,
with PR_SET_PDEATHSIG=SIGKILL so the kernel kills it if the runner dies, even by SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from services.runner.process_log import LINE_LIMIT_BYTES

# ggml's abort handler attaches gdb for a backtrace of every thread: seconds of delay before a restart,
# and pages of log that would push the real error out of the tail we summarize.
CHILD_ENV_OVERRIDES = {"GGML_NO_BACKTRACE": "1"}
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def log_path_for(log_dir: Path, key: str) -> Path:
    """<home>/logs/<key>.log with the key made file-name safe ("llama-server/x" -> "llama-server_x")."""
    return log_dir / f"{_UNSAFE_FILE_CHARS.sub('_', key).strip('_') or 'process'}.log"


# Ports the node's gateway listens on (API, console): an ephemeral port the kernel hands a llama.cpp
# process must not be one of them, or a gateway restarting while it runs could never bind again.
RESERVED_PORTS: set[int] = set()
EPHEMERAL_REDRAWS = 8


def reserve_ports(ports: set[int]) -> None:
    RESERVED_PORTS.update(ports)


def pick_port(preferred: int = 0) -> int:
    """A free TCP port on 127.0.0.1; `preferred` first, so a restart keeps its address if it can."""
    first = (preferred,) if preferred and preferred not in RESERVED_PORTS else ()
    for candidate in (*first, *[0] * EPHEMERAL_REDRAWS):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            port = int(probe.getsockname()[1])
            if port not in RESERVED_PORTS:
                return port
    raise OSError("no free TCP port on 127.0.0.1")


# Runs between our fork and the llama.cpp exec: arm PDEATHSIG (it survives execve), then become argv.
# A tiny interpreter rather than preexec_fn: Python code in a forked child of a threaded process (gRPC)
# can deadlock, and without preexec_fn CPython may use vfork, which skips gRPC's fork handlers.
_PDEATHSIG_SHIM = """
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_PDEATHSIG) failed: errno %d" % ctypes.get_errno())
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


def with_death_signal(argv: list[str]) -> list[str]:
    """argv wrapped so the kernel SIGKILLs it when the runner dies (Linux; elsewhere argv unchanged).

    The runner may already be gone before the shim arms the signal; then nobody would ever signal
    the child, so the shim checks its parent pid and exits instead.
    """
    if not sys.platform.startswith("linux"):
        return argv
    return [sys.executable, "-I", "-S", "-c", _PDEATHSIG_SHIM, str(os.getpid()), *argv]


# llama-server reads its API key from here: unlike an argument, the environment of a process is
# readable by its own user only (/proc/PID/environ is 0400), so other local users never see it.
LLAMA_API_KEY_ENV = "LLAMA_API_KEY"


async def spawn(argv: list[str], env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    """Start argv in a new session with stdout+stderr on one pipe (`proc.stdout`: the caller must
    read it, see process_log.ProcessLog); `env` adds to this process's environment.

    PDEATHSIG fires when the forking *thread* exits: this must run on the event loop's (main) thread.
    """
    return await asyncio.create_subprocess_exec(
        *with_death_signal(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **CHILD_ENV_OVERRIDES, **(env or {})},
        limit=LINE_LIMIT_BYTES,
    )
