"""The size every log file rotates at and how many old ones stay, from the environment."""

from __future__ import annotations

import pytest

from services.node.log_limits import (
    LOG_BACKUPS_ENV,
    LOG_FILE_BACKUPS,
    LOG_FILE_MAX_BYTES,
    LOG_MAX_BYTES_ENV,
    LogFileLimits,
    LogLimitError,
    limits_env,
    log_file_limits,
    safe_log_file_limits,
)


def test_defaults_and_overrides() -> None:
    assert log_file_limits({}) == LogFileLimits(LOG_FILE_MAX_BYTES, LOG_FILE_BACKUPS)
    limits = log_file_limits({LOG_MAX_BYTES_ENV: "4096", LOG_BACKUPS_ENV: "3"})
    assert limits == LogFileLimits(4096, 3)
    assert limits_env(limits) == {LOG_MAX_BYTES_ENV: "4096", LOG_BACKUPS_ENV: "3"}


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({LOG_MAX_BYTES_ENV: "10MB"}, "is not a whole number"),
        ({LOG_MAX_BYTES_ENV: "10"}, "out of range"),
        ({LOG_BACKUPS_ENV: "0"}, "out of range"),
    ],
)
def test_bad_values_are_one_line_errors(env: dict[str, str], says: str) -> None:
    with pytest.raises(LogLimitError, match=says):
        log_file_limits(env)
    assert safe_log_file_limits(env) == LogFileLimits()
