"""`--allow-host` (services/cli/mesh_llm.py): names the API and console also answer, checked as they
are parsed; a value that is not a host is one line and exit code 2."""

from __future__ import annotations

import pytest

from services.cli.arguments import USAGE_ERROR_EXIT
from services.cli.mesh_llm import build_parser


def test_allow_host_is_repeatable_and_kept_canonical() -> None:
    args = build_parser().parse_args(["--allow-host", "Mesh.Example.com", "--allow-host", "*.lan.example"])
    assert args.allow_host == ["mesh.example.com", "*.lan.example"]


@pytest.mark.parametrize("value", ["*.com", "http://mesh.example.com", "two words"])
def test_a_value_that_is_not_a_host_is_one_line_and_exit_2(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--allow-host", value])
    assert exit_info.value.code == USAGE_ERROR_EXIT
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--allow-host" in error and "not a host name" in error
