"""`mesh-llm claude|codex|opencode|pi|goose`: point a coding agent at this node, then become it.

The I/O around `configs.py`: ask the node which models it serves, merge the agent's config file
(atomically, keeping the previous file once as NAME.bak), and exec the agent with its environment.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import httpx

from services.cli.agents.configs import (
    AGENTS,
    API_KEY_ENV,
    DUMMY_API_KEY,
    Agent,
    ConfigEdit,
    LaunchPlan,
    Target,
)
from services.cli.agents.errors import (
    AgentNotInstalled,
    BadModelList,
    ConfigUnmergeable,
    LaunchError,
    NoNode,
)
from services.cli.agents.models import MeshModel, chat_models, choose_model, parse_models
from services.cli.arguments import OneLineArgumentParser, port_number
from services.node.config import DEFAULT_API_PORT, ConfigError, read_api_key
from services.node.home import default_home

MODELS_TIMEOUT_S = 5.0
NEW_CONFIG_MODE = 0o600  # the file may carry a node's API key one day

ExecAgent = Callable[[str, list[str], dict[str, str]], None]


@dataclass(frozen=True)
class LaunchArgs:
    model: str | None
    port: int
    dry_run: bool
    agent_args: tuple[str, ...]
    node_home: Path | None = None  # the node's home, for the API key it requires


def parse_args(agent: Agent, argv: Sequence[str]) -> LaunchArgs:
    """Our options before `--`, the agent's after it."""
    ours, theirs = list(argv), []
    if "--" in ours:
        cut = ours.index("--")
        ours, theirs = ours[:cut], ours[cut + 1 :]
    writes = agent.config_path({}, Path.home()) is not None
    how = "a `mesh` provider in its config" if writes else "through its environment"
    parser = OneLineArgumentParser(
        prog=f"mesh-llm {agent.name}",
        usage=f"%(prog)s [--model MODEL] [--port PORT] [--dry-run] [-- {agent.binary.upper()}_ARGS ...]",
        description=f"Point {agent.name} at this mesh-llm node ({how}) and run it.",
        epilog=f"Arguments after `--` go to {agent.binary}. Exit 127: {agent.binary} is not installed "
        f"({agent.install_hint}); 1: no node, no chat model, or an unreadable config; 2: bad arguments.",
    )
    parser.add_argument(
        "--model", metavar="MODEL", help="the mesh's model to use (default: the best ready chat model)"
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=DEFAULT_API_PORT,
        help=f"the node's API port (default {DEFAULT_API_PORT})",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be written and run; change nothing"
    )
    parser.add_argument(
        "--home", type=Path, default=None, help="the node's home, for its API key (default ~/.mesh-llm)"
    )
    args, unknown = parser.parse_known_args(ours)
    if unknown:
        parser.error(
            f"unrecognized arguments: {' '.join(unknown)} ({agent.binary}'s own arguments go after `--`)"
        )
    return LaunchArgs(
        model=args.model, port=args.port, dry_run=args.dry_run, agent_args=tuple(theirs), node_home=args.home
    )


def fetch_models(
    port: int, api_key: str | None = None, transport: httpx.BaseTransport | None = None
) -> tuple[MeshModel, ...]:
    where = f"127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx.Client(transport=transport, timeout=MODELS_TIMEOUT_S) as client:
            response = client.get(f"http://{where}/v1/models", headers=headers)
    except httpx.TimeoutException as exc:
        raise NoNode(f"the node on {where} did not answer /v1/models within {MODELS_TIMEOUT_S:g} s") from exc
    except httpx.TransportError as exc:
        raise NoNode(f"no mesh-llm node on {where} — start one with `mesh-llm`") from exc
    if response.status_code == HTTPStatus.UNAUTHORIZED:
        raise BadModelList(f"the node on {where} wants its API key: set {API_KEY_ENV}")
    if response.status_code != HTTPStatus.OK:
        raise BadModelList(
            f"{where} answered /v1/models with HTTP {response.status_code}; is it a mesh-llm node?"
        )
    try:
        return parse_models(response.json())
    except (ValueError, BadModelList) as exc:
        raise BadModelList(f"{where}: {exc}; is it a mesh-llm node?") from exc


def write_configs(plan: LaunchPlan, before: Mapping[Path, str | None]) -> list[Path]:
    """Every file of the plan; the backups made. A file we may not write is the user's one line."""
    backups = []
    for edit in plan.edits:
        try:
            made = write_config(edit, before.get(edit.path))
        except OSError as exc:
            raise LaunchError(f"cannot write {edit.path} ({exc.strerror or exc})") from exc
        if made is not None:
            backups.append(made)
    return backups


