"""The speculation rule and its llama-server flags (services/runner/speculation.py)."""

from __future__ import annotations

import pytest

from services.runner.speculation import (
    DRAFT_SPEC_TYPE,
    MIN_TARGET_TO_DRAFT_BYTES,
    NGRAM_SPEC_TYPE,
    NO_OFFLOAD_DEVICE,
    Speculation,
    SpeculationError,
    SpeculationMode,
    decide,
    draft_refusal,
    gossip_label,
    parse_mode,
    speculation_args,
)

DRAFT = "/models/draft.gguf"


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.mark.parametrize("text", ["", "auto", "AUTO", " auto "])
def test_auto_is_the_default(text: str) -> None:
    assert parse_mode(text) is SpeculationMode.AUTO


def test_bad_mode_names_the_choices() -> None:
    with pytest.raises(SpeculationError, match="auto, draft, ngram, off"):
        parse_mode("fast")


def test_off_passes_nothing() -> None:
    chosen = decide(SpeculationMode.OFF, DRAFT)
    assert speculation_args(chosen, split_host=False) == []
    assert chosen.summary == "off"


def test_auto_without_a_draft_is_ngram() -> None:
    """Measured (the module docstring): 1.6x solo and 2.8x split on copies, 1.0x on prose."""
    chosen = decide(SpeculationMode.AUTO, "")
    assert chosen == Speculation(ngram=True, reason=chosen.reason)
    assert speculation_args(chosen, split_host=False) == ["--spec-type", NGRAM_SPEC_TYPE]
    assert speculation_args(chosen, split_host=True) == ["--spec-type", NGRAM_SPEC_TYPE]
    assert chosen.summary == "ngram"


def test_auto_with_a_draft_uses_both() -> None:
    chosen = decide(SpeculationMode.AUTO, DRAFT)
    args = speculation_args(chosen, split_host=False)
    assert flag(args, "--spec-type") == f"{DRAFT_SPEC_TYPE},{NGRAM_SPEC_TYPE}"
    assert flag(args, "--model-draft") == DRAFT
    assert "--spec-draft-p-min" in args
    assert "--spec-draft-device" not in args  # solo: the draft follows the model's own devices
    assert chosen.summary == "draft+ngram"


def test_auto_drops_a_refused_draft_and_says_why() -> None:
    chosen = decide(SpeculationMode.AUTO, DRAFT, draft_refused="its vocabulary differs")
    assert chosen.draft_model_path == "" and chosen.ngram
    assert "vocabulary differs" in chosen.reason
    assert "--model-draft" not in speculation_args(chosen, split_host=False)


def test_draft_mode_refuses_a_bad_draft() -> None:
    with pytest.raises(SpeculationError, match="vocabulary differs"):
        decide(SpeculationMode.DRAFT, DRAFT, draft_refused="its vocabulary differs")
    with pytest.raises(SpeculationError, match="needs a draft model"):
        decide(SpeculationMode.DRAFT, "")


def test_draft_mode_is_the_draft_only() -> None:
    args = speculation_args(decide(SpeculationMode.DRAFT, DRAFT), split_host=False)
    assert flag(args, "--spec-type") == DRAFT_SPEC_TYPE


def test_ngram_mode_never_loads_the_draft() -> None:
    args = speculation_args(decide(SpeculationMode.NGRAM, DRAFT), split_host=False)
    assert args == ["--spec-type", NGRAM_SPEC_TYPE]


@pytest.mark.parametrize(
    ("device", "expected"), [("", NO_OFFLOAD_DEVICE), ("CPU", NO_OFFLOAD_DEVICE), ("CUDA0", "CUDA0")]
)
def test_split_host_keeps_the_draft_off_the_rpc_devices(device: str, expected: str) -> None:
    args = speculation_args(decide(SpeculationMode.AUTO, DRAFT), split_host=True, device=device)
    assert flag(args, "--spec-draft-device") == expected


def test_draft_refusal() -> None:
    big = int(MIN_TARGET_TO_DRAFT_BYTES * 100)
    assert draft_refusal("v1", big, "v1", 100) == ""
    assert "vocabulary" in draft_refusal("v1", big, "v2", 100)
    assert "smaller" in draft_refusal("v1", big - 1, "v1", 100)
    assert "smaller" in draft_refusal("v1", big, "v1", 0)


def test_gossip_label() -> None:
    assert gossip_label("ngram", "") == "ngram"
    assert gossip_label("draft+ngram", "/m/qwen2.5-0.5b.gguf") == "draft qwen2.5-0.5b+ngram"
    assert gossip_label("draft", "/m/d.gguf") == "draft d"
