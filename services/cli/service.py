"""`mesh-llm service install|uninstall|status|logs`: run a node as a systemd user service (Linux) or a
launchd agent (macOS) that starts at boot and restarts on failure. The unit text is rendered by
service_units.py from deploy/systemd and deploy/launchd; this module writes it and runs the commands."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import services
from services.cli.arguments import ApiKeyChoiceError, OneLineArgumentParser, api_key_from_args, fail
from services.cli.service_units import (
    Platform,
    ServicePlan,
    ServiceSpec,
    absolute_paths,
    describe_commands,
    launchd_plan,
    passed_environment,
    systemd_plan,
)
from services.node.home import default_home

PROG = "mesh-llm service"
REPO_ROOT = Path(services.__file__).resolve().parent.parent
SYSTEMD_TEMPLATE = REPO_ROOT / "deploy" / "systemd" / "mesh-llm.service.in"
LAUNCHD_TEMPLATE = REPO_ROOT / "deploy" / "launchd" / "dev.mesh-llm.node.plist.in"
# systemd's marker that it is the running init (sd_booted(3)); without it `systemctl --user` has no manager.
SYSTEMD_BOOTED_MARKER = Path("/run/systemd/system")
NO_SERVICE_MANAGER_EXIT = 1
COMMAND_FAILED_EXIT = 1
COMMAND_TIMEOUT_S = 60
NODE_ACTIONS = ("--model", "--join", "--auto", "--client")
ACTIONS = ("install", "uninstall", "status", "logs")


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog=PROG, description="Run this node as a service that survives reboots.", allow_abbrev=False
    )
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument(
        "--dry-run", action="store_true", help="print the unit it would write and the commands it would run"
    )
    parser.add_argument(
        "--platform",
        choices=[p.value for p in Platform],
        default=None,
        help="render for this platform (default: this machine's; with --dry-run)",
    )
    parser.add_argument("-f", "--follow", action="store_true", help="logs: keep printing new lines")
    return parser


def this_platform() -> Platform | None:
    if sys.platform == "darwin":
        return Platform.MACOS
    if sys.platform.startswith("linux"):
        return Platform.LINUX
    return None


def missing_manager(platform: Platform) -> str:
    """Why this machine cannot run the service ("" when it can)."""
    if platform is Platform.MACOS:
        return "" if shutil.which("launchctl") else "this machine has no launchctl (launchd)"
    if not shutil.which("systemctl"):
        return "this machine has no systemd (systemctl is not installed)"
    if not SYSTEMD_BOOTED_MARKER.is_dir():
        return f"this machine does not run systemd ({SYSTEMD_BOOTED_MARKER} is missing: a container?)"
    return ""


def mesh_llm_executable() -> str:
    """The `mesh-llm` of this install, by absolute path: a service has no shell PATH or venv."""
    beside = Path(sys.executable).parent / "mesh-llm"
    if beside.is_file():
        return str(beside)
    found = shutil.which("mesh-llm")
    if not found:
        fail(PROG, "cannot find the mesh-llm executable to run (is mesh-llm installed?)")
    return str(Path(found).resolve())


def node_flags_for_service(flags: list[str]) -> tuple[list[str], Path]:
    """The node flags checked as `mesh-llm` would check them, paths made absolute, --home added."""
    from services.cli.mesh_llm import PROG as NODE_PROG
    from services.cli.mesh_llm import build_parser as node_parser
    from services.cli.mesh_llm import checked_device

    checked = node_parser().parse_args(flags)  # a bad flag: mesh-llm's one line, exit 2
    if checked.device:
        checked_device(checked.device)  # a wrong name now, not in the journal at every restart
    if not any(f.partition("=")[0] in NODE_ACTIONS for f in flags):
        fail(PROG, f"install needs what the node does: {', '.join(NODE_ACTIONS)} (as for `{NODE_PROG}`)")
    if any(f.partition("=")[0] == "--api-key" for f in flags):
        fail(PROG, "--api-key would sit in the unit file for anyone to read; use --api-key-file PATH")
    absolute = absolute_paths(flags, Path.cwd(), Path.is_file)
    parsed = node_parser().parse_args(absolute)
    try:  # an unreadable key file: now, not at every restart
        api_key_from_args(None, parsed.api_key_file, parsed.no_api_key, {})
    except ApiKeyChoiceError as exc:
        fail(PROG, str(exc))
    home = (parsed.home or default_home()).expanduser().resolve()
    if parsed.home is None:
        absolute = [*absolute, "--home", str(home)]
    return absolute, home


def plan_for(platform: Platform, spec: ServiceSpec) -> ServicePlan:
    user_home = Path.home()
    if platform is Platform.MACOS:
        return launchd_plan(LAUNCHD_TEMPLATE.read_text(), spec, user_home, os.getuid())
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or user_home / ".config")
    return systemd_plan(SYSTEMD_TEMPLATE.read_text(), spec, config_home, getpass.getuser())


def run_command(argv: tuple[str, ...], required: bool) -> None:
    """Run one install/uninstall step; a required one that fails ends here in one line."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
        ok, why = (
            result.returncode == 0,
            (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1],
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        ok, why = False, str(exc)
    if ok:
        return
    if required:
        print(f"{PROG}: `{' '.join(argv)}` failed: {why}", file=sys.stderr)
        sys.exit(COMMAND_FAILED_EXIT)
    print(f"{PROG}: warning: `{' '.join(argv)}` failed: {why}", file=sys.stderr)


def no_manager(why: str) -> NoReturn:
    print(
        f"{PROG}: {why}; run `mesh-llm …` under your own supervisor (--dry-run shows the unit)",
        file=sys.stderr,
    )
    sys.exit(NO_SERVICE_MANAGER_EXIT)


def install(platform: Platform, flags: list[str], dry_run: bool) -> int:
    node_flags, home = node_flags_for_service(flags)
    spec = ServiceSpec((mesh_llm_executable(), *node_flags), home, passed_environment(os.environ))
    plan = plan_for(platform, spec)
    if dry_run:
        print(f"# would write {plan.unit_path}:\n{plan.unit_text}")
        print(f"# would run:\n{describe_commands(plan.install)}")
        return 0
    why = missing_manager(platform)
    if why:
        no_manager(why)
    plan.unit_path.parent.mkdir(parents=True, exist_ok=True)
    spec.log_file.parent.mkdir(parents=True, exist_ok=True)
    plan.unit_path.write_text(plan.unit_text)
    for command in plan.install:
        run_command(command.argv, command.required)
    print(f"installed {plan.unit_path}; the node starts now and at every boot")
    print("see it with `mesh-llm service status` and `mesh-llm service logs`")
    return 0


def uninstall(platform: Platform, dry_run: bool) -> int:
    plan = plan_for(platform, ServiceSpec((), default_home(), {}))
    if dry_run:
        print(f"# would run:\n{describe_commands(plan.uninstall)}\n# would remove {plan.unit_path}")
        return 0
    why = missing_manager(platform)
    if why:
        no_manager(why)
    if not plan.unit_path.exists():
        print(f"{PROG}: no service installed ({plan.unit_path} does not exist)", file=sys.stderr)
        return COMMAND_FAILED_EXIT
    for command in plan.uninstall:
        run_command(command.argv, command.required)
    plan.unit_path.unlink()
    print(f"stopped the node and removed {plan.unit_path}")
    return 0


def inspect(platform: Platform, action: str, follow: bool) -> int:
    """status / logs: the service manager's own view, straight to the terminal."""
    plan = plan_for(platform, ServiceSpec((), default_home(), {}))
    why = missing_manager(platform)
    if why:
        no_manager(why)
    argv = plan.status if action == "status" else plan.follow_logs if follow else plan.logs
    try:
        return subprocess.run(argv, check=False).returncode
    except OSError as exc:
        print(f"{PROG}: `{' '.join(argv)}`: {exc.strerror}", file=sys.stderr)
        return COMMAND_FAILED_EXIT


def service_main(argv: list[str]) -> int:
    args, rest = build_parser().parse_known_args(argv)
    if rest and args.action != "install":
        fail(PROG, f"{args.action} takes no node flags: {' '.join(rest)}")
    platform = Platform(args.platform) if args.platform else this_platform()
    if platform is None:
        print(
            f"{PROG}: no service support on {sys.platform} (systemd on Linux, launchd on macOS)",
            file=sys.stderr,
        )
        return NO_SERVICE_MANAGER_EXIT
    if args.platform and args.platform != (this_platform() or platform).value and not args.dry_run:
        fail(PROG, f"--platform {args.platform} is not this machine: only with --dry-run")
    if args.action == "install":
        return install(platform, rest, args.dry_run)
    if args.action == "uninstall":
        return uninstall(platform, args.dry_run)
    return inspect(platform, args.action, args.follow)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(service_main(sys.argv[1:]))
