"""The systemd unit and launchd agent `mesh-llm service install` writes (rendered from deploy/)."""

from __future__ import annotations

import plistlib
import shlex
from pathlib import Path

import pytest

from services.cli.service import LAUNCHD_TEMPLATE, SYSTEMD_TEMPLATE
from services.cli.service_units import (
    LAUNCHD_LABEL,
    STOP_TIMEOUT_S,
    ServiceSpec,
    absolute_paths,
    launchd_plan,
    passed_environment,
    render_launchd_plist,
    render_systemd_unit,
    systemd_plan,
    systemd_quote,
)

# Arguments a shell would mangle and systemd/launchd must pass through unchanged.
AWKWARD = ("/opt/mesh llm/bin/mesh-llm", "--name", 'Bob\'s "box" 100% $HOME', "--model", "a&b<c>.gguf")
SPEC = ServiceSpec(AWKWARD, Path("/home/bob/.mesh-llm"), {"MESH_LLM_LLAMA_BIN": "/opt/llama %h/bin"})


def systemd_unquote(exec_start: str) -> list[str]:
    """How systemd splits ExecStart for the simple words and C escapes we emit, specifiers undone."""
    return [word.replace("%%", "%").replace("$$", "$") for word in shlex.split(exec_start)]


def setting(unit: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(f"{key}=")]


def test_systemd_unit_runs_the_node_and_restarts_and_stops_cleanly() -> None:
    unit = render_systemd_unit(SYSTEMD_TEMPLATE.read_text(), SPEC)
    assert "@" not in "".join(line for line in unit.splitlines() if not line.startswith("#"))
    (exec_start,) = setting(unit, "ExecStart")
    assert systemd_unquote(exec_start) == list(AWKWARD)
    assert setting(unit, "Restart") == ["on-failure"]
    assert setting(unit, "After") == ["network-online.target"]
    assert setting(unit, "Wants") == ["network-online.target"]
    assert setting(unit, "KillMode") == ["mixed"]
    assert setting(unit, "WorkingDirectory") == ["/home/bob/.mesh-llm"]
    assert int(setting(unit, "TimeoutStopSec")[0]) == STOP_TIMEOUT_S
    assert setting(unit, "WantedBy") == ["default.target"]
    assert 'Environment="MESH_LLM_LLAMA_BIN=/opt/llama %%h/bin"' in unit


def test_the_stop_timeout_outlasts_the_nodes_own_stop() -> None:
    from services.cli.node_process import SUPERVISOR_STOP_TIMEOUT_S as own_stop

    assert STOP_TIMEOUT_S > own_stop


def test_systemd_quoting_keeps_plain_words_plain() -> None:
    assert systemd_quote("--port") == "--port"
    assert systemd_quote("a b") == '"a b"'
    assert systemd_quote("50%") == "50%%"
    assert systemd_quote("$X") == "$$X"
    assert systemd_quote('back\\slash"') == '"back\\\\slash\\""'


def test_launchd_plist_parses_and_carries_the_same_command() -> None:
    text = render_launchd_plist(LAUNCHD_TEMPLATE.read_text(), SPEC)
    plist = plistlib.loads(text.encode())
    assert plist["Label"] == LAUNCHD_LABEL
    assert plist["ProgramArguments"] == list(AWKWARD)
    assert plist["WorkingDirectory"] == "/home/bob/.mesh-llm"
    assert plist["EnvironmentVariables"] == {"MESH_LLM_LLAMA_BIN": "/opt/llama %h/bin"}
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}  # restart on failure only
    assert plist["ExitTimeOut"] == STOP_TIMEOUT_S
    assert plist["StandardErrorPath"] == "/home/bob/.mesh-llm/logs/service.log"


def test_plans_say_where_the_unit_goes_and_what_runs() -> None:
    linux = systemd_plan(SYSTEMD_TEMPLATE.read_text(), SPEC, Path("/home/bob/.config"), "bob")
    assert linux.unit_path == Path("/home/bob/.config/systemd/user/mesh-llm.service")
    steps = [c.argv for c in linux.install]
    assert ("systemctl", "--user", "enable", "mesh-llm.service") in steps
    assert ("loginctl", "enable-linger", "bob") in steps  # without it: no start at boot
    assert linux.uninstall[0].argv == ("systemctl", "--user", "disable", "--now", "mesh-llm.service")
    mac = launchd_plan(LAUNCHD_TEMPLATE.read_text(), SPEC, Path("/Users/bob"), 501)
    assert mac.unit_path == Path("/Users/bob/Library/LaunchAgents/dev.mesh-llm.node.plist")
    assert ("launchctl", "bootstrap", "gui/501", str(mac.unit_path)) in [c.argv for c in mac.install]


def test_relative_paths_become_absolute_but_catalog_names_stay() -> None:
    cwd = Path("/work")
    flags = ["--model", "m.gguf", "--model", "gemma3-270m", "--home=h", "--models-dir", "~/x", "--port", "1"]
    out = absolute_paths(flags, cwd, lambda path: path.name.endswith(".gguf"))
    assert out[:4] == ["--model", "/work/m.gguf", "--model", "gemma3-270m"]
    assert out[4] == "--home=/work/h"
    assert out[6] == str(Path("~/x").expanduser())
    assert out[7:] == ["--port", "1"]


def test_only_known_environment_is_passed_on() -> None:
    env = passed_environment({"MESH_LLM_LLAMA_BIN": "/b", "HF_TOKEN": "secret", "MESH_LLM_API_KEY": "k"})
    assert env == {"MESH_LLM_LLAMA_BIN": "/b", "PYTHONUNBUFFERED": "1"}


def test_a_template_field_nothing_fills_is_an_error() -> None:
    with pytest.raises(ValueError, match="BOGUS"):
        render_systemd_unit("ExecStart=@EXEC_START@ @BOGUS@", SPEC)
