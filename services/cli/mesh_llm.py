"""`mesh-llm`: start a node (serve models, join a mesh) in the foreground with a clear status screen."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
import time
from pathlib import Path
from typing import NoReturn

import grpc
from rich.console import Console
from rich.markup import escape

from services import __version__
from services.cli.agents import AGENT_NAMES, agent_main
from services.cli.arguments import (
    ApiKeyChoiceError,
    OneLineArgumentParser,
    add_api_key_arguments,
    allowed_host,
    api_key_from_args,
    context_tokens,
    fail,
    host_port,
    ip_address,
    max_output_tokens,
    parallel_slots,
    port_number,
    positive_count,
    positive_gb,
    positive_seconds,
    speculation_mode,
    thread_count,
)
from services.cli.discover import (
    AutoDecision,
    add_scope_arguments,
    decide_auto,
    mesh_name,
    remember_mesh,
    scope_from_args,
)
from services.cli.node_process import start_supervisord, stop_supervisord, wait_for_stop_signal
from services.cli.node_status import (
    STATUS_TIMEOUT_S,
    NodeNotRunning,
    node_identity,
    node_invite,
    node_peers,
    node_plan,
    node_status,
)
from services.cli.pool_lines import PoolLines
from services.mesh.addresses import is_loopback_host, only_loopback
from services.mesh.invite import InvalidToken, InviteToken
from services.mesh.membership import load_or_create_mesh_files
from services.node.catalog import DEFAULT_MODEL, ModelDownloadFailed, ModelNotFound, resolve_model
from services.node.config import (
    API_KEY_ENV,
    DEFAULT_API_PORT,
    DEFAULT_CONSOLE_PORT,
    NodeConfig,
    save_api_key,
)
from services.node.devices import DeviceError, choose_devices, list_devices
from services.node.hf_progress import stderr_console
from services.node.home import default_home
from services.node.home_files import HomeWriteError
from services.node.log_limits import LogLimitError, log_file_limits
from services.proto.meshllm.gateway.v1 import gateway_pb2
from services.proto.meshllm.placement.v1 import placement_pb2
from services.proto.meshllm.runner.v1 import runner_pb2, runner_pb2_grpc
from services.runner.binaries import LlamaNotBuilt, find_llama_bin_dir

PROG = "mesh-llm"
DOWNLOAD_FAILED_EXIT = 1  # as `mesh-llm download`: the partial file is kept for the next try
READY_TIMEOUT_S = 600.0
READY_POLL_S = 0.25
JOIN_SETTLE_S = 5.0
PLAN_SETTLE_S = 5.0
STARTED_STATES = {"ready", "does_not_fit", "waiting", "failed", "standby", "remote"}
NO_MESH_EXIT = 1
HOME_WRITE_EXIT = 1

INSTRUCTIONS = f"""mesh-llm {__version__}: pool spare GPUs into one OpenAI-compatible API.

  mesh-llm --model {DEFAULT_MODEL}          serve a model (the embedded default needs no download)
  mesh-llm --model PATH.gguf                serve a local GGUF file
  mesh-llm --join TOKEN                     join a mesh with the invite token another node printed
  mesh-llm --client --join TOKEN            join as an API-only client (no GPU)
  mesh-llm --auto                           find and join the best public or LAN mesh
  mesh-llm --auto --mesh-name NAME --model M   everyone runs the same: the first creates NAME
  mesh-llm --model M --publish              make your mesh public (listed for `discover`/--auto)
  mesh-llm discover                         browse public and LAN meshes
  mesh-llm download                         list models you can name with --model
  mesh-llm --model ORG/REPO[:QUANT]         serve a GGUF from Hugging Face (downloaded once, resumable)
  mesh-llm models installed|show|search|delete   the models on disk, their GGUF facts, the catalog
  mesh-llm service install --model M        run the node as a service (systemd/launchd) from boot
  mesh-llm doctor                           check this machine for what breaks nodes, and how to fix it
  mesh-llm load MODEL / drop MODEL          start / stop serving a model on a running node
  mesh-llm claude|codex|opencode|pi|goose   run a coding agent on the mesh (`-- ARGS` go to the agent)

