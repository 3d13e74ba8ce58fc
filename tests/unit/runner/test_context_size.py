"""The context a llama-server gets (services/runner/context_size.py), for real models' numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.runner.context_size import (
    COMPUTE_RESERVE_BYTES,
    CONTEXT_STEP_TOKENS,
    LLAMA_SERVER_UBATCH_TOKENS,
    MASK_BYTES_PER_ELEMENT,
    MAX_AUTO_CONTEXT_TOKENS,
    MAX_EMBEDDING_CONTEXT_TOKENS,
    MIN_CONTEXT_TOKENS,
    UNKNOWN_TRAINED_CONTEXT_TOKENS,
    choose_context_tokens,
    context_memory_bytes,
    swa_cache_tokens,
    tokens_that_fit,
)
from services.runner.gguf_meta import ModelTraits, read_model_traits
from services.runner.spec import ModelKind

MIB = 1024**2
GIB = 1024**3
NO_BUDGET = 0
# 30 layers, 9 heads, 3 KV heads of 576 / 9 = 64 dims: 30 x 3 x 128 x 2 bytes per token.
SMOLLM2_135M = ModelTraits("llama", True, 30, trained_context_tokens=8192, kv_bytes_per_token=23040)
# Llama 3.1 70B: 80 layers, 8 KV heads of 128 dims, trained on 128k: 320 KiB per token.
LLAMA_70B = ModelTraits("llama", True, 80, trained_context_tokens=131072, kv_bytes_per_token=327680)
NOMIC_EMBED = ModelTraits(
    "nomic-bert", False, 12, kind=ModelKind.EMBEDDING, trained_context_tokens=8192, encoder_only=True
)


@pytest.fixture(scope="module")
def gemma(gemma_path: Path) -> ModelTraits:
    return read_model_traits(gemma_path)


def test_what_the_user_asked_for_wins() -> None:
    assert choose_context_tokens(SMOLLM2_135M, 100_000, 64 * MIB) == 100_000  # past trained, too
    assert choose_context_tokens(LLAMA_70B, 1000, NO_BUDGET) == 1000


def test_an_encoder_never_gets_more_than_its_positions() -> None:
    assert choose_context_tokens(NOMIC_EMBED, 32768, NO_BUDGET) == 8192
    assert choose_context_tokens(NOMIC_EMBED, 2048, NO_BUDGET) == 2048


def test_smollm2_gets_its_trained_context_unless_memory_is_short() -> None:
    assert choose_context_tokens(SMOLLM2_135M, 0, NO_BUDGET) == 8192
    assert choose_context_tokens(SMOLLM2_135M, 0, 1 * GIB) == 8192
    # 600 MiB - 512 MiB reserve = 88 MiB at 23040 + 1024 (mask) bytes a token: 3834, down to 3584.
    assert choose_context_tokens(SMOLLM2_135M, 0, 600 * MIB) == 3584


def test_smollm2_cache_matches_llama_cpp() -> None:
    """llama.cpp's log: `llama_kv_cache: size = 180.00 MiB (8192 cells, 30 layers, 4/1 seqs)`."""
    mask = LLAMA_SERVER_UBATCH_TOKENS * MASK_BYTES_PER_ELEMENT * 8192
    assert context_memory_bytes(SMOLLM2_135M, 8192) - mask - COMPUTE_RESERVE_BYTES == 180 * MIB


def test_gemma3_270m_sliding_window_cache_is_a_fixed_cost(gemma: ModelTraits) -> None:
    # llama.cpp's log: SWA KV cache of 2560 cells (512 x 4 slots + a 512 ubatch), 37.5 MiB.
    assert swa_cache_tokens(gemma) == 2560
    cache_4k = context_memory_bytes(gemma, 4096) - COMPUTE_RESERVE_BYTES - 4096 * 1024
    assert cache_4k == 12 * MIB + 37.5 * MIB
    assert choose_context_tokens(gemma, 0, NO_BUDGET) == 32768
    assert choose_context_tokens(gemma, 0, 1 * GIB) == 32768
    # 88 MiB - 37.5 MiB window = 50.5 MiB at 3072 + 1024 bytes a token: 12928, down to 12800.
    assert choose_context_tokens(gemma, 0, 600 * MIB) == 12800


def test_a_big_model_is_capped_then_memory_bound() -> None:
    assert choose_context_tokens(LLAMA_70B, 0, NO_BUDGET) == MAX_AUTO_CONTEXT_TOKENS
    assert choose_context_tokens(LLAMA_70B, 0, 40 * GIB) == MAX_AUTO_CONTEXT_TOKENS
    # 7.5 GiB at 327680 + 1024 bytes a token: 24499, down to 24320.
    assert choose_context_tokens(LLAMA_70B, 0, 8 * GIB) == 24320
    # Room for 1633 tokens: a node that short still gets the minimum.
    assert choose_context_tokens(LLAMA_70B, 0, 1 * GIB) == MIN_CONTEXT_TOKENS
    assert choose_context_tokens(LLAMA_70B, 0, 1) == MIN_CONTEXT_TOKENS


def test_short_trained_contexts_and_unknown_ones() -> None:
    bert = ModelTraits("bert", kind=ModelKind.EMBEDDING, trained_context_tokens=512, encoder_only=True)
    assert choose_context_tokens(bert, 0, NO_BUDGET) == 512  # below the minimum: what it was trained on
    assert choose_context_tokens(bert, 0, 1) == 512
    assert choose_context_tokens(ModelTraits(), 0, NO_BUDGET) == UNKNOWN_TRAINED_CONTEXT_TOKENS


def test_embedding_models_are_capped_lower_and_pay_a_quadratic_mask() -> None:
    assert choose_context_tokens(NOMIC_EMBED, 0, NO_BUDGET) == MAX_EMBEDDING_CONTEXT_TOKENS
    # The whole input is one ubatch: 88 MiB holds a 6792 x 6792 f16 mask; down to 6656.
    assert tokens_that_fit(NOMIC_EMBED, 600 * MIB) == 6792
    assert choose_context_tokens(NOMIC_EMBED, 0, 600 * MIB) == 6656


TRAITS = st.builds(
    ModelTraits,
    kind=st.sampled_from(ModelKind),
    trained_context_tokens=st.integers(0, 1 << 20),
    kv_bytes_per_token=st.integers(0, 1 << 20),
    swa_kv_bytes_per_token=st.integers(0, 1 << 18),
    sliding_window_tokens=st.integers(0, 1 << 14),
    encoder_only=st.booleans(),
)


@given(TRAITS, st.integers(1, 1 << 40))
def test_what_fits_fits_and_one_more_token_does_not(traits: ModelTraits, budget: int) -> None:
    fit = tokens_that_fit(traits, budget)
    if fit > 0:
        assert context_memory_bytes(traits, fit) <= budget
    if budget > COMPUTE_RESERVE_BYTES:
        assert context_memory_bytes(traits, fit + 1) > budget


@given(TRAITS, st.integers(0, 1 << 40))
def test_an_automatic_context_is_bounded_and_a_step_multiple(traits: ModelTraits, budget: int) -> None:
    chosen = choose_context_tokens(traits, 0, budget)
    trained = traits.trained_context_tokens or UNKNOWN_TRAINED_CONTEXT_TOKENS
    assert chosen <= max(trained, 1) and chosen <= MAX_AUTO_CONTEXT_TOKENS
    assert chosen >= min(MIN_CONTEXT_TOKENS, trained)
    assert chosen % CONTEXT_STEP_TOKENS == 0 or chosen == trained
    if budget and chosen > MIN_CONTEXT_TOKENS:
        assert context_memory_bytes(traits, chosen) <= budget
