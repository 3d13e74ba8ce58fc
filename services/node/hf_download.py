"""Fetch a Hugging Face GGUF into the standard HF cache and link it into the mesh-llm model store.

`huggingface_hub` does the Hub's side: the endpoint (`HF_ENDPOINT`), the token (`HF_TOKEN` or
`hf auth login`), offline mode (`HF_HUB_OFFLINE`), the file list with LFS sha256s, the resolve
URL and its headers (etag, commit), the HTTP transfer with its in-run retries (progress drawn by
hf_progress.py), and the cache layout
(`~/.cache/huggingface/hub/models--ORG--REPO/{blobs,snapshots,refs}`), so a file `hf download`
fetched is found here and the other way round. One thing we do ourselves: `hf_hub_download` drops
its partial file when a transfer fails, and a 40 GB model must not restart from zero after a lost
connection. So the bytes go to `blobs/<etag>.incomplete`, kept across runs and resumed with a
Range request, checked (size, sha256) and only then renamed to the blob and linked as HF does.

The store (`--models-dir`, scanned by gossip) gets a symlink per file to the snapshot path, so
nodes advertise and serve it like any other file, and a split GGUF's parts sit side by side.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx2
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get, repo_folder_name
from huggingface_hub.utils import build_hf_headers
from tqdm import tqdm

from services.node.hf_names import HubFile, HubNameError, HubRef, choose_files
from services.node.hf_progress import ByteProgress, RichDownloadBar, callback_bar

HASH_CHUNK_BYTES = 1 << 20
MODEL_FILE_MODE = 0o644
INCOMPLETE_SUFFIX = ".incomplete"
_SHA256_HEX_LEN = 64


class HubError(HubNameError):
    """The Hub could not give us the file (missing repo, no access, network, bad bytes)."""


class HubUnreachable(HubError):
    """No connection (or offline mode) and the file is not in the cache. A partial file is kept."""


class HubFileCorrupt(HubError):
    pass


class _QuietBar(tqdm):  # type: ignore[type-arg]
    """For downloads run by a service: its log is not a terminal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def hub_cache_dir() -> Path:
    """The HF hub cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), read now."""
    return Path(constants.HF_HUB_CACHE)


def repo_storage(repo: str) -> Path:
    return hub_cache_dir() / repo_folder_name(repo_id=repo, repo_type="model")


def fetch_hub_model(
    ref: HubRef,
    store: Path,
    expected_sha256: str = "",
    quiet: bool = False,
    progress: ByteProgress | None = None,
) -> list[Path]:
    """Blocking: the store paths of `ref`'s file(s), part 1 first, downloading what is not cached.

    Progress: `progress(done, total)` per file when given, else a rich bar unless `quiet`."""
    bar: Any = callback_bar(progress) if progress else _QuietBar if quiet else RichDownloadBar
    files, commit, online = _repo_files(ref)
    chosen = choose_files(ref, files)
    snapshots = []
    for file in chosen:
        if not online:
            snapshots.append(_cached_pointer(ref, commit, file))
            continue
        sha = expected_sha256 if len(chosen) == 1 and expected_sha256 else file.sha256
        snapshots.append(_fetch_file(ref.repo, commit, file, sha, bar))
    return [link_into_store(path, store) for path in snapshots]


def _repo_files(ref: HubRef) -> tuple[list[HubFile], str, bool]:
    """The repo's files at `ref.revision` and its commit; from the cache when offline or unreachable."""
    if constants.is_offline_mode():
        return (*_cached_files(ref, "offline mode (HF_HUB_OFFLINE) is on"), False)
    try:
        info = HfApi().model_info(ref.repo, revision=ref.revision, files_metadata=True)
    except GatedRepoError as exc:
        raise HubError(f"{ref.repo} is gated: accept its terms on the Hub, then set HF_TOKEN") from exc
    except RepositoryNotFoundError as exc:
        hint = "" if build_hf_headers().get("authorization") else " (if it is private, set HF_TOKEN)"
        raise HubError(f"no model repo {ref.repo} on {constants.ENDPOINT}{hint}") from exc
    except RevisionNotFoundError as exc:
        raise HubError(f"{ref.repo} has no revision {ref.revision!r}") from exc
    except (httpx2.TransportError, OfflineModeIsEnabled, OSError) as exc:
        if isinstance(exc, HfHubHTTPError) and not _is_server_error(exc):
            raise HubError(f"{ref.repo}: {_first_line(exc)}") from exc
        return (*_cached_files(ref, f"{constants.ENDPOINT} unreachable ({_first_line(exc)})"), False)
    files = [
        HubFile(s.rfilename, (s.lfs.size if s.lfs else s.size) or 0, s.lfs.sha256 if s.lfs else "")
        for s in info.siblings or []
    ]
    return files, info.sha or ref.revision, True


def _is_server_error(exc: HfHubHTTPError) -> bool:
    response = getattr(exc, "response", None)
    return response is not None and response.status_code >= 500