Every node serves http://localhost:{DEFAULT_API_PORT}/v1 and a console on http://localhost:{DEFAULT_CONSOLE_PORT}.
`meshctl status` shows a running node. `mesh-llm --help` lists every option."""


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description="Start a mesh-llm node in the foreground.")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME|PATH",
        help="model to serve (repeatable): a catalog name, a .gguf path, ORG/REPO[:QUANT] or hf://ORG/REPO/FILE",
    )
    parser.add_argument(
        "--join", action="append", default=[], metavar="TOKEN", help="join a mesh via invite token"
    )
    parser.add_argument("--client", action="store_true", help="API-only client (no GPU, serves nothing)")
    parser.add_argument("--auto", action="store_true", help="discover and join the best mesh (or start one)")
    parser.add_argument(
        "--publish", action="store_true", help="publish this mesh (listed for discover/--auto)"
    )
    parser.add_argument(
        "--mesh-name", type=mesh_name, metavar="NAME", help="name the mesh (implies --publish)"
    )
    parser.add_argument(
        "--max-clients",
        type=positive_count,
        metavar="N",
        help="delist the mesh while N clients are connected",
    )
    add_scope_arguments(parser)
    add_api_key_arguments(parser)
    parser.add_argument("--port", type=port_number, default=DEFAULT_API_PORT, help="API port (default 9337)")
    parser.add_argument(
        "--console", type=port_number, default=DEFAULT_CONSOLE_PORT, help="console port (default 3131)"
    )
    parser.add_argument("--bind-port", type=port_number, default=0, help="pin the mesh's UDP port (for NAT)")
    parser.add_argument(
        "--bind-ip",
        type=ip_address,
        default=None,
        metavar="ADDR",
        help="pin the mesh to one local address (default: every interface; admission guards it)",
    )
    parser.add_argument(
        "--listen-all",
        action="store_true",
        help="serve the API and console on every interface (default: 127.0.0.1 only)",
    )
    parser.add_argument(
        "--advertise",
        action="append",
        default=[],
        metavar="HOST:PORT",
        type=host_port,
        help="address peers should dial to reach this node (port forwarding, NAT)",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        type=allowed_host,
        help="also answer API/console requests for this Host (a reverse proxy's name; *.example.com)",
    )
    parser.add_argument("--max-vram", type=positive_gb, metavar="GB", help="cap the memory offered to models")
    parser.add_argument(
        "--device",
        default="",
        metavar="DEV",
        help="llama.cpp device(s) to use, as `llama-server --list-devices` names them (CUDA0, MTL0, CPU)",
    )
    parser.add_argument("--split", action="store_true", help="force a tensor split even if the model fits")
    parser.add_argument("--region", default="", help="region tag (AU, US-West, EU-West, ...)")
    parser.add_argument("--name", default="", help="this node's display name (default: hostname)")
    parser.add_argument("--home", type=Path, default=None, help="node home dir (default ~/.mesh-llm)")
    parser.add_argument("--log-format", choices=["pretty", "json"], default="pretty")
    parser.add_argument(
        "--ctx-size",
        type=context_tokens,
        default=0,
        metavar="TOKENS",
        help="context per llama-server (default 0: the model's trained context, as far as memory allows)",
    )
    parser.add_argument(
        "--parallel",
        type=parallel_slots,
        default=0,
        metavar="N",
        help="requests each llama-server decodes at once, each up to the full context "
        "(default 0: 4-16, from the context)",
    )
    parser.add_argument(
        "--max-output-tokens",
        type=max_output_tokens,
        default=0,
        metavar="N",
        help="stop a response after N tokens when its request names no cap (agents that send "
        "none); a request's own max_tokens is kept (default 0: no cap, up to the context)",
    )
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=0,
        metavar="N",
        help="llama.cpp threads for each llama-server and rpc-server (default 0: one per physical core)",
    )
    parser.add_argument(
        "--speculation",
        type=speculation_mode,
        default="auto",
        metavar="MODE",
        help="speculative decoding: auto (n-gram, plus the --draft model if given), draft (a draft "
        "model: --draft, or one the node has that pairs), ngram or off (default auto)",
    )
    drafts = parser.add_mutually_exclusive_group()
    drafts.add_argument(
        "--draft",
        metavar="PATH|NAME",
        default=None,
        help="draft model run next to each model it shares a vocabulary with (default: none; with "
        "--speculation draft, one the node has that pairs)",
    )
    drafts.add_argument("--no-draft", action="store_true", help="run no draft model")
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where this node keeps (and shares) model files; default: the shared model cache",
    )
    parser.add_argument(
        "--retire-after",
        type=positive_seconds,
        default=300.0,
        metavar="SECONDS",
        help="a replica the pool added retires after its model stays cold this long (default 300)",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


def _port_free(host: str, port: int) -> bool:
    """Nothing listens on host:port. Bound like the gateway binds (services/gateway/app.py
    bind_listener, SO_REUSEADDR): connections a stopped node closed sit in TIME-WAIT on the port for
    a minute, and only a live listener keeps the gateway from binding it."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def check_discovery_args(args: argparse.Namespace) -> None:
    if args.auto and args.join:
        fail(PROG, "--auto finds a mesh to join; drop --join or --auto")
    if args.max_clients and not (args.publish or args.mesh_name or args.lan or args.auto):
        fail(PROG, "--max-clients only applies to a listed mesh; add --publish or --mesh-name")
    if args.relay and not (args.publish or args.mesh_name or args.auto):
        fail(PROG, "--relay is where a mesh is published; add --publish, --mesh-name or --auto")


