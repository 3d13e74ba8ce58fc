"""A log size limit in the environment that cannot be used is one line and exit 2, before any start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.node.log_limits import LOG_BACKUPS_ENV, LOG_MAX_BYTES_ENV

MESH_LLM = Path(sys.executable).parent / "mesh-llm"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (LOG_MAX_BYTES_ENV, "10MB", f"{LOG_MAX_BYTES_ENV}='10MB' is not a whole number"),
        (LOG_MAX_BYTES_ENV, "12", "out of range"),
        (LOG_BACKUPS_ENV, "0", "out of range"),
    ],
)
def test_bad_log_limit_is_one_line_and_exit_2(name: str, value: str, message: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(MESH_LLM), "--home", str(tmp_path / "home"), "--model", "gemma3-270m"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, name: value},
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "home" / "run" / "supervisord.pid").exists()
