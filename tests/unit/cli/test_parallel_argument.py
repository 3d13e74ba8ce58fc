"""`mesh-llm --parallel N`: requests each llama-server decodes at once (0: automatic)."""

from __future__ import annotations

import pytest

from services.cli.mesh_llm import build_parser


def test_parallel_defaults_to_automatic_and_takes_a_count() -> None:
    assert build_parser().parse_args([]).parallel == 0
    assert build_parser().parse_args(["--parallel", "8"]).parallel == 8


@pytest.mark.parametrize("value", ["many", "-1", "257", "2.5"])
def test_a_bad_count_is_a_one_line_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--parallel", value])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "--parallel" in error and "Traceback" not in error