def resolve_auto(args: argparse.Namespace, console: Console) -> AutoDecision:
    """--auto: find meshes, pick one (or decide to start one), say why in one line; sets args to match."""
    home = (args.home or default_home()).expanduser().resolve()
    with console.status("looking for meshes…"):
        decision = decide_auto(args, home, scope_from_args(args))
    if decision.token is not None:
        console.print(decision.explanation, soft_wrap=True, highlight=False)
        args.join = [decision.token]
        args.mesh_name = args.mesh_name or decision.mesh_name
        args.max_clients = args.max_clients or decision.max_clients
        # A member of a public mesh can take the listing over when its publisher leaves.
        args.publish = args.publish or decision.source == "nostr"
        if decision.source == "lan" and not args.no_lan:
            # Joined from the LAN: announced there, published on no relay. --relay only said where to
            # look, so it goes too (--lan with --relay is a conflict only when the user says both).
            args.lan, args.relay = True, []
        remember_mesh(home, InviteToken.decode(decision.token).mesh_id_hex)
        return decision
    if args.client:
        console.print(f"{decision.explanation}; nothing to join as a client", soft_wrap=True, highlight=False)
        sys.exit(NO_MESH_EXIT)
    if not args.model:
        args.model = [DEFAULT_MODEL]
    kind = "LAN" if args.lan else "public"
    named = f' "{args.mesh_name}"' if args.mesh_name else ""
    console.print(
        f"{decision.explanation}; starting a new {kind} mesh{named} serving {', '.join(args.model)}",
        soft_wrap=True,
        highlight=False,
    )
    args.publish = not args.lan
    return decision


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    home = (args.home or default_home()).expanduser().resolve()
    scope = scope_from_args(args)
    publish = (args.publish or bool(args.mesh_name)) and not args.lan
    for token in args.join:
        try:
            InviteToken.decode(token)
        except InvalidToken as exc:
            fail(PROG, f"--join: {exc}")
    if args.client and args.model:
        fail(PROG, "--client serves no models; drop --model or --client")
    if args.port == args.console:
        fail(PROG, f"--port and --console are both {args.port}")
    try:
        log_file_limits(os.environ)  # every service rotates its log by these: refuse a bad one here
    except LogLimitError as exc:
        fail(PROG, str(exc))
    check_bind_ip(args.bind_ip or "", args.bind_port)
    host = "0.0.0.0" if args.listen_all else "127.0.0.1"
    for flag, port in (("--port", args.port), ("--console", args.console)):
        if not _port_free(host, port):
            fail(PROG, f"{flag} {port} is already in use (another mesh-llm?); pick another with {flag}")
    device = checked_device(args.device) if args.device and not args.client else ""
    models = []
    for spec in args.model:
        try:
            models.append(resolve_model(spec, args.models_dir.expanduser() if args.models_dir else None))
        except ModelDownloadFailed as exc:  # not a usage mistake: the download went wrong (1, not 2)
            print(f"{PROG}: {exc}", file=sys.stderr)
            sys.exit(DOWNLOAD_FAILED_EXIT)
        except ModelNotFound as exc:
            fail(PROG, str(exc))
    draft = ""
    if args.draft:
        try:
            draft = resolve_model(args.draft, args.models_dir.expanduser() if args.models_dir else None).path
        except ModelNotFound as exc:
            fail(PROG, f"--draft: {exc}")
    if args.speculation == "off" and draft:
        fail(PROG, "--speculation off runs no draft; drop --draft or --speculation off")
    if args.speculation == "draft" and args.no_draft:
        fail(PROG, "--speculation draft needs a draft model; drop --no-draft")
    return NodeConfig(
        home=home,
        name=args.name,
        api_port=args.port,
        console_port=args.console,
        listen_all=args.listen_all,
        client=args.client,
        max_vram_gb=args.max_vram,
        models=tuple(models),
        split=args.split,
        bind_port=args.bind_port,
        bind_ip=args.bind_ip or "",
        join_tokens=tuple(args.join),
        region=args.region,
        publish=publish,
        mesh_name=args.mesh_name or "",
        max_clients=args.max_clients or 0,
        relays=scope.relays if publish else (),
        lan=args.lan,
        no_lan=args.no_lan,
        advertise=tuple(args.advertise),
        allowed_hosts=tuple(args.allow_host),
        log_format=args.log_format,
        context_size=args.ctx_size,
        parallel_slots=args.parallel,
        max_output_tokens=args.max_output_tokens,
        threads=args.threads,
        device=device,
        speculation=args.speculation,
        draft=draft,
        no_draft=args.no_draft,
        models_dir=str(args.models_dir.expanduser().resolve()) if args.models_dir else "",
        retire_after_s=args.retire_after,
        require_api_key=args.api_key is not None,
        no_api_key=args.no_api_key,
    )


