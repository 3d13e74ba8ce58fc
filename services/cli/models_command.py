"""`mesh-llm models installed|show|search|delete`: the models on this machine, and the catalog.

`installed` lists the model store (the files nodes advertise): name, size, sha256 (the hash cache
gossip shares, so a file is read once) and which nodes of the mesh hold the identical file, from
the running node's gossip view when one is up. `show` prints a GGUF's header facts, `search` the
catalog and the Hub, `delete` removes a file (and its HF cache blob), refusing while the node here
serves it unless --force.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.cli.arguments import OneLineArgumentParser
from services.cli.node_status import NodeNotRunning, mesh_view, node_status
from services.gossip.model_store import scan_store
from services.node.catalog import CATALOG, find_entry, model_name_for_path, name_for_file
from services.node.hf_names import SPLIT_RE, quant_of
from services.node.home import NodeHome, default_home, model_cache_dir
from services.runner.gguf_meta import GgufFormatError, parse_header_scalars, read_model_traits

PROG = "mesh-llm models"
EXIT_FAILED = 1
HUB_SEARCH_LIMIT = 20
SHA256_HEX_LEN = 64
# llama.h's enum llama_ftype: what `general.file_type` says the weights mostly are.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M",
    18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S",
    25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M",
    32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE",
}  # fmt: skip


class ModelsCommandError(Exception):
    """One line for the user, exit 1."""


@dataclass
class InstalledModel:
    name: str
    path: str
    bytes: int
    sha256: str
    parts: int
    source: str  # "hf:ORG/REPO", "catalog" (packaged), "file"
    nodes: list[str] = field(default_factory=list)  # other nodes with the identical file


def _store(args_dir: Path | None) -> Path:
    return args_dir.expanduser().resolve() if args_dir else model_cache_dir()


def _parts_of(first: Path) -> list[Path]:
    """Part 1 and its siblings for a split GGUF; the file itself otherwise."""
    match = SPLIT_RE.search(first.name)
    if match is None:
        return [first]
    count = int(match["count"])
    stem = first.name[: match.start()]
    return [first.with_name(f"{stem}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def _source(path: Path) -> str:
    target = str(path.resolve())
    marker = "/models--"
    if path.is_symlink() and marker in target:
        repo = target.split(marker, 1)[1].split("/", 1)[0]
        return "hf:" + repo.replace("--", "/", 1)
    entry = find_entry(name_for_file(path))
    return "catalog" if entry is not None and entry.packaged is not None else "file"


def _hub_cache_ggufs() -> list[Path]:
    """Blocking: model GGUFs in the HF cache (snapshot paths), fetched by us or by any HF tool."""
    from services.node.hf_download import hub_cache_dir

    return sorted(p for p in hub_cache_dir().glob("models--*/snapshots/*/**/*.gguf") if p.is_file())


def _sha256_for(path: Path) -> str:
    """An HF cache blob is named by its sha256 (the Hub's LFS etag, checked when it was fetched);
    anything else is hashed once and cached in the hash cache gossip shares."""
    from services.gossip.model_hashes import content_hash

    blob = path.resolve()
    if blob.parent.name == "blobs" and len(blob.name) == SHA256_HEX_LEN:
        return blob.name
    return content_hash(path)


def installed_models(store: Path) -> list[InstalledModel]:
    """Blocking: the store's models, then HF-cache GGUFs not linked into it (`hf download` ones)."""
    found: list[InstalledModel] = []
    seen: set[Path] = set()
    for path, in_store in [(p, True) for p in scan_store(store)] + [(p, False) for p in _hub_cache_ggufs()]:
        match = SPLIT_RE.search(path.name)
        if (match is not None and int(match["part"]) != 1) or path.resolve() in seen:
            continue  # a later part is listed with part 1; a cache file once, under its store link
        seen.add(path.resolve())
        parts = [p for p in _parts_of(path) if p.exists()]
        size = sum(p.stat().st_size for p in parts)
        source = _source(path) if in_store else _source_in_cache(path)
        found.append(
            InstalledModel(name_for_file(path), str(path), size, _sha256_for(path), len(parts), source)
        )
    return found


def _source_in_cache(snapshot_path: Path) -> str:
    repo = str(snapshot_path).split("/models--", 1)[1].split("/", 1)[0].replace("--", "/", 1)
    return f"hf:{repo} (HF cache only; --model {repo} links it)"


def _add_mesh_copies(models: list[InstalledModel], home: NodeHome) -> bool:
    """Fill `nodes` from the running node's gossip view; False when no node is running."""
    try:
        view = mesh_view(home)
    except NodeNotRunning:
        return False
    for node in view.nodes:
        if node.node_id == view.local_node_id:
            continue
        label = f"{node.node_id[:8]} ({node.name})" if node.name else node.node_id[:8]
        hashes = {f.sha256 for f in node.models_on_disk}
        for model in models:
            if model.sha256 in hashes:
                model.nodes.append(label)
    return True


def cmd_installed(args: argparse.Namespace, console: Console) -> int:
    models = installed_models(_store(args.models_dir))
    in_mesh = _add_mesh_copies(models, NodeHome(args.home or default_home()))
    if args.json:
        print(json.dumps({"models": [asdict(m) for m in models], "mesh_view": in_mesh}, indent=2))
        return 0
    table = Table("name", "size", "sha256", "source", "also on", title=f"models in {_store(args.models_dir)}")
    if not in_mesh:
        table.caption = "no node running: other nodes' copies unknown"
    for m in models:
        size = f"{m.bytes / 1e9:.2f} GB" + (f" ({m.parts} parts)" if m.parts > 1 else "")
        table.add_row(m.name, size, m.sha256[:16], m.source, ", ".join(m.nodes) or "-")
    if not models:
        table.add_row("(none)", "", "", "", "")
    console.print(table)
    return 0


def _local_file(spec: str, store: Path) -> Path:
    """A model on disk by path, catalog name or store name; never downloads."""
    candidate = Path(spec).expanduser()
    if candidate.is_file():
        return candidate
    entry = find_entry(spec)
    if entry is not None and (store / entry.file_name).exists():
        return store / entry.file_name
    for path in [*scan_store(store), *_hub_cache_ggufs()]:
        if spec in (name_for_file(path), model_name_for_path(path), path.name):
            return path
    raise ModelsCommandError(f"{spec!r} is not on disk in {store} (`{PROG} installed` lists what is)")


def model_facts(path: Path) -> dict[str, object]:
    """Blocking (maps the header pages): what `show` prints."""
    try:
        traits = read_model_traits(path)
        with path.open("rb") as handle:
            scalars = parse_header_scalars(handle.read(1 << 20))
    except (OSError, GgufFormatError, ValueError) as exc:
        raise ModelsCommandError(f"{path}: not a GGUF model we can read ({exc})") from exc
    file_type = scalars.get("general.file_type")
    quant = FILE_TYPES.get(file_type, "") if isinstance(file_type, int) else ""
    parts = [p for p in _parts_of(path) if p.exists()]
    return {
        "name": name_for_file(path),
        "path": str(path),
        "bytes": sum(p.stat().st_size for p in parts),
        "parts": len(parts),
        "architecture": traits.architecture,
        "kind": traits.kind.value,
        "layers": traits.layer_count,
        "context_tokens": traits.trained_context_tokens,
        "quant": quant or quant_of(path.name),
        "chat_template": traits.has_chat_template,
        "general_name": str(scalars.get("general.name", "")),
    }


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    facts = model_facts(_local_file(args.model, _store(args.models_dir)))
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        shown = "yes" if value is True else "no" if value is False else value
        console.print(f"{key:<{width}}  {shown}", highlight=False, soft_wrap=True)
    return 0


def _hub_search(query: str) -> tuple[list[str], str]:
    """Repo ids of GGUF models on the Hub matching `query`, and why none when it cannot be asked."""
    from huggingface_hub import HfApi, constants

    if constants.is_offline_mode():
        return [], "offline mode (HF_HUB_OFFLINE): catalog only"
    try:
        found = HfApi().list_models(search=query, filter="gguf", limit=HUB_SEARCH_LIMIT)
        return [m.id for m in found], ""
    except Exception as exc:  # any failure of an optional extra: say it, list the catalog anyway
        return [], f"the Hub ({constants.ENDPOINT}) could not be searched: {str(exc).splitlines()[0]}"


def cmd_search(args: argparse.Namespace, console: Console) -> int:
    query = args.query.lower()
    entries = [
        e for e in CATALOG if query in f"{e.name} {e.hub} {e.description} {' '.join(e.aliases)}".lower()
    ]
    hub, why = _hub_search(args.query)
    if args.json:
        catalog = [{"name": e.name, "bytes": e.bytes, "hub": e.hub, "draft": e.draft} for e in entries]
        print(json.dumps({"catalog": catalog, "hub": hub, "hub_note": why}, indent=2))
        return 0
    table = Table("name", "size", "source", "draft", title=f"catalog matches for {args.query!r}")
    for e in entries:
        table.add_row(e.name, f"{e.bytes / 1e9:.2f} GB", e.hub or "PyPI (embedded)", e.draft)
    console.print(table)
    if hub:
        hub_table = Table("repo (mesh-llm --model REPO[:QUANT])", title="on the Hub")
        for repo in hub:
            hub_table.add_row(repo)
        console.print(hub_table)
    elif why:
        console.print(f"[dim]{why}[/]", soft_wrap=True)
    return 0


def _served_here(home: NodeHome, name: str) -> bool:
    with contextlib.suppress(NodeNotRunning):
        return any(r.local and r.model == name for r in node_status(home).models)
    return False


def _remove_with_cache(path: Path) -> int:
    """Removes a store entry; a link into the HF cache takes its snapshot pointer and blob along."""
    freed = 0
    if path.is_symlink():
        pointer = Path(path.parent, path.readlink()) if not path.readlink().is_absolute() else path.readlink()
        blob = path.resolve()
        if blob.exists() and "/models--" in str(blob):
            freed = blob.stat().st_size
            blob.unlink()
            pointer.unlink(missing_ok=True)
    else:
        freed = path.stat().st_size
    path.unlink()
    return freed


def cmd_delete(args: argparse.Namespace, console: Console) -> int:
    store = _store(args.models_dir)
    path = _local_file(args.model, store)
    name = name_for_file(path)
    home = NodeHome(args.home or default_home())
    if not args.force and _served_here(home, name):
        raise ModelsCommandError(
            f"{name} is being served by the node at {home.root}: `mesh-llm drop {name}` first, or --force"
        )
    freed = sum(_remove_with_cache(p) for p in _parts_of(path) if p.exists() or p.is_symlink())
    console.print(f"deleted {name} ({freed / 1e9:.2f} GB freed)", highlight=False)
    return 0


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description="Models on disk, their GGUF facts, the catalog.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)
    common = OneLineArgumentParser(add_help=False)
    common.add_argument("--models-dir", type=Path, help="the model store (default: the model cache)")
    common.add_argument("--home", type=Path, help="the node's home, to ask it (default: ~/.mesh-llm)")
    common.add_argument("--json", action="store_true", help="print JSON")
    sub.add_parser("installed", parents=[common], help="models on disk, and who in the mesh has them")
    show = sub.add_parser("show", parents=[common], help="a model's GGUF facts")
    show.add_argument("model", help="a path, catalog name or installed name")
    search = sub.add_parser("search", parents=[common], help="search the catalog and the Hub")
    search.add_argument("query")
    delete = sub.add_parser("delete", parents=[common], help="remove a model file")
    delete.add_argument("model", help="a path, catalog name or installed name")
    delete.add_argument("--force", action="store_true", help="even while the node here serves it")
    return parser


COMMANDS = {"installed": cmd_installed, "show": cmd_show, "search": cmd_search, "delete": cmd_delete}


def models_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv or ["installed"])
    try:
        return COMMANDS[args.command](args, Console())
    except ModelsCommandError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED
