"""`mesh-llm service`: the systemd user unit and launchd agent for a node, and the commands that
install, remove and inspect them (pure: text in, text and argv out; services/cli/service.py acts).

The unit runs the same `mesh-llm [node flags…]` a user runs in a terminal, so a service node is a
terminal node: supervisord with deploy/node.conf under it, stopped cleanly on SIGTERM.
"""

from __future__ import annotations

import enum
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

SYSTEMD_UNIT_NAME = "mesh-llm.service"
LAUNCHD_LABEL = "dev.mesh-llm.node"
# The node restarts this long after a failure (both systems).
RESTART_AFTER_S = 5
# `mesh-llm` gives supervisord 30 s to stop every service (node_process.SUPERVISOR_STOP_TIMEOUT_S),
# the runner 15 s of those for its llama.cpp processes; the rest is margin before SIGKILL.
STOP_TIMEOUT_S = 45
# Descriptors: the soft limit every service raises to (services/node/fd_limit.py) needs this hard one.
OPEN_FILES_LIMIT = 1 << 20
OPEN_FILES_LIMIT_MACOS = 10240
# Passed on from the installing shell: where llama.cpp and the model cache are (never secrets).
_FIELD = re.compile(r"@([A-Z_]+)@")
PASSED_ENVIRONMENT = ("MESH_LLM_LLAMA_BIN", "MESH_LLM_CACHE", "XDG_CACHE_HOME", "HF_HOME", "HF_ENDPOINT")


class Platform(enum.Enum):
    LINUX = "linux"
    MACOS = "macos"


@dataclass(frozen=True)
class ServiceSpec:
    """What the service runs: `argv` (the mesh-llm executable, then node flags), for `home`."""

    argv: tuple[str, ...]
    home: Path
    environment: Mapping[str, str]

    @property
    def log_file(self) -> Path:
        """launchd's stdout/stderr (systemd keeps them in the journal)."""
        return self.home / "logs" / "service.log"


@dataclass(frozen=True)
class ServiceCommand:
    argv: tuple[str, ...]
    # False: a failure is a warning, not the end of the install (an agent not loaded yet, no loginctl).
    required: bool = True


@dataclass(frozen=True)
class ServicePlan:
    """What `service install|uninstall|status|logs` writes and runs, in order."""

    unit_path: Path
    unit_text: str
    install: tuple[ServiceCommand, ...]
    uninstall: tuple[ServiceCommand, ...]
    status: tuple[str, ...]
    logs: tuple[str, ...]
    follow_logs: tuple[str, ...]


def passed_environment(environ: Mapping[str, str]) -> dict[str, str]:
    env = {name: environ[name] for name in PASSED_ENVIRONMENT if environ.get(name)}
    env["PYTHONUNBUFFERED"] = "1"  # the ready screen and errors reach the journal/log as they happen
    return env


def _systemd_escape_specifiers(text: str) -> str:
    """systemd expands %x specifiers in most settings and $VAR in ExecStart: keep both literal."""
    return text.replace("%", "%%")


def systemd_quote(arg: str) -> str:
    """One ExecStart word (systemd.service "Command lines": C-style escapes in double quotes)."""
    text = _systemd_escape_specifiers(arg).replace("$", "$$")
    if text and not any(c in text for c in " \t\n\"'\\;"):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def _systemd_env_line(name: str, value: str) -> str:
    quoted = _systemd_escape_specifiers(f"{name}={value}").replace("\\", "\\\\").replace('"', '\\"')
    return f'Environment="{quoted}"'


def _fill(template: str, fields: Mapping[str, str]) -> str:
    missing = set(_FIELD.findall(template)) - set(fields)
    if missing:
        raise ValueError(f"template fields nothing fills: {sorted(missing)}")
    return _FIELD.sub(lambda match: fields[match[1]], template)


def render_systemd_unit(template: str, spec: ServiceSpec) -> str:
    home = _systemd_escape_specifiers(str(spec.home))
    return _fill(
        template,
        {
            "EXEC_START": " ".join(systemd_quote(arg) for arg in spec.argv),
            "HOME": home,
            "ENVIRONMENT": "\n".join(_systemd_env_line(k, v) for k, v in sorted(spec.environment.items())),
            "RESTART_SEC": str(RESTART_AFTER_S),
            "TIMEOUT_STOP_S": str(STOP_TIMEOUT_S),
            "NOFILE": str(OPEN_FILES_LIMIT),
        },
    )