def wait_until_started(config: NodeConfig, console: Console, supervisor_alive) -> bool:  # type: ignore[no-untyped-def]
    """Show progress until every model has settled (ready or a stated reason); False if we gave up."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    with console.status("starting services…") as status:
        while time.monotonic() < deadline and supervisor_alive():
            try:
                current = node_status(config.node_home)
            except NodeNotRunning:
                time.sleep(READY_POLL_S)
                continue
            # Settled: each model this node was asked for is served, or its plan says why not
            # (a split waiting for peers, a model that does not fit, one served elsewhere).
            states = {m.model: m.state for m in current.models}
            pending = [m.name for m in config.models if states.get(m.name) not in STARTED_STATES]
            if not pending and current.node_id:
                return True
            status.update(f"loading {', '.join(pending) or 'models'}…{restart_note(config, pending)}")
            time.sleep(READY_POLL_S)
    return False


def failure_reasons(config: NodeConfig) -> dict[str, str]:
    """By model: why its llama-server last died, or why it failed for good (the runner's last_error:
    "killed by SIGKILL (out of memory?)", "exited with code 1: <the log line>"). Empty when the
    runner does not answer (a client runs none)."""
    if config.client:
        return {}
    with grpc.insecure_channel(config.node_home.grpc_target("runner")) as channel:
        try:
            stub = runner_pb2_grpc.RunnerStub(channel)
            current = stub.GetStatus(runner_pb2.GetStatusRequest(), timeout=STATUS_TIMEOUT_S)
        except grpc.RpcError:
            return {}
    servers = [p for p in current.processes if p.spec.kind == runner_pb2.PROCESS_KIND_LLAMA_SERVER]
    return {p.spec.model: p.last_error for p in servers if p.last_error}


def restart_note(config: NodeConfig, pending: list[str]) -> str:
    """While a model is being restarted (an OOM-kill loop never ends in "failed"): why it died."""
    reasons = failure_reasons(config) if pending else {}
    died = [f"{model}: {reasons[model]}" for model in pending if model in reasons]
    return f" (restarting {'; '.join(died)})" if died else ""


def _peers_after_join(config: NodeConfig) -> list:  # type: ignore[type-arg]
    """A joining node shows its peers: give admission a moment before printing."""
    deadline = time.monotonic() + (JOIN_SETTLE_S if config.join_tokens else 0)
    while True:
        peers = list(node_peers(config.node_home).peers)
        if peers or time.monotonic() >= deadline:
            return peers
        time.sleep(READY_POLL_S)


def _first_plan(config: NodeConfig) -> placement_pb2.Plan:
    """Placement plans once gossip has a view: a standby node says so on its ready screen."""
    deadline = time.monotonic() + PLAN_SETTLE_S
    while True:
        plan = node_plan(config.node_home)
        if plan.generation or time.monotonic() >= deadline:
            return plan
        time.sleep(READY_POLL_S)


def describe_listing(config: NodeConfig) -> str:
    places = []
    if config.publish and config.relays:
        places.append(f"{len(config.relays)} Nostr relay{'s' if len(config.relays) != 1 else ''}")
    if (config.publish or config.lan) and not config.no_lan:
        places.append("the LAN (mDNS)")
    if not places:
        return ""
    name = f'"{config.mesh_name}" ' if config.mesh_name else ""
    limit = f", delisted at {config.max_clients} clients" if config.max_clients else ""
    # A listing is only useful to others if they can dial the mesh: not when it is pinned to loopback.
    pinned_to_loopback = bool(config.bind_ip) and is_loopback_host(config.bind_ip) and not config.advertise
    local = " (reachable from this machine only: drop --bind-ip)" if pinned_to_loopback else ""
    return f"{name}on {' and '.join(places)}{limit}{local}"


def current_addresses(config: NodeConfig) -> tuple[str, ...]:
    return tuple(node_identity(config.node_home).addresses)


def checked_device(text: str) -> str:
    """--device against the devices this machine's llama.cpp build sees; a wrong name lists them."""
    try:
        devices = list_devices(find_llama_bin_dir())
        return ",".join(choose_devices(text, devices))
    except (DeviceError, LlamaNotBuilt) as exc:
        fail(PROG, str(exc))


