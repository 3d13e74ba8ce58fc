"""Speculative decoding: which kind a llama-server runs with, and the flags for it (pure).

Speculation lets the model check several guessed tokens in one forward pass: the guesses come from a
draft model (a much smaller model with the same vocabulary, run next to the model on the host) or
from n-grams of the text so far (no extra model: it pays where the output repeats the input, as code
edits and JSON do). At temperature 0 the output is the same text either way; only its speed changes.

`--speculation auto` is the measured rule below (bench/speculative.py, bench/RESULTS.md; SmolLM2
135M, a shared 2-core VM, so read the counts more than the timings):
- n-gram only where the model's forward passes run on a GPU, solo and split host alike; off on a
  CPU-only build. ngram-mod drafts
  only after a 24-token exact match with the text so far: on prose it drafts nothing unless the
  text repeats itself (tokens per CPU-second 1.04x; split at 20 ms 0.995x), on copy-heavy output it
  drafts up to 64 tokens at a time (Gemma 270M repeating its prompt: 71 of 71 accepted, 2x). Where
  the copy is loose (SmolLM2 135M rewriting a function: 8-19% accepted) it costs: 0.90-0.95x per
  CPU-second solo, 0.62-0.85x split at 20 ms. The looser n-gram kinds lose more on this CPU build,
  where a rejected draft token costs about a sixth of a decode step: ngram-simple with a 4-token
  lookup drafted 228 tokens for 74 accepted on a code edit, 0.58x. So on a CPU-only build `auto`
  is off: where it pays (faithful copies) `--speculation ngram` turns it on. On a GPU, verifying a
  batch of drafted tokens costs about what one token does (decode is bound by reading the weights),
  so a rejected draft costs little and an accepted one saves a step (and on a split host its
  blocking RPC round trip): `auto` turns n-gram on there. That half is llama.cpp's and the spec's
  reasoning, not measured here (no GPU on this VM).
- a draft model only when named: `--draft` (then alongside n-gram), or `--speculation draft` (which
  also pairs one automatically). A draft costs every step a draft forward pass even when it guesses
  nothing (--spec-draft-p-min stops it at its first unsure token): 0.87x tokens per CPU-second on
  prose with a random draft of SmolLM2's vocabulary, so `auto` never starts one nobody vouched for.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# --spec-type values of the pinned llama-server (`llama-server --help`).
NGRAM_SPEC_TYPE = "ngram-mod"
DRAFT_SPEC_TYPE = "draft-simple"
# The draft stops at the first token it is less sure of than this (greedy probability): a draft that
# guesses badly (another domain, random weights) then drafts ~nothing instead of slowing every step.
DRAFT_MIN_PROBABILITY = 0.75
# Tokens the draft proposes per step at most: more is wasted work once acceptance falls.
DRAFT_MAX_TOKENS = 8
# A draft must be this many times smaller than its model (file bytes) to pay: every drafted token
# costs a draft forward pass, ~1/ratio of the model's. The spec's pairs are 14x to 70x.
MIN_TARGET_TO_DRAFT_BYTES = 8.0
# --spec-draft-device value that keeps the draft on this machine's CPU (llama.cpp: "none").
NO_OFFLOAD_DEVICE = "none"
CPU_DEVICE = "CPU"  # ProcessSpec.device for no offload
# Of a draft's name in gossip: well inside its 256-character text limit (services/gossip/record_limits.py).
MAX_LABEL_NAME_CHARS = 128


class SpeculationMode(enum.StrEnum):
    AUTO = "auto"
    DRAFT = "draft"
    NGRAM = "ngram"
    OFF = "off"


MODES = tuple(mode.value for mode in SpeculationMode)


class SpeculationError(ValueError):
    """A speculation request that cannot be met (bad value, draft mode without a usable draft)."""


def parse_mode(text: str) -> SpeculationMode:
    """`--speculation` / ProcessSpec.speculation; empty means auto (the proto default)."""
    if not text:
        return SpeculationMode.AUTO
    try:
        return SpeculationMode(text.strip().lower())
    except ValueError:
        raise SpeculationError(f"speculation must be one of {', '.join(MODES)}, not {text!r}") from None


@dataclass(frozen=True)
class Speculation:
    """What one llama-server runs with: n-gram and/or a draft model, or nothing."""

    ngram: bool = False
    draft_model_path: str = ""
    reason: str = ""  # why, in plain words (shown in status)

    @property
    def summary(self) -> str:
        """ "draft+ngram", "draft", "ngram" or "off" (ProcessStatus.speculation)."""
        parts = (["draft"] if self.draft_model_path else []) + (["ngram"] if self.ngram else [])
        return "+".join(parts) or SpeculationMode.OFF.value


def decide(
    requested: SpeculationMode, draft_model_path: str, draft_refused: str = "", on_gpu: bool = False
) -> Speculation:
    """The speculation for a llama-server (solo or split host: the rule is the same for both, see
    the module docstring). `draft_model_path`: the draft paired with the model ("" for none);
    `draft_refused`: why that draft cannot serve this model ("" if it can, or it was not checked);
    `on_gpu`: the build offloads the model's layers to a GPU (auto's n-gram needs one to pay).
    Raises SpeculationError for `draft` without a usable draft."""
    if requested is SpeculationMode.OFF:
        return Speculation(reason="speculation off")
    if requested is SpeculationMode.NGRAM:
        return Speculation(ngram=True, reason="n-gram asked for")
    if requested is SpeculationMode.DRAFT:
        if not draft_model_path:
            raise SpeculationError("speculation 'draft' needs a draft model (--draft PATH|NAME)")
        if draft_refused:
            raise SpeculationError(f"draft {draft_model_path}: {draft_refused}")
        return Speculation(draft_model_path=draft_model_path, reason="draft asked for")
    if draft_model_path and not draft_refused:  # placement passes a draft under auto only if named
        reason = "auto: draft and n-gram" if on_gpu else "auto: draft (n-gram is off on a CPU-only build)"
        return Speculation(ngram=on_gpu, draft_model_path=draft_model_path, reason=reason)
    why = f" (draft not used: {draft_refused})" if draft_model_path else ""
    if not on_gpu:
        return Speculation(reason=f"auto: off on a CPU-only build, where n-gram measured 0.6-0.95x{why}")
    return Speculation(ngram=True, reason=f"auto: n-gram{why}")


def speculation_args(speculation: Speculation, split_host: bool, device: str = "") -> list[str]:
    """llama-server flags. A split host's --device list holds the RPC workers, which the draft would
    follow by default: its draft stays on the host's own device (`device` when it names local GPUs,
    else the CPU), so drafting never waits on the link."""
    types = ([DRAFT_SPEC_TYPE] if speculation.draft_model_path else []) + (
        [NGRAM_SPEC_TYPE] if speculation.ngram else []
    )
    if not types:
        return []
    args = ["--spec-type", ",".join(types)]
    if speculation.draft_model_path:
        args += [
            "--model-draft",
            speculation.draft_model_path,
            "--spec-draft-p-min",
            f"{DRAFT_MIN_PROBABILITY:g}",
            "--spec-draft-n-max",
            str(DRAFT_MAX_TOKENS),
        ]
        if split_host:
            local = device if device and device != CPU_DEVICE else NO_OFFLOAD_DEVICE
            args += ["--spec-draft-device", local]
    return args


def draft_refusal(target_vocab: str, target_bytes: int, draft_vocab: str, draft_bytes: int) -> str:
    """Why a draft cannot serve a target ("" when it can): the vocabularies must be the same
    (services/runner/vocab.py fingerprints) and the draft much smaller."""
    if target_vocab != draft_vocab:
        return "its vocabulary differs from the model's (a draft must tokenize the same way)"
    if draft_bytes <= 0 or target_bytes < draft_bytes * MIN_TARGET_TO_DRAFT_BYTES:
        return f"it is not at least {MIN_TARGET_TO_DRAFT_BYTES:g}x smaller than the model"
    return ""


def gossip_label(speculation: str, draft_model_path: str) -> str:
    """What gossip and `meshctl` show: "ngram", "draft NAME", "draft NAME+ngram", "off"."""
    if not draft_model_path:
        return speculation
    name = draft_model_path.rsplit("/", 1)[-1].removesuffix(".gguf")[:MAX_LABEL_NAME_CHARS]
    rest = speculation.replace("draft", "").strip("+")
    return f"draft {name}" + (f"+{rest}" if rest else "")
