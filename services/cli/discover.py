"""`mesh-llm discover` (browse public and LAN meshes) and `--auto` (pick one to join before starting).

Both run before any node exists: they read Nostr relays and mDNS directly (services/discovery) and,
for `--auto`, hand the CLI an invite token. The choice itself is services/discovery/choice.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.cli.arguments import OneLineArgumentParser, fail
from services.discovery.choice import AutoWish, choose, nothing_found_explanation, same_name
from services.discovery.listing import MAX_NAME_CHARS, InvalidListing, Sighting, check_text
from services.discovery.nostr import DEFAULT_RELAYS, RelayUrlError, check_relay_url
from services.discovery.search import SearchScope, find_meshes
from services.node.catalog import model_name_for_path
from services.node.home import default_home
from services.node.home_files import make_home_dir, write_home_file

LAST_MESH_FILE = "last-mesh"
NO_MESH_EXIT = 1
GIB = 1 << 30


def relay_url(text: str) -> str:
    try:
        return check_relay_url(text)
    except RelayUrlError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def mesh_name(text: str) -> str:
    try:
        return check_text(text.strip(), "mesh name", MAX_NAME_CHARS, allow_empty=False)
    except InvalidListing as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_scope_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--relay",
        action="append",
        default=[],
        metavar="URL",
        type=relay_url,
        help=f"Nostr relay (repeatable; default {', '.join(DEFAULT_RELAYS)})",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--lan", action="store_true", help="local network only (mDNS), no Nostr relays")
    where.add_argument("--no-lan", action="store_true", help="Nostr relays only, no mDNS")


def scope_from_args(args: argparse.Namespace) -> SearchScope:
    if args.lan and args.relay:
        fail("mesh-llm", "--lan keeps to the local network; drop --relay or --lan")
    relays = () if args.lan else tuple(dict.fromkeys(args.relay)) or DEFAULT_RELAYS
    return SearchScope(relays=relays, lan=not args.no_lan)


def model_label(spec: str) -> str:
    path = Path(spec).expanduser()
    return model_name_for_path(path) if path.suffix == ".gguf" or path.exists() else spec


def last_mesh_id(home: Path) -> str:
    try:
        return (home / LAST_MESH_FILE).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return ""


def remember_mesh(home: Path, mesh_id: str) -> None:
    """Raises HomeWriteError when the home cannot be written."""
    make_home_dir(home)
    write_home_file(home / LAST_MESH_FILE, f"{mesh_id}\n".encode())


@dataclass(frozen=True)
class AutoDecision:
    """What `--auto` resolved to: a mesh to join (token), or a new mesh to start and publish."""

    token: str | None
    mesh_name: str
    source: str  # "nostr", "lan", or "" for a new mesh
    explanation: str
    max_clients: int = 0


def decide_auto(args: argparse.Namespace, home: Path, scope: SearchScope) -> AutoDecision:
    sightings = asyncio.run(find_meshes(scope))
    wish = AutoWish(
        models=tuple(model_label(m) for m in args.model),
        region=args.region,
        mesh_name=args.mesh_name or "",
        client=args.client,
        last_mesh_id=last_mesh_id(home),
    )
    choice = choose(sightings, wish, time.time())
    if choice is not None:
        listing = choice.sighting.listing
        return AutoDecision(
            listing.token, listing.name, choice.sighting.source, choice.explanation, listing.max_clients
        )
    return AutoDecision(
        None, wish.mesh_name, "", nothing_found_explanation(sightings, wish, scope.describe())
    )


def _filtered(sightings: list[Sighting], model: str | None, region: str | None) -> list[Sighting]:
    keep = []
    for sighting in sightings:
        listing = sighting.listing
        if model and model not in listing.models_served and model not in listing.models_wanted:
            continue
        if region and not same_name(listing.region, region):
            continue
        keep.append(sighting)
    return keep


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m"


def sighting_json(sighting: Sighting, now: float) -> dict[str, object]:
    listing = sighting.listing
    return {
        "mesh_id": listing.mesh_id,
        "name": listing.name,
        "source": sighting.source,
        "region": listing.region,
        "models_served": list(listing.models_served),
        "models_wanted": list(listing.models_wanted),
        "nodes": listing.node_count,
        "clients": listing.client_count,
        "max_clients": listing.max_clients,
        "vram_bytes": listing.vram_bytes,
        "age_s": round(sighting.age_s(now), 1),
        "software_version": listing.software_version,
        "publisher_node_id": listing.publisher_node_id,
        "token": listing.token,
    }


def print_table(sightings: list[Sighting], now: float, console: Console) -> None:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("MESH", "WHERE", "REGION", "MODELS", "NODES", "CLIENTS", "VRAM", "AGE"):
        table.add_column(column, justify="right" if column in ("NODES", "CLIENTS", "VRAM", "AGE") else "left")
    for sighting in sightings:
        listing = sighting.listing
        clients = (
            f"{listing.client_count}/{listing.max_clients}"
            if listing.max_clients
            else str(listing.client_count)
        )
        models = ", ".join(listing.models_served) or "[dim](none ready)[/]"
        table.add_row(
            listing.name or f"[dim]{listing.mesh_id[:8]}[/]",
            sighting.source,
            listing.region or "-",
            models,
            str(listing.node_count),
            clients,
            f"{listing.vram_bytes / GIB:.1f} GB",
            _age(sighting.age_s(now)),
        )
    console.print(table)


def build_discover_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog="mesh-llm discover", description="List public and LAN meshes.")
    parser.add_argument("--model", help="only meshes serving or wanting this model")
    parser.add_argument("--region", help="only meshes in this region")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--auto", action="store_true", help="say which mesh `mesh-llm --auto` would join")
    parser.add_argument("--mesh-name", type=mesh_name, help="with --auto: only a mesh of this name")
    parser.add_argument("--client", action="store_true", help="with --auto: choose as an API-only client")
    parser.add_argument("--home", type=Path, default=None, help="node home (for the last mesh joined)")
    add_scope_arguments(parser)
    return parser


def discover_main(argv: list[str]) -> int:
    args = build_discover_parser().parse_args(argv)
    scope = scope_from_args(args)
    console = Console(soft_wrap=True)
    found = asyncio.run(find_meshes(scope))
    now = time.time()
    shown = _filtered(found, args.model, args.region)
    if args.auto:
        home = (args.home or default_home()).expanduser()
        wish = AutoWish(
            models=(args.model,) if args.model else (),
            region=args.region or "",
            mesh_name=args.mesh_name or "",
            client=args.client,
            last_mesh_id=last_mesh_id(home),
        )
        choice = choose(found, wish, now)
        if choice is None:
            print(nothing_found_explanation(found, wish, scope.describe()), file=sys.stderr)
            return NO_MESH_EXIT
        print(choice.explanation, file=sys.stderr)
        print(json.dumps(sighting_json(choice.sighting, now)) if args.json else choice.sighting.listing.token)
        return 0
    if args.json:
        print(json.dumps([sighting_json(s, now) for s in shown], indent=2))
        return 0
    if not shown:
        print(f"no meshes found on {scope.describe()}", file=sys.stderr)
        return 0
    print_table(shown, now, console)
    return 0
