"""`meshctl`: administer a running node over its local gRPC sockets."""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.cli.arguments import OneLineArgumentParser
from services.cli.node_status import (
    NodeNotRunning,
    PoolChangeRefused,
    mesh_view,
    node_invite,
    node_peers,
    node_plan,
    node_status,
    node_tunnels,
    pool_drop,
    pool_load,
    rotate_secret,
)
from services.node.home import SERVICES, NodeHome, default_home
from services.placement.plan import format_gb
from services.proto.meshllm.gossip.v1 import gossip_pb2
from services.proto.meshllm.mesh.v1 import mesh_pb2
from services.proto.meshllm.placement.v1 import placement_pb2

PROG = "meshctl"
NODE_DOWN_EXIT = 1
REFUSED_EXIT = 1
EVENTS_SHOWN = 10
LOG_TAIL_LINES = 40


def show_status(home: NodeHome, console: Console) -> None:
    status = node_status(home)
    console.print(f"node [bold]{status.node_id[:8]}[/] ({status.name})  version {status.version}")
    console.print(f"API {status.api_url}   console {status.console_url}")
    console.print(f"requests: {status.requests_total} total, {status.requests_in_flight} in flight")
    with contextlib.suppress(NodeNotRunning):  # a client runs no placement service
        plan = node_plan(home)
        if plan.standby:
            console.print(plan.standby_reason, soft_wrap=True)
    services = Table("service", "state", "detail", title="services")
    for service in status.services:
        state = "[green]up[/]" if service.reachable else "[red]down[/]"
        services.add_row(service.name, state, service.detail)
    console.print(services)
    show_models(home, console, status)


def show_models(home: NodeHome, console: Console, status=None) -> None:  # type: ignore[no-untyped-def]
    status = status or node_status(home)
    models = Table("model", "state", "kind", "context", "slots", "where", "endpoint", title="models")
    for route in status.models:
        where = "this node" if route.local else ", ".join(n[:8] for n in route.node_ids)
        kind = route.kind if route.kind != "unknown" else ""
        context = f"{route.context_tokens}" if route.context_tokens else ""
        slots = f"{route.slots}" if route.slots else ""
        models.add_row(route.model, route.state, kind, context, slots, where, route.endpoint)
    if not status.models:
        models.add_row("(none)", "", "", "", "", "", "")
    console.print(models)


def _role_of(record: gossip_pb2.NodeRecord) -> str:
    if record.is_client:
        return "client"
    roles = {gossip_pb2.ModelRole.Name(s.role).removeprefix("MODEL_ROLE_").lower() for s in record.served}
    return ",".join(sorted(roles)) or "standby"


def show_peers(home: NodeHome, console: Console) -> None:
    peers = node_peers(home).peers
    view = mesh_view(home)
    records = {r.node_id: r for r in view.nodes}
    table = Table("id", "name", "address", "rtt", "vram", "models", "role", "path", title="peers")
    for peer in peers:
        record = records.get(peer.node_id, gossip_pb2.NodeRecord())
        path = (
            "relayed via " + peer.relay_node_id[:8] if peer.path == mesh_pb2.PEER_PATH_RELAYED else "direct"
        )
        models = ", ".join(s.name for s in record.served) or ", ".join(record.models_wanted)
        table.add_row(
            peer.node_id[:8],
            peer.name,
            peer.address,
            f"{peer.rtt_ms:.1f} ms",
            f"{record.vram_bytes / 1e9:.1f} GB",
            models,
            _role_of(record),
            path,
        )
    linked = {peer.node_id for peer in peers}
    # Known from others' gossip, but the mesh reaches it neither directly nor through a relay.
    for record in view.nodes:
        if record.node_id in linked or record.node_id == view.local_node_id or record.leaving:
            continue
        models = ", ".join(s.name for s in record.served) or ", ".join(record.models_wanted)
        address = record.addresses[0] if record.addresses else ""
        table.add_row(
            record.node_id[:8], record.name, address, "", f"{record.vram_bytes / 1e9:.1f} GB", models,
            _role_of(record), "[yellow]unreachable from here[/]",
        )  # fmt: skip
    if not peers and len(view.nodes) <= 1:
        table.add_row("(no peers)", "", "", "", "", "", "", "")
    console.print(table)


