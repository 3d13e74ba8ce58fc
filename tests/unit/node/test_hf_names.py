"""Hugging Face names and which GGUF files of a repo's list they mean (pure, no network)."""

from __future__ import annotations

import re

import pytest

from services.node.hf_names import (
    AmbiguousQuant,
    HubFile,
    HubNameError,
    HubRef,
    IncompleteSplit,
    NoGgufInRepo,
    QuantNotInRepo,
    choose_files,
    parse_hub_ref,
    quant_of,
    split_base,
)


def files(*paths: str) -> list[HubFile]:
    return [HubFile(p, 1) for p in paths]


@pytest.mark.parametrize(
    ("spec", "ref"),
    [
        ("bartowski/Qwen2.5-7B-Instruct-GGUF", HubRef("bartowski/Qwen2.5-7B-Instruct-GGUF")),
        ("org/repo:q4_k_m", HubRef("org/repo", quant="Q4_K_M")),
        ("hf://org/repo/sub/file-Q8_0.gguf", HubRef("org/repo", file="sub/file-Q8_0.gguf")),
        ("smollm2-135m", None),
        ("models/x.gguf", None),
        ("a/b/c", None),
    ],
)
def test_parse_hub_ref(spec: str, ref: HubRef | None) -> None:
    assert parse_hub_ref(spec) == ref


def test_a_bad_hf_uri_is_an_error_not_a_path() -> None:
    with pytest.raises(HubNameError, match=re.escape("hf://ORG/REPO/FILE.gguf")):
        parse_hub_ref("hf://org")


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("Qwen2.5-7B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("qwen2.5-0.5b-instruct-q4_k_m.gguf", "Q4_K_M"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("x-IQ4_XS-00001-of-00002.gguf", "IQ4_XS"),
        ("GLM-4.7-Flash-UD-Q4_K_XL.gguf", "Q4_K_XL"),
        ("model-bf16.gguf", "BF16"),
        ("Q4_K_M/part-00001-of-00002.gguf", "Q4_K_M"),
        ("no-quant.gguf", ""),
    ],
)
def test_quant_of(name: str, quant: str) -> None:
    assert quant_of(name) == quant


def test_split_base() -> None:
    assert split_base("a/B-Q4_K_M-00002-of-00003.gguf") == "a/B-Q4_K_M.gguf"
    assert split_base("whole.gguf") == "whole.gguf"


REPO = files("M-Q4_K_M.gguf", "M-Q4_K_L.gguf", "M-Q8_0.gguf", "mmproj-M-F16.gguf", "README.md")


def test_the_quant_picks_its_file_and_not_a_longer_one() -> None:
    assert [f.path for f in choose_files(HubRef("o/r", quant="Q4_K_M"), REPO)] == ["M-Q4_K_M.gguf"]
    assert [f.path for f in choose_files(HubRef("o/r", quant="Q8_0"), REPO)] == ["M-Q8_0.gguf"]


def test_no_quant_means_q4_k_m_and_a_projector_is_never_a_model() -> None:
    assert [f.path for f in choose_files(HubRef("o/r"), REPO)] == ["M-Q4_K_M.gguf"]
    only = files("M-Q6_K.gguf", "mmproj-M-F16.gguf")
    assert [f.path for f in choose_files(HubRef("o/r"), only)] == ["M-Q6_K.gguf"]


def test_a_missing_quant_lists_the_repo_quants() -> None:
    with pytest.raises(
        QuantNotInRepo, match=r"o/r has no Q5_K_M GGUF; quants in the repo: Q4_K_L, Q4_K_M, Q8_0$"
    ):
        choose_files(HubRef("o/r", quant="Q5_K_M"), REPO)


def test_several_quants_and_no_default_asks_for_one() -> None:
    with pytest.raises(AmbiguousQuant, match="Q6_K, Q8_0"):
        choose_files(HubRef("o/r"), files("M-Q6_K.gguf", "M-Q8_0.gguf"))


def test_a_repo_without_gguf() -> None:
    with pytest.raises(NoGgufInRepo):
        choose_files(HubRef("o/r"), files("model.safetensors", "config.json"))


def test_a_split_is_all_its_parts_in_order() -> None:
    split = files(*(f"Q4_K_M/M-Q4_K_M-{i:05d}-of-00003.gguf" for i in (3, 1, 2)), "M-Q8_0.gguf")
    chosen = choose_files(HubRef("o/r", quant="Q4_K_M"), split)
    assert [f.name for f in chosen] == [f"M-Q4_K_M-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    by_uri = choose_files(HubRef("o/r", file="Q4_K_M/M-Q4_K_M-00002-of-00003.gguf"), split)
    assert [f.name for f in by_uri] == [f.name for f in chosen]


def test_a_split_missing_a_part_is_an_error() -> None:
    with pytest.raises(IncompleteSplit, match="00002-of-00003"):
        choose_files(HubRef("o/r"), files("M-Q4_K_M-00001-of-00003.gguf", "M-Q4_K_M-00003-of-00003.gguf"))


def test_a_named_file_that_is_not_there() -> None:
    with pytest.raises(
        HubNameError,
        match=re.escape("has no file nope.gguf; it has: M-Q4_K_M.gguf, M-Q4_K_L.gguf, M-Q8_0.gguf"),
    ):
        choose_files(HubRef("o/r", file="nope.gguf"), REPO)