def _cached_files(ref: HubRef, why: str) -> tuple[list[HubFile], str]:
    storage = repo_storage(ref.repo)
    ref_file = storage / "refs" / ref.revision
    commit = ref_file.read_text().strip() if ref_file.is_file() else ref.revision
    snapshot = storage / "snapshots" / commit
    if not snapshot.is_dir():
        raise HubUnreachable(f"{why}, and {ref} is not in the HF cache ({hub_cache_dir()})")
    files = [
        HubFile(p.relative_to(snapshot).as_posix(), p.stat().st_size)
        for p in sorted(snapshot.rglob("*"))
        if p.is_file()
    ]
    return files, commit


def _cached_pointer(ref: HubRef, commit: str, file: HubFile) -> Path:
    pointer = repo_storage(ref.repo) / "snapshots" / commit / file.path
    if not pointer.is_file():
        raise HubUnreachable(f"{ref}: {file.path} is not in the HF cache and the Hub cannot be reached")
    return pointer


def _fetch_file(repo: str, commit: str, file: HubFile, expected_sha256: str, bar: Any) -> Path:
    storage = repo_storage(repo)
    pointer = storage / "snapshots" / commit / file.path
    if pointer.is_file():
        return pointer
    url = hf_hub_url(repo, file.path, revision=commit)
    try:
        meta = get_hf_file_metadata(url)
    except HfHubHTTPError as exc:
        raise HubError(f"{repo}/{file.path}: {_first_line(exc)}") from exc
    except (httpx2.TransportError, OSError) as exc:
        raise HubUnreachable(f"{url}: {_first_line(exc)}") from exc
    if not meta.etag:
        raise HubError(f"{url}: the server sent no ETag (is HF_ENDPOINT a Hub?)")
    blob = storage / "blobs" / meta.etag
    if not blob.is_file():
        size = meta.size or file.bytes
        _download_blob(url, meta.location, blob, size, file.path, bar)
        _verify_blob(blob, size, expected_sha256 or _sha_from_etag(meta.etag), file.path)
    _link_pointer(blob, pointer)
    _record_ref(storage, commit)
    return pointer


def _download_blob(url: str, location: str, blob: Path, size: int, label: str, bar: Any) -> None:
    """Into `<blob>.incomplete`, resumed from what an earlier run left; renamed when complete."""
    partial = blob.with_name(blob.name + INCOMPLETE_SUFFIX)
    blob.parent.mkdir(parents=True, exist_ok=True)
    headers = build_hf_headers()
    if urlparse(location).netloc != urlparse(url).netloc:
        headers.pop("authorization", None)  # a signed CDN URL: the token is not theirs to see
    done = partial.stat().st_size if partial.exists() else 0
    if size and done > size:
        partial.unlink()  # not a prefix of this file: start over
        done = 0
    try:
        with partial.open("ab") as out:
            http_get(
                location,
                out,
                resume_size=done,
                headers=headers,
                expected_size=size or None,
                displayed_filename=label,
                tqdm_class=bar,
            )
    except HfHubHTTPError as exc:
        raise HubError(f"{label}: {_first_line(exc)}") from exc
    except (httpx2.TransportError, OSError) as exc:
        kept = partial.stat().st_size if partial.exists() else 0
        raise HubUnreachable(
            f"{label}: download interrupted ({_first_line(exc)}); {kept} of {size} bytes kept, "
            "run the same command again to resume"
        ) from exc
    partial.replace(blob)
    blob.chmod(MODEL_FILE_MODE)


def _verify_blob(blob: Path, size: int, sha256: str, label: str) -> None:
    actual_size = blob.stat().st_size
    problem = f"{actual_size} bytes, expected {size}" if size and actual_size != size else ""
    if not problem and sha256:
        digest = sha256_of(blob)
        problem = f"sha256 {digest}, expected {sha256}" if digest != sha256 else ""
    if problem:
        blob.unlink()
        raise HubFileCorrupt(f"{label}: {problem}; the download was removed, run the command again")


def _sha_from_etag(etag: str) -> str:
    """The Hub's etag of an LFS file is its sha256; a git blob's etag is a sha1 (not checked)."""
    return etag if len(etag) == _SHA256_HEX_LEN and all(c in "0123456789abcdef" for c in etag) else ""


def _link_pointer(blob: Path, pointer: Path) -> None:
    pointer.parent.mkdir(parents=True, exist_ok=True)
    # Relative, as huggingface_hub links them: the cache stays valid when moved or mounted elsewhere.
    pointer.unlink(missing_ok=True)
    pointer.symlink_to(os.path.relpath(blob, pointer.parent))


def _record_ref(storage: Path, commit: str) -> None:
    """refs/main -> commit, so offline runs and `hf` tools find this snapshot."""
    ref = storage / "refs" / "main"
    if not ref.exists():
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)


def link_into_store(snapshot_path: Path, store: Path) -> Path:
    """`store/<file name>` pointing at the cached file; a different file already there wins (kept)."""
    store.mkdir(parents=True, exist_ok=True)
    link = store / snapshot_path.name
    target = snapshot_path.resolve()
    if link.is_symlink() and (not link.exists() or _in_hub_cache(link.resolve())):
        link.unlink()  # dangling, or an older revision's file: point it at this one
    if link.exists():
        return link if link.resolve() == target else snapshot_path  # a file of its own: keep it
    link.symlink_to(snapshot_path)
    return link


def _in_hub_cache(path: Path) -> bool:
    return path.is_relative_to(hub_cache_dir().resolve())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
