"""How much RAM llama-server's prompt cache may hold (services/runner/context_size.py prompt_cache_mib)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.runner.context_size import (
    PROMPT_CACHE_CAP_MIB,
    PROMPT_CACHE_FLOOR_MIB,
    PROMPT_CACHE_SHARE_OF_LEFTOVER,
    choose_context_tokens,
    context_memory_bytes,
    prompt_cache_mib,
)
from services.runner.gguf_meta import ModelTraits
from services.runner.spec import ModelKind

MIB = 1024**2
GIB = 1024**3
NO_BUDGET = 0
SMOLLM2_135M = ModelTraits("llama", True, 30, trained_context_tokens=8192, kv_bytes_per_token=23040)
# Llama 3.1 8B: 32 layers, 8 KV heads of 128 dims: 128 KiB per token.
LLAMA_8B = ModelTraits("llama", True, 32, trained_context_tokens=131072, kv_bytes_per_token=131072)
NOMIC_EMBED = ModelTraits(
    "nomic-bert", False, 12, kind=ModelKind.EMBEDDING, trained_context_tokens=8192, encoder_only=True
)


def test_the_cache_gets_half_of_what_the_budget_leaves_after_the_context() -> None:
    context = choose_context_tokens(SMOLLM2_135M, 0, 2 * GIB)
    assert context == 8192
    # 2 GiB - (8192 x (23040 + 1024) bytes + 512 MiB of compute reserve) = 1348 MiB; half of it.
    assert (2 * GIB - context_memory_bytes(SMOLLM2_135M, context)) // MIB == 1348
    assert prompt_cache_mib(SMOLLM2_135M, context, 2 * GIB) == 674 == 1348 * PROMPT_CACHE_SHARE_OF_LEFTOVER


def test_a_budget_short_of_memory_still_gets_the_floor() -> None:
    context = choose_context_tokens(SMOLLM2_135M, 0, 600 * MIB)
    assert prompt_cache_mib(SMOLLM2_135M, context, 600 * MIB) == PROMPT_CACHE_FLOOR_MIB
    assert prompt_cache_mib(SMOLLM2_135M, context, 1) == PROMPT_CACHE_FLOOR_MIB  # "nothing left"


def test_a_big_budget_never_gets_more_than_llama_cpp_keeps_by_default() -> None:
    assert prompt_cache_mib(LLAMA_8B, 65536, 200 * GIB) == PROMPT_CACHE_CAP_MIB == 8192


def test_without_a_budget_the_cache_holds_one_more_context() -> None:
    """--ctx-size (placement sends no budget then) or a node whose memory is not known."""
    assert prompt_cache_mib(LLAMA_8B, 32768, NO_BUDGET) == 4096  # 32768 x 128 KiB
    assert prompt_cache_mib(SMOLLM2_135M, 8192, NO_BUDGET) == PROMPT_CACHE_FLOOR_MIB  # 180 MiB
    assert prompt_cache_mib(LLAMA_8B, 131072, NO_BUDGET) == PROMPT_CACHE_CAP_MIB
    assert prompt_cache_mib(ModelTraits(), 4096, NO_BUDGET) == PROMPT_CACHE_FLOOR_MIB  # header unread


def test_embedding_and_rerank_models_keep_no_prompts() -> None:
    assert prompt_cache_mib(NOMIC_EMBED, 8192, 4 * GIB) == 0
    assert prompt_cache_mib(NOMIC_EMBED, 8192, NO_BUDGET) == 0


@given(
    kv=st.integers(min_value=0, max_value=1 << 20),
    context=st.integers(min_value=1, max_value=1 << 18),
    budget=st.integers(min_value=0, max_value=1 << 42),
)
def test_always_between_the_floor_and_the_cap(kv: int, context: int, budget: int) -> None:
    traits = ModelTraits("llama", True, 32, trained_context_tokens=1 << 18, kv_bytes_per_token=kv)
    assert PROMPT_CACHE_FLOOR_MIB <= prompt_cache_mib(traits, context, budget) <= PROMPT_CACHE_CAP_MIB


@given(budget=st.integers(min_value=1, max_value=1 << 40), more=st.integers(min_value=0, max_value=1 << 40))
def test_more_budget_never_means_less_cache(budget: int, more: int) -> None:
    context = 4096
    assert prompt_cache_mib(LLAMA_8B, context, budget) <= prompt_cache_mib(LLAMA_8B, context, budget + more)
