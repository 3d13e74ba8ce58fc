"""Speculative decoding: which kind a llama-server runs with, and the flags for it (pure).

Speculation lets the model check several guessed tokens in one forward pass: the guesses come from a
draft model (a much smaller model with the same vocabulary, run next to the model on the host) or
from n-grams of the text so far (no extra model: it pays where the output repeats the input, as code
edits and JSON do). At temperature 0 the model verifies every guess, so the text is its own either
way; it is the very same text where llama.cpp's kernels are batch-invariant (one thread on this CPU
build: tests/integration/runner/test_speculation_served.py), while with more threads a batched
verification can round a near-tie the other way, as batching concurrent requests can.

`--speculation auto` is the measured rule below (bench/speculative.py, bench/RESULTS.md: SmolLM2
135M on a shared 2-core CPU VM, 6 interleaved rounds of 128 tokens, temperature 0):
- n-gram on every llama-server of a generating model, solo and split host alike. ngram-mod drafts
  only after a 24-token exact match with the text so far, up to 64 tokens at a time: where the
  answer copies its input (an edited JSON document, 72% of drafts accepted) it is 1.61x solo and
  2.67x / 2.81x in a 2-node split at 0 / 20 ms RTT (0.28 blocking round trips per token instead
  of 0.98); on prose it drafts ~nothing (1.00x solo, 1.11x / 1.01x split). Where the copy is loose
  (a function the model rewrites or renames through: 16-37% accepted) it is 0.96-1.10x solo
  (tokens per CPU-second 1.02-1.04x) and 0.91-1.07x split: the cost of a rejected draft on this CPU
  build, where verifying a token costs about what decoding it does. On a GPU verifying a batch
  costs about one step (decode is bound by reading the weights), so drafts cost less there still
  (llama.cpp's and the spec's reasoning; no GPU was lent to measure it).
- a draft model only when named: `--draft` (then alongside n-gram), or `--speculation draft` (which
  also pairs one automatically). A draft costs every step a draft forward pass even when it guesses
  nothing (--spec-draft-p-min stops it at its first unsure token): 0.76x on prose with a random
  draft of SmolLM2's vocabulary, so `auto` never starts one nobody vouched for.
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


def decide(requested: SpeculationMode, draft_model_path: str, draft_refused: str = "") -> Speculation:
    """The speculation for a llama-server, solo or split host (the module docstring has the rule
    and its numbers). `draft_model_path`: the draft paired with the model ("" for none);
    `draft_refused`: why that draft cannot serve this model ("" if it can, or it was not checked).
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
        return Speculation(ngram=True, draft_model_path=draft_model_path, reason="auto: draft and n-gram")
    why = f" (draft not used: {draft_refused})" if draft_model_path else ""
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
