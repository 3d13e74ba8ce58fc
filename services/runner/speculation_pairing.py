"""Which draft model serves which model, checked against the GGUF files (the I/O edge of speculation).

`check_draft` is the runner's last word before it passes a draft to llama-server (a draft whose
vocabulary differs would be refused by llama-server or, worse, guess tokens that mean other
strings). `pick_draft` is the auto-pairing rule (pure); `DraftPairing` applies it for placement
to the GGUFs a node has on disk. Fingerprints are hashed in a thread and cached per file version
(services/runner/vocab.py), so re-planning costs nothing after the first look.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.node.catalog import CATALOG, find_entry
from services.proto.meshllm.runner.v1 import runner_pb2
from services.runner.gguf_meta import GgufFormatError
from services.runner.speculation import (
    Speculation,
    SpeculationMode,
    decide,
    draft_refusal,
    parse_mode,
)
from services.runner.vocab import read_vocabulary_fingerprint

log = logging.getLogger("runner.speculation")

GGUF_SUFFIX = ".gguf"


@dataclass(frozen=True)
class ModelFile:
    path: str
    bytes: int
    vocabulary: str  # vocab.vocabulary_fingerprint; "" when the header could not be read


def read_model_file(path: Path) -> ModelFile:
    """Blocking. A file whose header cannot be read gets an empty fingerprint (it pairs with nothing)."""
    try:
        size = os.path.getsize(path)
        return ModelFile(str(path), size, read_vocabulary_fingerprint(path))
    except (OSError, GgufFormatError) as exc:
        log.debug("%s: no vocabulary fingerprint: %s", path, exc)
        return ModelFile(str(path), 0, "")


def check_draft(target: Path, draft: Path) -> str:
    """Blocking. Why `draft` cannot serve `target` ("" when it can)."""
    model, candidate = read_model_file(target), read_model_file(draft)
    if not candidate.vocabulary:
        return "its GGUF header (tokenizer) cannot be read"
    if not model.vocabulary:
        return "the model's GGUF header (tokenizer) cannot be read"
    return draft_refusal(model.vocabulary, model.bytes, candidate.vocabulary, candidate.bytes)


async def checked_speculation(mode: str, model_path: str, draft_model_path: str) -> Speculation:
    """The speculation a llama-server starts with, its draft checked against the model file.
    Raises SpeculationError when `draft` was asked for and the draft cannot serve."""
    requested = parse_mode(mode)
    refused = ""
    if draft_model_path and requested in (SpeculationMode.AUTO, SpeculationMode.DRAFT):
        refused = await asyncio.to_thread(check_draft, Path(model_path), Path(draft_model_path))
    return decide(requested, draft_model_path, refused)


def pick_draft(target: ModelFile, candidates: Sequence[ModelFile], preferred: str = "") -> str:
    """The draft for `target` among `candidates` ("" for none): one with the same vocabulary and
    small enough (speculation.draft_refusal); the `preferred` path (the catalog's pairing) if it
    qualifies, else the biggest that does (the better guesser of those that pay)."""
    if not target.vocabulary:
        return ""
    usable = [
        c
        for c in candidates
        if c.path != target.path
        and c.vocabulary
        and not draft_refusal(target.vocabulary, target.bytes, c.vocabulary, c.bytes)
    ]
    for candidate in usable:
        if preferred and candidate.path == preferred:
            return candidate.path
    return max(usable, key=lambda c: c.bytes).path if usable else ""


def gguf_files(directory: Path) -> list[Path]:
    """Blocking. The .gguf files directly in `directory` (none when it does not exist)."""
    try:
        return sorted(p for p in directory.iterdir() if p.suffix == GGUF_SUFFIX and p.is_file())
    except OSError:
        return []


class DraftPairing:
    """Placement's drafts: `draft` (--draft, a resolved path) for every model (`auto` and `draft`),
    else, for `--speculation draft`, auto-pairing with the GGUFs in the model store and the configured
    models. `auto` runs no draft nobody named: a draft that guesses badly costs every decode step a
    draft forward pass (measured: 0.87x tokens per CPU-second on prose with a random draft for
    SmolLM2, bench/RESULTS.md), and a pairing by vocabulary cannot tell a good guesser from a bad one."""

    def __init__(self, mode: str, draft: str, no_draft: bool, store: Path, configured: Iterable[str]) -> None:
        self._mode = parse_mode(mode)
        self._draft = draft
        self._no_draft = no_draft
        self._store = store
        self._configured = tuple(configured)

    def _candidates(self) -> list[ModelFile]:
        paths = {str(p) for p in gguf_files(self._store)} | set(self._configured)
        return [read_model_file(Path(p)) for p in sorted(paths)]

    def _pair(self, model_paths: Sequence[str], preferred: dict[str, str]) -> dict[str, str]:
        candidates = self._candidates()
        drafts = {}
        for path in model_paths:
            chosen = pick_draft(read_model_file(Path(path)), candidates, preferred.get(path, ""))
            if chosen:
                drafts[path] = chosen
        return drafts

    async def drafts(
        self, model_paths: Sequence[str], preferred: dict[str, str] | None = None
    ) -> dict[str, str]:
        """By model file: its draft file. `preferred`: by model file, the catalog's draft file."""
        if self._no_draft or self._mode in (SpeculationMode.OFF, SpeculationMode.NGRAM):
            return {}
        if self._draft:
            return dict.fromkeys(model_paths, self._draft)
        if self._mode is not SpeculationMode.DRAFT:
            return {}
        return await asyncio.to_thread(self._pair, model_paths, preferred or {})


def catalog_drafts(model_paths: Iterable[str], store: Path) -> dict[str, str]:
    """By model file: the file of the draft the catalog pairs it with, where that sits in `store`
    (whether it is really usable is still checked: pick_draft)."""
    preferred = {}
    for path in model_paths:
        entry = next((e for e in CATALOG if e.file_name == Path(path).name), None)
        draft = find_entry(entry.draft) if entry is not None and entry.draft else None
        if draft is not None:
            preferred[path] = str(store / draft.file_name)
    return preferred


def with_speculation(
    specs: Sequence[runner_pb2.ProcessSpec], mode: str, drafts: Mapping[str, str]
) -> list[runner_pb2.ProcessSpec]:
    """`specs` with every llama-server's speculation mode and paired draft (by model file) set."""
    out = []
    for spec in specs:
        if spec.kind == runner_pb2.PROCESS_KIND_LLAMA_SERVER:
            spec = runner_pb2.ProcessSpec.FromString(spec.SerializeToString())
            spec.speculation = mode
            spec.draft_model_path = drafts.get(spec.model_path, "")
        out.append(spec)
    return out


def requested_label(mode: str, draft: str) -> str:
    """Placement's Assignment.speculation: "auto", "auto, draft /path/d.gguf", "off"."""
    return f"{mode}, draft {draft}" if draft else mode
