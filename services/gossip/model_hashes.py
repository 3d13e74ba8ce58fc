"""Content hashes of model files, computed once per file (path, size, mtime) and cached on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

from services.node.catalog import sha256_of_file
from services.node.home import model_cache_dir

HASH_CACHE_FILE = "hashes.json"


def _cache_path() -> Path:
    return model_cache_dir() / HASH_CACHE_FILE


def _load() -> dict[str, str]:
    try:
        data = json.loads(_cache_path().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def content_hash(path: Path) -> str:
    """Blocking (reads the whole file the first time): call from a thread."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache = _load()
    if key in cache:
        return cache[key]
    digest = sha256_of_file(path)
    cache = _load()
    cache[key] = digest
    target = _cache_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=0))
    tmp.replace(target)
    return digest
