"""How many requests a llama-server decodes at once (services/runner/slots.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.runner.commands import build_argv
from services.runner.context_size import choose_context_tokens, context_memory_bytes, swa_cache_tokens
from services.runner.gguf_meta import ModelTraits, read_model_traits
from services.runner.slots import (
    AUTO_SLOTS,
    MAX_AUTO_SLOTS,
    MAX_SLOTS,
    MIN_AUTO_SLOTS,
    SHARED_TOKENS_PER_SLOT,
    ServerLayout,
    SlotsError,
    auto_slots,
    choose_layout,
)
from services.runner.spec import ModelKind, ProcessKind, ProcessSpec

MIB = 1024**2
GIB = 1024**3
NO_BUDGET = 0
SMOLLM2_135M = ModelTraits("llama", True, 30, trained_context_tokens=8192, kv_bytes_per_token=23040)
LLAMA_70B = ModelTraits("llama", True, 80, trained_context_tokens=131072, kv_bytes_per_token=327680)
NOMIC_EMBED = ModelTraits(
    "nomic-bert", False, 12, kind=ModelKind.EMBEDDING, trained_context_tokens=8192, encoder_only=True
)


@pytest.fixture(scope="module")
def gemma(gemma_path: Path) -> ModelTraits:
    return read_model_traits(gemma_path)


def test_slots_grow_with_the_shared_context() -> None:
    assert auto_slots(2048) == MIN_AUTO_SLOTS == 4  # never fewer than llama-server's own auto
    assert auto_slots(16384) == 8
    assert auto_slots(32768) == MAX_AUTO_SLOTS == 16
    assert auto_slots(1_000_000) == MAX_AUTO_SLOTS


def test_a_roomy_model_gets_sixteen_slots_and_keeps_its_whole_context() -> None:
    # 64k tokens of Llama 70B's cache, shared: each request may still use all 64k (-kvu).
    layout = choose_layout(LLAMA_70B, 0, AUTO_SLOTS, NO_BUDGET)
    assert layout == ServerLayout(65536, 16)
    assert layout.context_tokens == choose_context_tokens(LLAMA_70B, 0, NO_BUDGET)


def test_memory_bound_context_gets_fewer_slots() -> None:
    # 8 GiB holds 24320 tokens of Llama 70B: 11 slots of ~2k each on average.
    assert choose_layout(LLAMA_70B, 0, AUTO_SLOTS, 8 * GIB) == ServerLayout(24320, 11)
    assert choose_layout(SMOLLM2_135M, 0, AUTO_SLOTS, NO_BUDGET) == ServerLayout(8192, 4)


def test_the_user_choice_wins_and_ctx_size_sets_the_slots() -> None:
    assert choose_layout(SMOLLM2_135M, 0, 32, NO_BUDGET) == ServerLayout(8192, 32)
    assert choose_layout(SMOLLM2_135M, 0, 1, NO_BUDGET) == ServerLayout(8192, 1)
    assert choose_layout(SMOLLM2_135M, 20480, AUTO_SLOTS, NO_BUDGET) == ServerLayout(20480, 10)


def test_impossible_slot_counts_are_refused() -> None:
    with pytest.raises(SlotsError, match=r"0 \(automatic\) to 256"):
        choose_layout(SMOLLM2_135M, 0, MAX_SLOTS + 1, NO_BUDGET)
    with pytest.raises(SlotsError):
        choose_layout(SMOLLM2_135M, 0, -1, NO_BUDGET)


def test_embedding_models_keep_llama_servers_own_slots() -> None:
    assert choose_layout(NOMIC_EMBED, 0, 16, NO_BUDGET) == ServerLayout(8192, MIN_AUTO_SLOTS)
    spec = ProcessSpec("e", ProcessKind.LLAMA_SERVER, "e", "/m.gguf", parallel_slots=16)
    assert "-np" not in build_argv(spec, Path("/bin"), 8080, 4, NOMIC_EMBED)


def test_sliding_window_cache_grows_a_window_per_slot(gemma: ModelTraits) -> None:
    # Gemma 3 270M: a 512-token window per slot plus a ubatch, at 15 KiB a cell.
    assert swa_cache_tokens(gemma, 16) == 512 * 16 + 512
    layout = choose_layout(gemma, 0, AUTO_SLOTS, NO_BUDGET)
    assert layout == ServerLayout(32768, 16)
    # Short of memory the extra windows come out of the context, and the slots follow it.
    tight = choose_layout(gemma, 0, AUTO_SLOTS, 600 * MIB)
    assert tight.slots == 6
    assert tight.context_tokens < choose_context_tokens(gemma, 0, 600 * MIB)
    assert context_memory_bytes(gemma, tight.context_tokens, tight.slots) <= 600 * MIB


def test_argv_runs_the_slots_over_one_unified_cache() -> None:
    spec = ProcessSpec("c", ProcessKind.LLAMA_SERVER, "c", "/m.gguf", context_size=32768)
    argv = build_argv(spec, Path("/bin"), 8080, 4, SMOLLM2_135M)
    assert argv[argv.index("-np") + 1] == "16"
    assert "-kvu" in argv  # without it llama.cpp gives each slot 32768 / 16 tokens
    assert argv[argv.index("-c") + 1] == "32768"
    assert "-nocb" not in argv  # continuous batching: llama-server's default
    override = ProcessSpec("c", ProcessKind.LLAMA_SERVER, "c", "/m.gguf", parallel_slots=2)
    argv = build_argv(override, Path("/bin"), 8080, 4, SMOLLM2_135M)
    assert argv[argv.index("-np") + 1] == "2"


@given(
    kv=st.integers(1024, 512 * 1024),
    budget=st.integers(0, 64 * GIB),
    requested=st.integers(0, MAX_SLOTS),
)
def test_layout_fits_the_budget_and_the_slots_share_it(kv: int, budget: int, requested: int) -> None:
    traits = ModelTraits("llama", True, 32, trained_context_tokens=131072, kv_bytes_per_token=kv)
    layout = choose_layout(traits, 0, requested, budget)
    assert layout.slots == requested or MIN_AUTO_SLOTS <= layout.slots <= MAX_AUTO_SLOTS
    if requested == AUTO_SLOTS and layout.slots > MIN_AUTO_SLOTS:
        assert layout.context_tokens // layout.slots >= SHARED_TOKENS_PER_SLOT
    if budget and layout.context_tokens > choose_context_tokens(traits, 0, 1):
        assert context_memory_bytes(traits, layout.context_tokens, layout.slots) <= budget
