"""Why a llama.cpp process died, in one line a person can act on (pure: exit code + log tail)."""

from __future__ import annotations

import signal

MAX_ERROR_CHARS = 300
# Lower-case fragments llama.cpp prints when it gives up (model load, bind, RPC connect, asserts).
ERROR_MARKERS = (
    "error",
    "failed",
    "abort",
    "exception",
    "terminate called",
    "invalid magic",
    "couldn't bind",
    "cannot",
    "unable to",
)
# Lines that contain a marker but are not the cause.
BENIGN_MARKERS = ("warn", "cleaning up before exit", "exiting due to")


def describe_returncode(returncode: int | None) -> str:
    if returncode is None:
        return "did not exit"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def first_error_line(log_tail: str) -> str:
    """The first line that looks like the cause, else the last non-empty line, else ''."""
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    for line in lines:
        lowered = line.lower()
        if any(m in lowered for m in ERROR_MARKERS) and not any(b in lowered for b in BENIGN_MARKERS):
            return line[:MAX_ERROR_CHARS]
    return lines[-1][:MAX_ERROR_CHARS] if lines else ""


def summarize_exit(returncode: int | None, log_tail: str) -> str:
    """e.g. "exited with code 1: llama_model_load: error loading model: ..."."""
    cause = describe_returncode(returncode)
    line = first_error_line(log_tail)
    return f"{cause}: {line}" if line else cause