def check_bind_ip(bind_ip: str, bind_port: int) -> None:
    """The mesh service would fail to start on an address this machine lacks: say so here, once."""
    if not bind_ip and not bind_port:
        return
    family = socket.AF_INET6 if ":" in bind_ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((bind_ip or "0.0.0.0", bind_port))
        except OSError as exc:
            what = f"--bind-ip {bind_ip}" if bind_ip else f"--bind-port {bind_port}"
            if exc.errno == errno.EADDRINUSE:
                fail(PROG, f"{what}: UDP port {bind_port} is already in use (another mesh-llm?)")
            fail(PROG, f"{what}: cannot bind ({exc.strerror}); is it an address of this machine?")


def model_facts(route: gateway_pb2.ModelRoute) -> str:
    """What a model is, for the ready screen (", chat, 8192-token context, 4 at once"); empty when not
    known."""
    facts = [route.kind] if route.kind and route.kind != "unknown" else []
    if route.context_tokens:
        facts.append(f"{route.context_tokens}-token context")
    if route.slots:
        facts.append(f"{route.slots} at once")
    return "".join(f", {fact}" for fact in facts)


def describe_api_access(config: NodeConfig) -> str:
    """Who may use the API (services/gateway/api_key.py), for the ready screen; never the key itself."""
    if config.require_api_key:
        return "required (Authorization: Bearer … or x-api-key: …)"
    if config.listen_all and config.no_api_key:
        return "none: open to the network (--no-api-key)"
    if config.listen_all:
        return "none: open to this machine only (other machines get a 401; add --api-key KEY)"
    return "none: open to this machine only"


