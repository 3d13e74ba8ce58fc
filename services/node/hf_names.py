"""Hugging Face model names (`org/repo[:quant]`, `hf://org/repo/file`) and which GGUF files they mean.

Pure: parsing and choosing from a repo's file list, no network. The list comes from the Hub (or
from the local HF cache when offline); `hf_download` fetches what this module picks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HF_URI_PREFIX = "hf://"
DEFAULT_REVISION = "main"
# What a bare `org/repo` means when the repo holds several quants: the size/quality most people run.
DEFAULT_QUANT = "Q4_K_M"
GGUF_SUFFIX = ".gguf"

# A repo id is two path segments of letters, digits, `-`, `_`, `.` (the Hub's own rule).
_REPO_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REPO_RE = re.compile(rf"^(?P<repo>{_REPO_SEGMENT}/{_REPO_SEGMENT})(?::(?P<quant>[A-Za-z0-9_.-]+))?$")
_URI_RE = re.compile(rf"^(?P<repo>{_REPO_SEGMENT}/{_REPO_SEGMENT})/(?P<file>.+\.gguf)$", re.IGNORECASE)
# llama.cpp's split naming: NAME-00001-of-00003.gguf; the loader finds parts 2..N beside part 1.
SPLIT_RE = re.compile(r"-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
# A quant token in a file name: Q4_K_M, IQ4_XS, Q8_0, F16, BF16 (not part of a longer word).
_QUANT_RE = re.compile(r"(?<![A-Za-z0-9])(I?Q\d+(?:_[A-Z0-9]+)*|BF16|F16|F32)(?![A-Za-z0-9])", re.IGNORECASE)
# Files in GGUF repos that are not a language model to serve (vision projectors, imatrix data).
_NOT_A_MODEL = ("mmproj", "imatrix")


class HubNameError(Exception):
    """A Hugging Face name that cannot be turned into files (the message is one line for the user)."""


class NoGgufInRepo(HubNameError):
    pass


class QuantNotInRepo(HubNameError):
    def __init__(self, repo: str, quant: str, available: list[str]) -> None:
        listed = ", ".join(available) or "none"
        super().__init__(f"{repo} has no {quant} GGUF; quants in the repo: {listed}")
        self.available = available


class AmbiguousQuant(HubNameError):
    pass


class IncompleteSplit(HubNameError):
    pass


@dataclass(frozen=True)
class HubRef:
    """What the user named: a repo with an optional quant, or one file of a repo."""

    repo: str
    quant: str = ""
    file: str = ""
    revision: str = DEFAULT_REVISION

    def __str__(self) -> str:
        if self.file:
            return f"{HF_URI_PREFIX}{self.repo}/{self.file}"
        return f"{self.repo}:{self.quant}" if self.quant else self.repo


@dataclass(frozen=True)
class HubFile:
    path: str  # relative to the repo root: "Qwen2.5-72B-Instruct-Q4_K_M/...-00001-of-00002.gguf"
    bytes: int
    sha256: str = ""  # the Hub's LFS sha256 ("" when not published or when listed from the cache)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def parse_hub_ref(spec: str) -> HubRef | None:
    """`org/repo`, `org/repo:Q4_K_M` or `hf://org/repo/path/file.gguf`; None when it is neither."""
    if spec.startswith(HF_URI_PREFIX):
        match = _URI_RE.match(spec[len(HF_URI_PREFIX) :])
        if match is None:
            raise HubNameError(f"{spec!r}: expected hf://ORG/REPO/FILE.gguf")
        return HubRef(repo=match["repo"], file=match["file"])
    match = _REPO_RE.match(spec)
    if match is None or spec.lower().endswith(GGUF_SUFFIX):
        return None
    return HubRef(repo=match["repo"], quant=(match["quant"] or "").upper())


def quant_of(path: str) -> str:
    """The quant named in a file (or folder) name, upper case; "" when it names none."""
    found = _QUANT_RE.findall(path.rsplit("/", 1)[-1]) or _QUANT_RE.findall(path)
    return found[-1].upper() if found else ""


def split_base(path: str) -> str:
    """The file name without llama.cpp's `-0000K-of-0000N` part suffix (the whole path if none)."""
    match = SPLIT_RE.search(path)
    return path[: match.start()] + GGUF_SUFFIX if match else path


def model_gguf_files(files: list[HubFile]) -> list[HubFile]:
    return [
        f
        for f in files
        if f.path.lower().endswith(GGUF_SUFFIX) and not any(w in f.name.lower() for w in _NOT_A_MODEL)
    ]


def quants_in(files: list[HubFile]) -> list[str]:
    return sorted({q for f in model_gguf_files(files) if (q := quant_of(f.path))})


def choose_files(ref: HubRef, files: list[HubFile]) -> list[HubFile]:
    """The file(s) `ref` means, parts in order; raises a HubNameError saying what the repo has."""
    ggufs = model_gguf_files(files)
    if ref.file:
        chosen = [f for f in files if f.path == ref.file]
        if not chosen:
            names = ", ".join(f.path for f in ggufs) or "no GGUF files"
            raise HubNameError(f"{ref.repo} has no file {ref.file}; it has: {names}")
        return _with_parts(ref, chosen[0], files)
    if not ggufs:
        raise NoGgufInRepo(f"{ref.repo} has no GGUF files (llama.cpp needs a GGUF repo)")
    groups = _groups(ggufs)
    if not ref.quant and len(groups) == 1:
        return _with_parts(ref, next(iter(groups.values()))[0], files)
    quant = ref.quant or DEFAULT_QUANT
    matching = {base: parts for base, parts in groups.items() if quant_of(base) == quant}
    if not matching:
        if not ref.quant:
            raise AmbiguousQuant(
                f"{ref.repo} has several quants and no {DEFAULT_QUANT}; "
                f"name one as {ref.repo}:QUANT ({', '.join(quants_in(files))})"
            )
        raise QuantNotInRepo(ref.repo, quant, quants_in(files))
    if len(matching) > 1:
        names = ", ".join(sorted(matching))
        raise AmbiguousQuant(f"{ref.repo}: several {quant} files ({names}); name one as hf://{ref.repo}/FILE")
    return _with_parts(ref, next(iter(matching.values()))[0], files)


def _groups(ggufs: list[HubFile]) -> dict[str, list[HubFile]]:
    groups: dict[str, list[HubFile]] = {}
    for f in sorted(ggufs, key=lambda f: f.path):
        groups.setdefault(split_base(f.path), []).append(f)
    return groups


def _with_parts(ref: HubRef, first: HubFile, files: list[HubFile]) -> list[HubFile]:
    """A split GGUF is all of its parts (named from part 1 or any part); a whole file is itself."""
    match = SPLIT_RE.search(first.path)
    if match is None:
        return [first]
    count = int(match["count"])
    stem = first.path[: match.start()]
    by_path = {f.path: f for f in files}
    suffix = first.path[-len(GGUF_SUFFIX) :]  # as the repo spells it (.gguf or .GGUF)
    wanted = [f"{stem}-{i:05d}-of-{count:05d}{suffix}" for i in range(1, count + 1)]
    missing = [p for p in wanted if p not in by_path]
    if missing:
        raise IncompleteSplit(f"{ref.repo}: split GGUF {stem} lacks {', '.join(missing)}")
    return [by_path[p] for p in wanted]