def render_launchd_plist(template: str, spec: ServiceSpec) -> str:
    arguments = "\n".join(f"    <string>{escape(arg)}</string>" for arg in spec.argv)
    environment = "\n".join(
        f"    <key>{escape(k)}</key>\n    <string>{escape(v)}</string>"
        for k, v in sorted(spec.environment.items())
    )
    return _fill(
        template,
        {
            "LABEL": LAUNCHD_LABEL,
            "PROGRAM_ARGUMENTS": arguments,
            "HOME": escape(str(spec.home)),
            "ENVIRONMENT": environment,
            "RESTART_SEC": str(RESTART_AFTER_S),
            "TIMEOUT_STOP_S": str(STOP_TIMEOUT_S),
            "NOFILE_MAC": str(OPEN_FILES_LIMIT_MACOS),
            "LOG": escape(str(spec.log_file)),
        },
    )


def systemd_plan(template: str, spec: ServiceSpec, config_home: Path, user: str) -> ServicePlan:
    """`config_home`: $XDG_CONFIG_HOME (~/.config); the unit goes in its systemd/user/."""
    systemctl = ("systemctl", "--user")
    return ServicePlan(
        unit_path=config_home / "systemd" / "user" / SYSTEMD_UNIT_NAME,
        unit_text=render_systemd_unit(template, spec),
        install=(
            ServiceCommand((*systemctl, "daemon-reload")),
            ServiceCommand((*systemctl, "enable", SYSTEMD_UNIT_NAME)),
            # restart, not start: a second install with other flags takes effect now.
            ServiceCommand((*systemctl, "restart", SYSTEMD_UNIT_NAME)),
            # Without lingering a user's services stop at logout and start only at login, not boot.
            ServiceCommand(("loginctl", "enable-linger", user), required=False),
        ),
        uninstall=(
            ServiceCommand((*systemctl, "disable", "--now", SYSTEMD_UNIT_NAME)),
            ServiceCommand((*systemctl, "daemon-reload"), required=False),
        ),
        status=(*systemctl, "status", "--no-pager", SYSTEMD_UNIT_NAME),
        logs=("journalctl", "--user", "--no-pager", "-n", "200", "-u", SYSTEMD_UNIT_NAME),
        follow_logs=("journalctl", "--user", "-f", "-u", SYSTEMD_UNIT_NAME),
    )


def launchd_plan(template: str, spec: ServiceSpec, user_home: Path, uid: int) -> ServicePlan:
    domain = f"gui/{uid}"
    path = user_home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    return ServicePlan(
        unit_path=path,
        unit_text=render_launchd_plist(template, spec),
        install=(
            # A second install replaces the loaded agent (bootstrap refuses a loaded label).
            ServiceCommand(("launchctl", "bootout", f"{domain}/{LAUNCHD_LABEL}"), required=False),
            ServiceCommand(("launchctl", "bootstrap", domain, str(path))),
            ServiceCommand(("launchctl", "enable", f"{domain}/{LAUNCHD_LABEL}")),
        ),
        uninstall=(ServiceCommand(("launchctl", "bootout", f"{domain}/{LAUNCHD_LABEL}")),),
        status=("launchctl", "print", f"{domain}/{LAUNCHD_LABEL}"),
        logs=("tail", "-n", "200", str(spec.log_file)),
        follow_logs=("tail", "-f", str(spec.log_file)),
    )


def describe_commands(commands: Sequence[ServiceCommand]) -> str:
    return "\n".join(shlex.join(c.argv) + ("" if c.required else "  # may fail") for c in commands)


# Node flags that take a path: a service starts in the node's home, so relative ones are made absolute.
PATH_FLAGS = ("--home", "--models-dir", "--api-key-file")
MODEL_FLAG = "--model"


def absolute_paths(flags: Sequence[str], cwd: Path, is_file: Callable[[Path], bool]) -> list[str]:
    """`flags` with every path made absolute against `cwd`; a --model is a path only when `is_file`
    says so (otherwise it is a catalog name)."""
    out: list[str] = []
    pending = ""
    for token in flags:
        if pending:
            out.append(_absolute(pending, token, cwd, is_file))
            pending = ""
            continue
        name, equals, value = token.partition("=")
        if name in (*PATH_FLAGS, MODEL_FLAG) and equals:
            out.append(f"{name}={_absolute(name, value, cwd, is_file)}")
            continue
        if token in (*PATH_FLAGS, MODEL_FLAG):
            pending = token
        out.append(token)
    return out


def _absolute(flag: str, value: str, cwd: Path, is_file: Callable[[Path], bool]) -> str:
    path = (cwd / Path(value).expanduser()).resolve()
    if flag == MODEL_FLAG and not is_file(path):
        return value
    return str(path)
