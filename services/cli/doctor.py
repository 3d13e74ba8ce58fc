"""`mesh-llm doctor [--json]`: probe this machine for what breaks nodes in practice and print one
screen of verdicts with fixes (the verdicts are doctor_checks.py's; the probes are here)."""

from __future__ import annotations

import json
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from services.cli.arguments import OneLineArgumentParser, port_number, positive_gb
from services.cli.doctor_checks import (
    Check,
    Verdict,
    check_accelerators,
    check_clock_skew,
    check_llama_build,
    check_memory,
    check_model_cache,
    check_open_files,
    check_port,
    check_udp_loopback,
    exit_code,
)
from services.cli.node_status import NodeNotRunning, mesh_view, node_status
from services.mesh.addresses import interface_hosts
from services.node.config import DEFAULT_API_PORT, DEFAULT_CONSOLE_PORT, ConfigError, NodeConfig
from services.node.devices import DeviceError, LlamaDevice, choose_devices, list_devices
from services.node.hardware import device_vram_bytes, effective_vram_bytes
from services.node.home import default_home
from services.runner.binaries import LlamaNotBuilt, find_llama_bin_dir

PROG = "mesh-llm doctor"
NVIDIA_SMI_TIMEOUT_S = 5
UDP_ECHO_TIMEOUT_S = 1.0
UDP_PROBE = b"mesh-llm doctor"
_MARK = {Verdict.OK: "[green]ok  [/]", Verdict.WARN: "[yellow]warn[/]", Verdict.FAIL: "[red]FAIL[/]"}


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog=PROG, description="Check this machine for what breaks mesh-llm nodes."
    )
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument("--home", type=Path, default=None, help="node home dir (default ~/.mesh-llm)")
    parser.add_argument("--port", type=port_number, default=None, help="API port to check (default 9337)")
    parser.add_argument("--console", type=port_number, default=None, help="console port (default 3131)")
    parser.add_argument("--bind-port", type=port_number, default=None, help="the mesh's UDP port, if pinned")
    parser.add_argument("--device", default=None, metavar="DEV", help="llama.cpp device(s), as for mesh-llm")
    parser.add_argument("--max-vram", type=positive_gb, default=None, metavar="GB")
    parser.add_argument("--models-dir", type=Path, default=None, metavar="DIR")
    return parser


@dataclass(frozen=True)
class Target:
    """What to check: the flags given, else the node's node.toml in --home, else the defaults."""

    config: NodeConfig
    running: bool


def target_from_args(args) -> Target:  # type: ignore[no-untyped-def]
    home = (args.home or default_home()).expanduser().resolve()
    try:
        saved = NodeConfig.load(home)
    except ConfigError:
        saved = NodeConfig(home=home)
    try:
        node_status(saved.node_home)
        running = True
    except NodeNotRunning:
        running = False
    config = NodeConfig(
        home=home,
        api_port=args.port or saved.api_port or DEFAULT_API_PORT,
        console_port=args.console or saved.console_port or DEFAULT_CONSOLE_PORT,
        listen_all=saved.listen_all,
        bind_port=saved.bind_port if args.bind_port is None else args.bind_port,
        bind_ip=saved.bind_ip,
        device=saved.device if args.device is None else args.device,
        max_vram_gb=saved.max_vram_gb if args.max_vram is None else args.max_vram,
        models_dir=str(args.models_dir.expanduser().resolve()) if args.models_dir else saved.models_dir,
        llama_bin_dir=saved.llama_bin_dir,
    )
    return Target(config, running)


def nvidia_gpu_count() -> int:
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def llama_checks(config: NodeConfig) -> list[Check]:
    try:
        bin_dir = find_llama_bin_dir(config.llama_bin_dir)
    except LlamaNotBuilt as exc:
        return [check_llama_build("", str(exc)), check_accelerators(None, "no llama.cpp build", 0, "")]
    devices: tuple[LlamaDevice, ...] | None = None
    error = device_error = ""
    try:
        devices = list_devices(bin_dir)
        if config.device:
            choose_devices(config.device, devices)
    except DeviceError as exc:
        error = device_error = str(exc)
    accelerators = check_accelerators(devices, error, nvidia_gpu_count(), config.device, device_error)
    return [check_llama_build(str(bin_dir), ""), accelerators]


def memory_check(config: NodeConfig) -> Check:
    source = f"--device {config.device}" if config.device else "detected"
    offered = effective_vram_bytes(device_vram_bytes(config.device, config.llama_bin_dir), config.max_vram_gb)
    return check_memory(offered, config.max_vram_gb, source)