def show_plan(home: NodeHome, console: Console) -> None:
    plan = node_plan(home)
    console.print(
        f"plan generation {plan.generation} for node {plan.node_id[:8]}, budget {format_gb(plan.vram_bytes)}"
    )
    if plan.standby:
        console.print(f"[bold]{plan.standby_reason}[/]", soft_wrap=True)
    slots = local_slots(home, plan.node_id)
    in_use = local_speculation(home, plan.node_id)
    table = Table("model", "role", "size", "slots", "speculation", "why", title="placement")
    for assignment in plan.assignments:
        role = placement_pb2.AssignmentRole.Name(assignment.role).removeprefix("ASSIGNMENT_ROLE_").lower()
        model_slots = f"{slots[assignment.model]}" if slots.get(assignment.model) else ""
        table.add_row(
            assignment.model,
            role,
            format_gb(assignment.model_bytes),
            model_slots,
            # In use (gossip) once its server runs, else what the plan asks for (and the draft paired).
            in_use.get(assignment.model) or assignment.speculation,
            "\n".join(assignment.reasons),
        )
    console.print(table)
    for assignment in plan.assignments:
        if assignment.shares:
            console.print(split_table(assignment, plan.node_id))
    if plan.pool:
        console.print(pool_table(plan))
    if plan.events:
        console.print(events_table(plan))


def local_slots(home: NodeHome, node_id: str) -> dict[str, int]:
    """By model, the slots this node's server of it runs with, as it gossips them (empty: unknown)."""
    with contextlib.suppress(NodeNotRunning):
        for record in mesh_view(home).nodes:
            if record.node_id == node_id:
                return {served.name: served.slots for served in record.served if served.slots}
    return {}


def local_speculation(home: NodeHome, node_id: str) -> dict[str, str]:
    """By model, the speculation this node's server of it runs with ("ngram", "draft NAME+ngram")."""
    with contextlib.suppress(NodeNotRunning):
        for record in mesh_view(home).nodes:
            if record.node_id == node_id:
                return {served.name: served.speculation for served in record.served if served.speculation}
    return {}


def pool_table(plan: placement_pb2.Plan) -> Table:
    """Per model mesh-wide: who serves it, who could take it up, demand per server, and why."""
    table = Table("model", "servers", "candidates", "req/min", "per server", "why", title="pool")
    for pool in plan.pool:
        table.add_row(
            pool.model,
            ", ".join(s[:8] for s in pool.server_node_ids) or "[red]none[/]",
            ", ".join(c[:8] for c in pool.candidate_node_ids) or "-",
            f"{pool.requests_per_min:.1f}",
            f"{pool.requests_per_min_per_server:.1f}",
            "\n".join(pool.reasons),
        )
    return table


def events_table(plan: placement_pb2.Plan, now_s: float | None = None) -> Table:
    now_s = time.time() if now_s is None else now_s
    table = Table("when", "model", "what", "why", title="promotions and retirements on this node")
    for event in plan.events[-EVENTS_SHOWN:]:
        table.add_row(f"{max(now_s - event.at_unix_s, 0):.0f} s ago", event.model, event.kind, event.reason)
    return table


def load_model(home: NodeHome, model: str, console: Console) -> None:
    try:
        change = pool_load(home, model)
    except PoolChangeRefused as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        sys.exit(REFUSED_EXIT)
    console.print(change.message)


def drop_model(home: NodeHome, model: str, force: bool, console: Console) -> None:
    try:
        change = pool_drop(home, model, force)
    except PoolChangeRefused as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        sys.exit(REFUSED_EXIT)
    console.print(change.message)


def split_table(assignment: placement_pb2.Assignment, local_id: str) -> Table:
    """Who holds which part of a split model: host first, then the workers in --rpc order."""
    table = Table("node", "part", "share", "weights", title=f"split of {assignment.model}")
    for share in assignment.shares:
        part = "host" if share.node_id == assignment.host_node_id else "worker"
        name = share.node_id[:8] + (" (this node)" if share.node_id == local_id else "")
        table.add_row(name, part, f"{share.fraction:.2f}", format_gb(share.bytes))
    return table


