"""`--speculation`, `--draft` and `--no-draft` mistakes: one line on stderr and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.node import free_port

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--speculation", "fast"], "auto, draft, ngram, off"),
        (["--speculation", ""], "auto, draft, ngram, off"),
        (["--draft", "/nonexistent/d.gguf"], "--draft: model file /nonexistent/d.gguf does not exist"),
        (["--draft", "no-such-draft"], "--draft: unknown model"),
        (["--draft", "x.gguf", "--no-draft"], "not allowed with argument"),
        (["--speculation", "draft", "--no-draft"], "--speculation draft needs a draft model"),
    ],
)
def test_bad_speculation_arguments_get_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        # A model and free ports, so the flags are what is wrong (the node never starts: exit 2).
        [
            str(BIN / "mesh-llm"),
            "--home",
            str(tmp_path / "home"),
            "--model",
            "smollm2-135m",
            "--port",
            str(free_port()),
            "--console",
            str(free_port()),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
