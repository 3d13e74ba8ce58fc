"""Vocabulary fingerprints and draft pairing against real GGUF files (services/runner/vocab.py,
services/runner/speculation_pairing.py); the tiny GGUFs come from tests/support/tiny_gguf.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.node.catalog import CATALOG, find_entry
from services.proto.meshllm.runner.v1 import runner_pb2 as pb
from services.runner.gguf_meta import GgufFormatError
from services.runner.speculation_pairing import (
    DraftPairing,
    ModelFile,
    catalog_drafts,
    check_draft,
    pick_draft,
    with_speculation,
)
from services.runner.vocab import read_vocabulary_fingerprint, vocabulary_fingerprint
from tests.support.tiny_gguf import write_tiny_draft_gguf, write_tiny_embedding_gguf, write_tiny_llama_gguf


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vocab")
    target = write_tiny_llama_gguf(root / "target.gguf", n_layers=8, n_embd=256, n_vocab=300)
    return {
        "target": target,
        "draft": write_tiny_draft_gguf(root / "draft.gguf", target, n_layers=1, n_embd=8),
        "other_vocab": write_tiny_llama_gguf(root / "other.gguf", n_layers=1, n_embd=8, n_vocab=301),
        "big_same_vocab": write_tiny_draft_gguf(root / "big.gguf", target, n_layers=8, n_embd=256),
        "embedding": write_tiny_embedding_gguf(root / "embedding.gguf"),
    }


def test_same_vocabulary_same_fingerprint_whatever_the_weights(models: dict[str, Path]) -> None:
    assert read_vocabulary_fingerprint(models["target"]) == read_vocabulary_fingerprint(models["draft"])


def test_different_vocabulary_different_fingerprint(models: dict[str, Path]) -> None:
    assert read_vocabulary_fingerprint(models["target"]) != read_vocabulary_fingerprint(models["other_vocab"])
    assert read_vocabulary_fingerprint(models["target"]) != read_vocabulary_fingerprint(models["embedding"])


def test_one_changed_token_changes_the_fingerprint(models: dict[str, Path]) -> None:
    data = bytearray(models["target"].read_bytes())
    before = vocabulary_fingerprint(bytes(data))
    at = data.index(b"<|im_start|>")
    data[at + 2] = ord("X")  # same length: the header still parses
    assert vocabulary_fingerprint(bytes(data)) != before


def test_not_a_gguf_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(GgufFormatError):
        vocabulary_fingerprint(b"not a gguf at all, really")
    with pytest.raises(GgufFormatError):
        vocabulary_fingerprint(b"GGUF\x03\x00\x00\x00" + b"\x00" * 8 + b"\x05" + b"\x00" * 7)


def test_check_draft_accepts_the_same_vocabulary_and_refuses_another(models: dict[str, Path]) -> None:
    assert check_draft(models["target"], models["draft"]) == ""
    assert "vocabulary differs" in check_draft(models["target"], models["other_vocab"])
    assert "smaller" in check_draft(models["target"], models["big_same_vocab"])
    assert "cannot be read" in check_draft(models["target"], models["target"].parent / "missing.gguf")


def test_pick_draft_prefers_the_catalog_pairing_then_the_biggest() -> None:
    target = ModelFile("/m/t.gguf", 10_000, "v")
    small, bigger = ModelFile("/m/a.gguf", 100, "v"), ModelFile("/m/b.gguf", 1_000, "v")
    other = ModelFile("/m/o.gguf", 500, "w")
    assert pick_draft(target, [small, bigger, other, target]) == "/m/b.gguf"
    assert pick_draft(target, [small, bigger], preferred="/m/a.gguf") == "/m/a.gguf"
    assert pick_draft(target, [other]) == ""
    assert pick_draft(ModelFile("/m/x.gguf", 10_000, ""), [small]) == ""


def test_auto_pairing_finds_the_draft_in_the_store(models: dict[str, Path]) -> None:
    """DraftPairing (placement's), `--speculation draft`: the store's GGUF with the same vocabulary,
    small enough; none for a model nothing pairs with. --draft for every model; no pairing under
    `auto` without --draft, nor with --no-draft or `ngram`/`off`."""
    store = models["target"].parent
    target, other = str(models["target"]), str(models["other_vocab"])
    pairing = DraftPairing("draft", "", False, store, [])
    assert asyncio.run(pairing.drafts([target, other])) == {target: str(models["draft"])}
    forced = DraftPairing("auto", "/d.gguf", False, store, [])
    assert asyncio.run(forced.drafts([target, other])) == {target: "/d.gguf", other: "/d.gguf"}
    for mode, no_draft in (("auto", False), ("draft", True), ("ngram", False), ("off", False)):
        assert asyncio.run(DraftPairing(mode, "", no_draft, store, []).drafts([target])) == {}


def test_with_speculation_sets_llama_servers_only() -> None:
    llama = pb.ProcessSpec(key="l", kind=pb.PROCESS_KIND_LLAMA_SERVER, model_path="/m.gguf")
    rpc = pb.ProcessSpec(key="r", kind=pb.PROCESS_KIND_RPC_SERVER, model_path="/m.gguf")
    out = with_speculation([llama, rpc], "ngram", {"/m.gguf": "/d.gguf"})
    assert (out[0].speculation, out[0].draft_model_path) == ("ngram", "/d.gguf")
    assert out[1] == rpc and not llama.speculation  # the input is left as it was


def test_catalog_drafts_names_the_catalog_pairing(tmp_path: Path) -> None:
    paired = next(e for e in CATALOG if e.draft)
    draft = find_entry(paired.draft)
    assert draft is not None
    assert catalog_drafts([f"/x/{paired.file_name}", "/x/unknown.gguf"], tmp_path) == {
        f"/x/{paired.file_name}": str(tmp_path / draft.file_name)
    }
