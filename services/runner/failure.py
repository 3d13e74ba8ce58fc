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


def describe_returncode(returncode: int | None) -> str:
    if returncode is None:
        return "did not exit"
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


def first_error_line(log_tail: str) -> str:
    """The first line that looks like the cause, else the last non-empty line, else ''."""
    messages = []
    for line in log_tail.splitlines():
        if not line.strip():
            continue
        message, is_cause = _message_and_verdict(line.strip())
        if is_cause:
            return message[:MAX_ERROR_CHARS]
        messages.append(message)
    return messages[-1][:MAX_ERROR_CHARS] if messages else ""


def summarize_exit(returncode: int | None, log_tail: str) -> str:
    """e.g. "exited with code 1: llama_model_load: error loading model: ..."."""
    cause = describe_returncode(returncode)
    line = first_error_line(log_tail)
    return f"{cause}: {line}" if line else cause