def print_ready_screen(config: NodeConfig, console: Console) -> None:
    current = node_status(config.node_home)
    invite = node_invite(config.node_home)
    console.print(f"[bold green]mesh-llm is running[/]  node [bold]{current.node_id[:8]}[/] ({current.name})")
    console.print(f"  API      {config.api_url}")
    console.print(f"  Console  {config.console_url}")
    console.print(f"  API key  {describe_api_access(config)}", soft_wrap=True, highlight=False)
    failed = {r.model for r in current.models if r.state == "failed"}
    reasons = {m: why for m, why in failure_reasons(config).items() if m in failed} if failed else {}
    for route in current.models:
        why = f": {escape(reasons[route.model])}" if route.model in reasons else ""
        console.print(
            f"  Model    {route.model}  [dim]{route.state}{model_facts(route)}[/]{why}", soft_wrap=True
        )
    if not config.client:
        plan = _first_plan(config)
        if plan.standby:
            console.print(f"  Standby  {plan.standby_reason.removeprefix('standby: ')}", soft_wrap=True)
    # Never wrapped: the token must survive copy-paste from any terminal width.
    console.print(f"  Invite   {invite.token}", soft_wrap=True)
    own = [a for a in InviteToken.decode(invite.token).addresses if a in current_addresses(config)]
    console.print(f"  Mesh     {', '.join(own) or '(no address)'}", soft_wrap=True, highlight=False)
    if only_loopback(own):
        console.print(
            "  [yellow]warning[/]  the invite carries only loopback addresses: other machines cannot join "
            "(no network interface up, or --bind-ip pins the mesh to loopback)",
            soft_wrap=True,
        )
    peers = _peers_after_join(config)
    listed = ", ".join(f"{p.node_id[:8]} ({p.name})" for p in peers[:6])
    console.print(f"  Peers    {len(peers)} connected{': ' + listed if listed else ''}")
    listed = describe_listing(config)
    if listed:
        console.print(f"  Listed   {listed}", soft_wrap=True, highlight=False)
    console.print(f"  Logs     {config.node_home.logs}")
    console.print("[dim]Ctrl-C stops the node.[/]")


def cannot_write(exc: HomeWriteError) -> NoReturn:
    """A full, read-only or foreign node home: one line (and nothing half-written, home_files.py)."""
    print(f"{PROG}: {exc}", file=sys.stderr)
    sys.exit(HOME_WRITE_EXIT)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "download":
        from services.cli.download import download_main

        sys.exit(download_main(argv[1:]))
    if argv and argv[0] == "models":
        from services.cli.models_command import models_main

        sys.exit(models_main(argv[1:]))
    if argv and argv[0] == "doctor":
        from services.cli.doctor import doctor_main

        sys.exit(doctor_main(argv[1:]))
    if argv and argv[0] == "service":
        from services.cli.service import service_main

        sys.exit(service_main(argv[1:]))
    if argv and argv[0] == "discover":
        from services.cli.discover import discover_main

        sys.exit(discover_main(argv[1:]))
    if argv and argv[0] in AGENT_NAMES:
        sys.exit(agent_main(argv[0], argv[1:]))
    if argv and argv[0] in ("rotate-key", "load", "drop"):
        from services.cli.meshctl import main as meshctl_main

        meshctl_main(argv)
        return
    if not argv:
        print(INSTRUCTIONS)
        return
    args = build_parser().parse_args(argv)
    console = stderr_console()  # shared with download progress bars, which nest in its spinner
    check_discovery_args(args)
    try:
        args.api_key = api_key_from_args(args.api_key, args.api_key_file, args.no_api_key, os.environ)
    except ApiKeyChoiceError as exc:
        fail(PROG, str(exc))
    # From here on the key lives in <home>/api.key only: the node's processes do not inherit it.
    os.environ.pop(API_KEY_ENV, None)
    if not args.model and not args.join and not args.client and not args.auto:
        fail(
            PROG,
            "nothing to do: give --model NAME, --join TOKEN, --auto or --client (bare `mesh-llm` shows help)",
        )
    if args.client and args.model:
        fail(PROG, "--client serves no models; drop --model or --client")
    try:
        if args.auto:
            resolve_auto(args, console)
        with console.status("preparing models…"):
            config = config_from_args(args)
        config.save()
        save_api_key(config.home, args.api_key)
        # The mesh service's first files: a disk that refuses them is one line here, not a crash loop.
        load_or_create_mesh_files(config.node_home, config.join_tokens)
    except HomeWriteError as exc:
        cannot_write(exc)
    supervisor = start_supervisord(config)
    try:
        if wait_until_started(config, console, lambda: supervisor.poll() is None):
            print_ready_screen(config, console)
        elif supervisor.poll() is None:
            console.print(f"[yellow]still starting; see {config.node_home.logs}[/]")
        else:
            fail(PROG, f"the node stopped during start-up; see {config.node_home.logs}")
        news = None if config.client else PoolLines(config.node_home, console).tick
        code = wait_for_stop_signal(supervisor, news)
    finally:
        console.print("stopping…")
        stop_supervisord(supervisor)
    sys.exit(code)
