"""Unusable API key choices are one line on stderr and exit code 2, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.node.config import API_KEY_ENV

MESH_LLM = Path(sys.executable).parent / "mesh-llm"


@pytest.mark.parametrize(
    ("args", "environ", "message"),
    [
        (["--api-key", "k", "--no-api-key"], {}, "not allowed with argument"),
        (["--api-key", "k", "--api-key-file", "key.txt"], {}, "not allowed with argument"),
        (["--api-key", ""], {}, "--api-key: the API key is empty"),
        (["--api-key-file", "/nonexistent/key.txt"], {}, "cannot read it (No such file or directory)"),
        (["--no-api-key", "--listen-all"], {API_KEY_ENV: "k"}, f"{API_KEY_ENV} is set"),
    ],
)
def test_bad_api_key_choices_get_one_line_and_exit_2(
    args: list[str], environ: dict[str, str], message: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV} | environ
    result = subprocess.run(
        [str(MESH_LLM), "--home", str(tmp_path / "home"), "--model", "gemma3-270m", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "home").exists()  # refused before the node was set up
