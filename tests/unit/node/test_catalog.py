"""The catalog as data: the spec's models, their draft pairs, names that resolve."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.node.catalog import CATALOG, find_entry, model_name_for_path
from services.node.hf_names import HubFile, choose_files, parse_hub_ref, quant_of

SPEC_DRAFTS = {
    "Qwen2.5-3B": "Qwen2.5-0.5B",
    "Qwen2.5-7B": "Qwen2.5-0.5B",
    "Qwen2.5-14B": "Qwen2.5-0.5B",
    "Qwen2.5-32B": "Qwen2.5-0.5B",
    "Qwen2.5-72B": "Qwen2.5-0.5B",
    "Qwen3-32B": "Qwen3-0.6B",
    "Llama-3.3-70B": "Llama-3.2-1B",
    "Gemma-3-27B": "Gemma-3-1B",
}


@pytest.mark.parametrize(("model", "draft"), SPEC_DRAFTS.items())
def test_the_spec_pairs_each_model_with_its_draft(model: str, draft: str) -> None:
    entry = find_entry(model)
    assert entry is not None and entry.draft == draft
    assert find_entry(draft) is not None


def test_glm_and_the_spec_short_names() -> None:
    assert find_entry("GLM-4.7-Flash") is find_entry("GLM-4.7-Flash-Q4_K_M")
    assert find_entry("32b").name == "Qwen2.5-32B"  # type: ignore[union-attr]
    assert find_entry("72b").name == "Qwen2.5-72B"  # type: ignore[union-attr]


def test_every_entry_has_one_source_and_its_file_matches_its_quant() -> None:
    names = [e.name.lower() for e in CATALOG] + [a.lower() for e in CATALOG for a in e.aliases]
    assert len(names) == len(set(names))
    for entry in CATALOG:
        assert bool(entry.packaged) != bool(entry.hub), entry.name
        assert entry.sha256 == "" or len(entry.sha256) == 64
        if entry.hub:
            ref = parse_hub_ref(entry.hub)
            assert ref is not None and ref.quant == quant_of(entry.file_name), entry.name
            # The repo's file named as the catalog expects is the one the quant picks.
            assert choose_files(ref, [HubFile(entry.file_name, entry.bytes)])[0].path == entry.file_name


def test_a_split_is_named_by_its_model_not_its_part() -> None:
    assert model_name_for_path(Path("/m/Big-Q4_K_M-00001-of-00003.gguf")) == "Big-Q4_K_M"
    assert model_name_for_path(Path("/m/tiny.gguf")) == "tiny"
