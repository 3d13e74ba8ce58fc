"""Why a llama.cpp process died, in one line a person can act on (pure: exit code + log tail)."""

from __future__ import annotations

import re
import signal

MAX_ERROR_CHARS = 300
# Lower-case fragments llama.cpp prints when it gives up (model load, bind, RPC connect, asserts).
ERROR_MARKERS = (
    "error",
    "failed",
    "abort",
    "crash",
    "malformed",
    "exception",
    "terminate called",
    "invalid magic",
    "couldn't bind",
    "cannot",
    "unable to",
)
# Lines that contain a marker but are not the cause.
BENIGN_MARKERS = ("warn", "cleaning up before exit", "exiting due to")
# llama.cpp's own log lines: "0.00.006.070 E llama_model_load: ..." (time, then a level letter).
_LEVEL_PREFIX = re.compile(r"^\d+(?:\.\d+)+ ([A-Z]) ")
# Quoted strings and paths say *what* failed, never that something did (a temp dir named "..failed0").
_QUOTED_OR_PATH = re.compile(r"'[^']*'|\"[^\"]*\"|\S*/\S*")


# Signals a process gets from outside: the kernel's OOM killer and `kill -9` send SIGKILL; a user, a
# service manager or a closed terminal SIGTERM, SIGINT or SIGHUP. Such a death says nothing about the
# model, and the process had no chance to log why. SIGABRT, SIGSEGV, SIGBUS, SIGFPE and SIGILL are the
# process's own crash (GGML_ABORT, a bad tensor): one a model repeats on every start is a broken model.
OUTSIDE_KILL_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
# The OOM killer is the usual sender of a SIGKILL nobody asked for; the log cannot confirm it.
SIGKILL_HINT = "out of memory?"


def killed_from_outside(returncode: int | None) -> bool:
    """Died of a signal someone else sent (see OUTSIDE_KILL_SIGNALS), not of its own failure."""
    return returncode is not None and returncode < 0 and -returncode in OUTSIDE_KILL_SIGNALS


def describe_returncode(returncode: int | None) -> str:
    if returncode is None:
        return "did not exit"
    if returncode == -signal.SIGKILL:
        return f"killed by SIGKILL ({SIGKILL_HINT})"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _message_and_verdict(line: str) -> tuple[str, bool]:
    """The line without llama.cpp's time/level prefix, and whether it looks like the cause."""
    prefix = _LEVEL_PREFIX.match(line)
    message = line[prefix.end() :] if prefix else line
    lowered = message.lower()
    if any(b in lowered for b in BENIGN_MARKERS):
        return message, False
    if prefix:
        return message, prefix.group(1) == "E"
    # Unprefixed: GGML_ABORT ("file.cpp:566: message"), rpc-server, the C++ runtime.
    words = _QUOTED_OR_PATH.sub(" ", lowered)
    return message, any(m in words for m in ERROR_MARKERS)


def cause_line(log_tail: str) -> str:
    """The first line that looks like the cause of an exit, else ''."""
    for line in log_tail.splitlines():
        if line.strip():
            message, is_cause = _message_and_verdict(line.strip())
            if is_cause:
                return message[:MAX_ERROR_CHARS]
    return ""


def first_error_line(log_tail: str) -> str:
    """The first line that looks like the cause, else the last non-empty line, else ''."""
    cause = cause_line(log_tail)
    if cause:
        return cause
    messages = [_message_and_verdict(line.strip())[0] for line in log_tail.splitlines() if line.strip()]
    return messages[-1][:MAX_ERROR_CHARS] if messages else ""


def summarize_exit(returncode: int | None, log_tail: str) -> str:
    """e.g. "exited with code 1: llama_model_load: error loading model: ...".

    A process that exited by itself said why last, if not in an error line. A killed one never got
    to say: its last line (a request served, "listening on ...") is not the reason, so a signal gets
    an error line only if the log has one (GGML_ABORT's message before SIGABRT), and a kill from
    outside none.
    """
    cause = describe_returncode(returncode)
    if killed_from_outside(returncode):
        return cause
    line = cause_line(log_tail) if returncode is not None and returncode < 0 else first_error_line(log_tail)
    return f"{cause}: {line}" if line else cause
