"""Run a node: supervisord in the foreground with deploy/node.conf, stopped cleanly on Ctrl-C/SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import services
from services.node.config import NodeConfig
from services.node.log_limits import limits_env, log_file_limits
from services.node.parent_death import die_with_parent

REPO_ROOT = Path(services.__file__).resolve().parent.parent
NODE_CONF = REPO_ROOT / "deploy" / "node.conf"
SUPERVISOR_STOP_TIMEOUT_S = 30.0


def supervisord_env(config: NodeConfig) -> dict[str, str]:
    env = dict(os.environ)
    env["MESH_LLM_HOME"] = str(config.home)
    env["MESH_LLM_PYTHON"] = sys.executable
    env["MESH_LLM_SERVES"] = "false" if config.client else "true"
    env["PYTHONUNBUFFERED"] = "1"
    # deploy/node.conf expands these: every log file rotates at the same size (LogLimitError if bad).
    env.update(limits_env(log_file_limits(os.environ)))
    return env


def start_supervisord(config: NodeConfig) -> subprocess.Popen[bytes]:
    supervisord = Path(sys.executable).parent / "supervisord"
    command = [str(supervisord) if supervisord.exists() else "supervisord", "-c", str(NODE_CONF)]
    # Its own session: a Ctrl-C in the terminal reaches only us, and we stop it in order.
    # If we are killed outright, the kernel sends it SIGTERM so the node still stops cleanly.
    return subprocess.Popen(
        command,
        env=supervisord_env(config),
        cwd=REPO_ROOT,
        start_new_session=True,
        preexec_fn=die_with_parent(signal.SIGTERM),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_supervisord(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=SUPERVISOR_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


TICK_EVERY_S = 1.0


def wait_for_stop_signal(process: subprocess.Popen[bytes], on_tick: Callable[[], None] | None = None) -> int:
    """Block until Ctrl-C, SIGTERM or supervisord exiting on its own; return the exit code to use.
    `on_tick` runs about once a second meanwhile (news for the terminal)."""
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    last_tick = time.monotonic()
    while not stopping:
        if process.poll() is not None:
            return 1
        if on_tick is not None and time.monotonic() - last_tick >= TICK_EVERY_S:
            last_tick = time.monotonic()
            on_tick()
        time.sleep(0.2)
    return 0
