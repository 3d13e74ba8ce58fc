"""How big a log file the node lets grow and how many rotated ones it keeps (pure).

Every log file the node writes rotates by size: supervisord rotates each service's file and its own
(deploy/node.conf reads the numbers from the environment `mesh-llm` gives it), the runner rotates
each llama.cpp process's log (services/runner/process_log.py). <name>.log.1 is the newest old file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

LOG_FILE_MAX_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 2
# Overrides, in the environment `mesh-llm` runs with (passed on to supervisord and every service).
LOG_MAX_BYTES_ENV = "MESH_LLM_LOG_MAX_BYTES"
LOG_BACKUPS_ENV = "MESH_LLM_LOG_BACKUPS"
# Below this one traceback could fill a file on its own; above MAX_LOG_FILE_BYTES is no longer "bounded".
MIN_LOG_FILE_BYTES = 1024
MAX_LOG_FILE_BYTES = 1024**4
MAX_LOG_FILE_BACKUPS = 100


class LogLimitError(ValueError):
    """A log file size or backup count from the environment that cannot be used."""


@dataclass(frozen=True)
class LogFileLimits:
    max_bytes: int = LOG_FILE_MAX_BYTES
    backups: int = LOG_FILE_BACKUPS


def _env_int(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise LogLimitError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise LogLimitError(f"{name}={value} is out of range ({low}..{high})")
    return value


def log_file_limits(environ: Mapping[str, str]) -> LogFileLimits:
    """The limits `environ` asks for (the defaults when it says nothing); LogLimitError if bad."""
    return LogFileLimits(
        max_bytes=_env_int(
            environ, LOG_MAX_BYTES_ENV, LOG_FILE_MAX_BYTES, MIN_LOG_FILE_BYTES, MAX_LOG_FILE_BYTES
        ),
        backups=_env_int(environ, LOG_BACKUPS_ENV, LOG_FILE_BACKUPS, 1, MAX_LOG_FILE_BACKUPS),
    )


def safe_log_file_limits(environ: Mapping[str, str]) -> LogFileLimits:
    """For a service: a bad value was refused by `mesh-llm` already; never fail over a log size."""
    try:
        return log_file_limits(environ)
    except LogLimitError:
        return LogFileLimits()


def limits_env(limits: LogFileLimits) -> dict[str, str]:
    """The variables deploy/node.conf expands (%(ENV_...)s) for supervisord's rotation."""
    return {LOG_MAX_BYTES_ENV: str(limits.max_bytes), LOG_BACKUPS_ENV: str(limits.backups)}
