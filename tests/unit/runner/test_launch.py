"""Log files, ports and the death-signal wrapper (services/runner/launch.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from services.runner.launch import log_path_for, pick_port, with_death_signal


def test_log_path_is_file_name_safe(tmp_path: Path) -> None:
    assert log_path_for(tmp_path, "llama-server/gemma3-270m") == tmp_path / "llama-server_gemma3-270m.log"
    assert log_path_for(tmp_path, "../../etc") == tmp_path / ".._.._etc.log"
    assert log_path_for(tmp_path, "///") == tmp_path / "process.log"


def test_pick_port_prefers_a_free_preferred_port() -> None:
    port = pick_port()
    assert pick_port(port) == port


def test_pick_port_moves_on_when_the_preferred_one_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        assert pick_port(busy) != busy


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_death_signal_wrapper_execs_the_original_argv() -> None:
    wrapped = with_death_signal(["/bin/echo", "hi"])
    assert wrapped[0] == sys.executable and wrapped[-2:] == ["/bin/echo", "hi"]
    assert subprocess.run(wrapped, capture_output=True, text=True, check=True).stdout == "hi\n"