def tcp_port_free(host: str, port: int) -> bool:
    from services.cli.mesh_llm import _port_free  # the probe the node's start uses

    return _port_free(host, port)


def udp_socket(host: str, port: int) -> socket.socket | None:
    """Bound like the mesh binds its UDP socket (mesh_llm.check_bind_ip); None when it cannot."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((host, port))
    except OSError:
        probe.close()
        return None
    return probe


def udp_reachability(listener: socket.socket, hosts: list[str]) -> tuple[list[str], list[str]]:
    """Send a datagram to our own port at each of `hosts`: (reached, missed)."""
    port = listener.getsockname()[1]
    listener.settimeout(UDP_ECHO_TIMEOUT_S)
    reached: list[str] = []
    missed: list[str] = []
    for host in hosts:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            try:
                sender.sendto(UDP_PROBE, (host, port))
                got = listener.recv(len(UDP_PROBE))
            except OSError:
                got = b""
        (reached if got == UDP_PROBE else missed).append(f"{host}:{port}")
    return reached, missed


def network_checks(target: Target) -> list[Check]:
    config, running = target.config, target.running
    checks = [
        check_port(
            "API", config.api_port, tcp_port_free(config.bind_host, config.api_port), running, "--port"
        ),
        check_port(
            "console",
            config.console_port,
            tcp_port_free(config.bind_host, config.console_port),
            running,
            "--console",
        ),
    ]
    listener = udp_socket(config.bind_ip or "0.0.0.0", config.bind_port)
    try:
        if config.bind_port:
            checks.append(
                check_port("mesh UDP", config.bind_port, listener is not None, running, "--bind-port")
            )
        if listener is None:
            checks.append(check_udp_loopback(config.bind_port, [], [], running))
        else:
            # Pinned (--bind-ip): that address is the only one peers get; else every interface's.
            hosts = [config.bind_ip] if config.bind_ip not in ("", "0.0.0.0") else interface_hosts()
            reached, missed = udp_reachability(listener, hosts)
            checks.append(check_udp_loopback(listener.getsockname()[1], reached, missed, False))
    finally:
        if listener is not None:
            listener.close()
    return checks


def model_cache_check(config: NodeConfig) -> Check:
    path = config.model_store
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
        free = shutil.disk_usage(path).free
    except OSError as exc:
        return check_model_cache(str(path), False, 0, exc.strerror or str(exc))
    return check_model_cache(str(path), True, free, "")


def clock_check(target: Target) -> Check:
    if not target.running:
        return check_clock_skew(False, {})
    try:
        view = mesh_view(target.config.node_home)
    except NodeNotRunning:
        return check_clock_skew(False, {})
    now = time.time()
    peers = [n for n in view.nodes if n.node_id != view.local_node_id]
    return check_clock_skew(True, {(n.name or n.node_id[:8]): n.updated_unix_s - now for n in peers})


def open_files_check() -> Check:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = 1 << 31
    return check_open_files(
        unlimited if soft == resource.RLIM_INFINITY else soft,
        unlimited if hard == resource.RLIM_INFINITY else hard,
    )


def run_checks(target: Target) -> list[Check]:
    return [
        *llama_checks(target.config),
        memory_check(target.config),
        *network_checks(target),
        model_cache_check(target.config),
        clock_check(target),
        open_files_check(),
    ]


def print_screen(checks: list[Check], target: Target) -> None:
    console = Console(highlight=False, soft_wrap=True)
    state = "a node is running there" if target.running else "no node running there"
    console.print(f"[bold]mesh-llm doctor[/]  home {escape(str(target.config.home))} ({state})")
    width = max(len(c.name) for c in checks)
    for check in checks:
        mark = _MARK.get(check.verdict, "[dim]skip[/]")
        console.print(f"  {mark}  {check.name.ljust(width)}  {escape(check.detail)}")
        if check.fix and check.verdict in (Verdict.WARN, Verdict.FAIL):
            console.print(f"        {' ' * width}  [bold]fix:[/] {escape(check.fix)}")
    failed = sum(c.verdict is Verdict.FAIL for c in checks)
    console.print("[green]nothing wrong found[/]" if not failed else f"[red]{failed} problem(s) found[/]")


def doctor_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    target = target_from_args(args)
    checks = run_checks(target)
    if args.json:
        print(json.dumps({"ok": exit_code(checks) == 0, "checks": [c.to_json() for c in checks]}, indent=2))
    else:
        print_screen(checks, target)
    return exit_code(checks)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(doctor_main(sys.argv[1:]))