def show_tunnels(home: NodeHome, console: Console) -> None:
    """The split's RPC traffic: what crossed the network, and the weights that did not."""
    table = Table(
        "peer",
        "model",
        "this node",
        "connections",
        "sent",
        "received",
        "weights by reference",
        "weights sent",
        title="RPC tunnels (split inference)",
    )
    for t in node_tunnels(home).tunnels:
        path = f"{t.connections} ({t.fast_path_connections} TLS"
        if t.connections_answered_here:  # llama-server's static queries, answered without the worker
            path += f", {t.connections_answered_here} answered here"
        path += ")"
        side = "host" if t.host_side else "worker"
        table.add_row(
            t.peer_node_id[:8],
            t.model,
            side,
            path,
            format_gb(t.bytes_to_peer),
            format_gb(t.bytes_from_peer),
            format_gb(t.weight_bytes_by_reference),
            format_gb(t.weight_bytes_raw),
        )
    if not table.rows:
        table.add_row("(no split tunnels)", "", "", "", "", "", "", "")
    console.print(table)


def show_logs(home: NodeHome, service: str, follow: bool) -> None:
    path = home.logs / f"{service}.log"
    if not path.exists():
        print(f"{PROG}: no log at {path}", file=sys.stderr)
        sys.exit(NODE_DOWN_EXIT)
    subprocess.run(["tail", "-n", str(LOG_TAIL_LINES), *(["-F"] if follow else []), str(path)], check=False)


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description="Administer a running mesh-llm node.")
    parser.add_argument("--home", type=Path, default=None, help="node home dir (default ~/.mesh-llm)")
    # `--home` also after the command (`mesh-llm rotate-key --home X` passes its argv on as is);
    # SUPPRESS keeps a subcommand that lacks it from resetting the one given before the command.
    after = OneLineArgumentParser(add_help=False)
    after.add_argument("--home", type=Path, default=argparse.SUPPRESS, help="node home dir")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)
    for name, summary in (
        ("status", "services, models and processes of this node"),
        ("peers", "nodes this node is connected to"),
        ("models", "models this node can route to"),
        ("plan", "this node's placement and why"),
        ("tunnels", "split-inference RPC traffic to and from peers"),
        ("invite", "print the invite token"),
        ("rotate-key", "new mesh secret; old invite tokens stop admitting"),
    ):
        commands.add_parser(name, help=summary, parents=[after])
    load = commands.add_parser("load", help="start serving a model on this node", parents=[after])
    load.add_argument("model", help="a model some node in the mesh has, or a catalog name")
    drop = commands.add_parser("drop", help="stop serving a model on this node", parents=[after])
    drop.add_argument("model")
    drop.add_argument("--force", action="store_true", help="drop it even if this is its last server")
    logs = commands.add_parser("logs", help="show a service's log", parents=[after])
    logs.add_argument("service", choices=[*SERVICES, "supervisord"])
    logs.add_argument("-f", "--follow", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    home = NodeHome((args.home or default_home()).expanduser().resolve())
    console = Console()
    try:
        if args.command == "status":
            show_status(home, console)
        elif args.command == "peers":
            show_peers(home, console)
        elif args.command == "models":
            show_models(home, console)
        elif args.command == "plan":
            show_plan(home, console)
        elif args.command == "tunnels":
            show_tunnels(home, console)
        elif args.command == "invite":
            print(node_invite(home).token)
        elif args.command == "rotate-key":
            invite = rotate_secret(home)
            console.print("new mesh secret issued; old invite tokens no longer admit new nodes")
            print(invite.token)
        elif args.command == "load":
            load_model(home, args.model, console)
        elif args.command == "drop":
            drop_model(home, args.model, args.force, console)
        elif args.command == "logs":
            show_logs(home, args.service, args.follow)
    except NodeNotRunning as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        sys.exit(NODE_DOWN_EXIT)