def read_existing(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigUnmergeable(f"cannot read {path} ({exc}); left alone") from exc


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + ".bak")


def write_config(edit: ConfigEdit, existing: str | None) -> Path | None:
    """Write atomically (temp file + rename in the same directory). The first time a file with the
    user's own entries is changed it is kept as NAME.bak, never overwritten. Returns the backup made."""
    if existing == edit.text:
        return None
    path = edit.path
    path.parent.mkdir(parents=True, exist_ok=True)
    made = None
    mode = NEW_CONFIG_MODE
    if existing is not None:
        mode = path.stat().st_mode & 0o777
        if edit.had_user_entries and not backup_path(path).exists():
            shutil.copy2(path, backup_path(path))
            made = backup_path(path)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(edit.text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return made


def command_line(plan: LaunchPlan, base: Mapping[str, str]) -> str:
    """The plan as one shell command: `env -u X A=1 agent args`."""
    env = plan.environment(base)
    unset = [f"-u {name}" for name in plan.env_unset if name in base]
    names = dict.fromkeys([*plan.env, *plan.env_defaults])  # ours first, in the order we set them
    changed = [f"{k}={shlex.quote(env[k])}" for k in names if k in env and base.get(k) != env[k]]
    prefix = ["env", *unset] if unset else []
    return " ".join([*prefix, *changed, shlex.join(plan.argv)])


def print_dry_run(plan: LaunchPlan, existing: Mapping[Path, str | None], base: Mapping[str, str]) -> None:
    for edit in plan.edits:
        verb = "unchanged" if existing.get(edit.path) == edit.text else "would write"
        print(f"{verb} {edit.path}:")
        print(edit.text, end="" if edit.text.endswith("\n") else "\n")
    print(f"would run: {command_line(plan, base)}")


def _exec(path: str, argv: list[str], env: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(env)
    os.execvp(path, argv)


def _summary(agent: Agent, target: Target, backups: list[Path]) -> str:
    model = target.model
    where = f"{len(model.nodes)} node{'s' if len(model.nodes) != 1 else ''}" if model.nodes else "the mesh"
    line = f"mesh-llm {agent.name}: {model.id} ({model.state} on {where}) via {target.api_url}"
    for backup in backups:
        line += f"; your previous {backup.with_suffix('').name} is kept as {backup}"
    return line


def node_api_key(node_home: Path | None) -> str | None:
    """The key the local node requires (`mesh-llm --api-key`), read from its home; None without one."""
    try:
        return read_api_key((node_home or default_home()).expanduser())
    except ConfigError as exc:
        raise LaunchError(str(exc)) from exc


def launch(
    name: str,
    argv: Sequence[str],
    environ: Mapping[str, str],
    transport: httpx.BaseTransport | None = None,
    exec_agent: ExecAgent = _exec,
) -> int:
    agent = AGENTS[name]
    args = parse_args(agent, argv)
    api_key = environ.get(API_KEY_ENV) or node_api_key(args.node_home)
    models = fetch_models(args.port, api_key, transport)
    chosen = choose_model(models, args.model)
    target = Target(args.port, chosen, chat_models(models), api_key or DUMMY_API_KEY)
    home = Path(environ.get("HOME") or Path.home())
    path = agent.config_path(environ, home)
    existing = read_existing(path) if path is not None else None
    plan = agent.plan(target, path, existing, args.agent_args)
    env = plan.environment(environ)
    binary = shutil.which(agent.binary, path=env.get("PATH"))
    if args.dry_run:
        print_dry_run(plan, {path: existing} if path is not None else {}, environ)
        if binary is None:
            print(f"({agent.binary} is not installed: {agent.install_hint})")
        return 0
    if binary is None:
        raise AgentNotInstalled(f"{agent.binary} is not installed (not on PATH); {agent.install_hint}")
    backups = write_configs(plan, {path: existing} if path is not None else {})
    print(_summary(agent, target, backups), file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        exec_agent(binary, list(plan.argv), env)
    except OSError as exc:
        raise LaunchError(f"cannot run {binary}: {exc.strerror or exc}") from exc
    return 0


def agent_main(name: str, argv: Sequence[str]) -> int:
    """Exec the agent (never returns then); otherwise the exit code, after one line on stderr."""
    try:
        return launch(name, argv, os.environ)
    except LaunchError as exc:
        print(f"mesh-llm {name}: {exc}", file=sys.stderr)
        return exc.exit_code
