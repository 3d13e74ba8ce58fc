"""A user mistake on the command line is one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["mesh-llm", "--port", "abc"], "not a port number"),
        (["mesh-llm", "--port", "70000"], "not a port number"),
        (["mesh-llm", "--join", "not-a-token"], "not a mesh-llm invite token"),
        (["mesh-llm", "--join", "mesh1-AAAA"], "truncated"),
        (["mesh-llm", "--model", "no-such-model"], "unknown model"),
        (["mesh-llm", "--model", "/nonexistent/x.gguf"], "does not exist"),
        (["mesh-llm", "--max-vram", "-1", "--model", "gemma3-270m"], "more than 0"),
        (["mesh-llm", "--client", "--model", "gemma3-270m"], "--client serves no models"),
        (["mesh-llm", "--advertise", "nohost"], "HOST:PORT"),
        (["mesh-llm", "--ctx-size", "-1"], "0 (automatic) or more tokens"),
        (["mesh-llm", "--ctx-size", "lots"], "not a number of tokens"),
        (["mesh-llm", "--bogus"], "unrecognized arguments"),
        (["meshctl", "frobnicate"], "invalid choice"),
        (["mesh-llm", "download", "no-such-model"], "unknown model"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_2(argv: list[str], message: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_meshctl_without_a_node_says_so_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "meshctl"), "--home", str(tmp_path), "status"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert "does not answer" in result.stderr and "Traceback" not in result.stderr


def test_bare_mesh_llm_prints_instructions() -> None:
    result = subprocess.run([str(BIN / "mesh-llm")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "--model" in result.stdout and "--join" in result.stdout and "9337" in result.stdout
