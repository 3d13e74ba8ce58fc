"""Which model files this node advertises: the ones it was started with, then every GGUF in its store.

The store (`--models-dir`, default the shared model cache) is where files fetched from peers land,
so it is rescanned: a file renamed into place after a verified transfer is advertised within
MODEL_STORE_RESCAN_S, and a file deleted by hand disappears. A `.part` file is never listed (it is
not a whole, verified file), so nothing half-written is ever served or shared.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from services.node.catalog import CATALOG, model_name_for_path
from services.node.config import ModelRequest
from services.node.hf_names import SPLIT_RE

MODEL_STORE_RESCAN_S = 2.0
GGUF_SUFFIX = ".gguf"


class StoreFile(NamedTuple):
    name: str
    path: str
    bytes: int
    mtime_ns: int


def name_for_store_file(path: Path) -> str:
    """The catalog's name for a catalog file (a peer serving `gemma3-270m` has it under its file
    name), else the file's stem: the same name the node that shared it uses."""
    for entry in CATALOG:
        if entry.file_name == path.name:
            return entry.name
    return model_name_for_path(path)


def scan_store(store: Path) -> list[Path]:
    """Blocking: the whole GGUFs directly in `store` (no recursion: the cache keeps other files)."""
    try:
        entries = list(os.scandir(store))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
    return sorted(
        Path(e.path) for e in entries if e.name.endswith(GGUF_SUFFIX) and e.is_file(follow_symlinks=True)
    )


def advertised_files(configured: Iterable[ModelRequest], store_paths: Iterable[Path]) -> list[StoreFile]:
    """Configured models first (their names win), then store files under names not taken yet.

    Blocking (stats files). A file that vanished between the scan and the stat is left out.
    """
    files: list[StoreFile] = []
    names: set[str] = set()
    paths: set[str] = set()
    candidates = [(m.name, Path(m.path)) for m in configured]
    candidates += [(name_for_store_file(p), p) for p in store_paths]
    for name, path in candidates:
        try:
            resolved = str(path.resolve())
            stat = path.stat()
        except OSError:
            continue
        if name in names or resolved in paths:
            continue
        names.add(name)
        paths.add(resolved)
        files.append(StoreFile(name, str(path), stat.st_size + _other_parts_bytes(path), stat.st_mtime_ns))
    return files


def _other_parts_bytes(first: Path) -> int:
    """A split GGUF is one model of all its parts: the bytes of parts 2..N beside part 1 (placement
    plans with the whole), 0 for a single file. Blocking (stats files)."""
    match = SPLIT_RE.search(first.name)
    if match is None or int(match["part"]) != 1:
        return 0
    stem, count = first.name[: match.start()], int(match["count"])
    total = 0
    for part in range(2, count + 1):
        try:
            total += first.with_name(f"{stem}-{part:05d}-of-{count:05d}.gguf").stat().st_size
        except OSError:
            continue  # a part still downloading: llama.cpp will say what is missing
    return total
