"""How many tokens of context a llama-server gets (pure: traits and numbers in, a token count out).

The user's `--ctx-size` wins. Otherwise the model's trained context, capped by MAX_AUTO_CONTEXT_TOKENS
(MAX_EMBEDDING_CONTEXT_TOKENS for embedding and rerank models) and by what the memory placement left
this process (ProcessSpec.memory_budget_bytes) can hold: the KV cache at f16
(ModelTraits.kv_bytes_per_token), a sliding-window cache of fixed size, the attention mask and the
compute buffers. The model is measured against llama.cpp's own log lines (tests/unit/runner/
test_context_size.py).
"""

from __future__ import annotations

import math

from services.runner.gguf_meta import ModelTraits
from services.runner.spec import ModelKind

MIB = 1024**2
# A GGUF without `<arch>.context_length` (rare; test models) gets what llama.cpp examples assume.
UNKNOWN_TRAINED_CONTEXT_TOKENS = 4096
# An agent's system prompt and tool definitions alone run 10-20k tokens, and its tool results pile
# on; llama-server's slots share one unified cache (-kvu, services/runner/slots.py), so 64k lets about
# three such sessions run side by side. Past it a full window takes minutes to prefill on a CPU and
# mostly costs memory (64k tokens of Llama 3 8B's cache are 8 GiB).
MAX_AUTO_CONTEXT_TOKENS = 65536
# Embedding and rerank inputs are chunks of documents (RAG chunks run 256-1024 tokens); 8k is the
# longest such models train for (bge-m3, nomic-embed, jina v2/v3), and their ubatch is the context.
MAX_EMBEDDING_CONTEXT_TOKENS = 8192
# Below this a chat template, a system prompt and one tool definition do not fit. A node short of
# memory gets it anyway: placement already promised it the model fits (SOLO_HEADROOM).
MIN_CONTEXT_TOKENS = 2048
# llama.cpp pads n_ctx up to a multiple of 256 (llama_context: GGML_PAD(n_ctx, 256)); choosing one
# makes the context we report the context it runs.
CONTEXT_STEP_TOKENS = 256
# Compute buffers for a 512-token ubatch: 23-53 MiB measured for SmolLM2 135M and Gemma 3 270M on
# CPU, a few hundred MiB on CUDA for 8-70B models (the FFN activations of 512 tokens); plus output
# buffers and allocator slack.
COMPUTE_RESERVE_BYTES = 512 * MIB
# llama-server's defaults (-np auto, -ub): the slots a unified sliding-window cache holds a window
# for (services/runner/slots.py chooses the slots; this is what `-np auto` gives), and the ubatch it
# keeps room for on top.
LLAMA_SERVER_SLOTS = 4
LLAMA_SERVER_UBATCH_TOKENS = 512
# The f16 attention mask grows with the context: one row per ubatch token (measured: Gemma 3 270M's
# compute buffer grows 28 MiB from 4k to 32k tokens, 1 KiB per token).
MASK_BYTES_PER_ELEMENT = 2
# llama-server keeps the KV state of finished prompts in RAM for reuse (--cache-ram, llama.cpp PR
# 16391), up to 8 GiB by default: more than most nodes have left after the weights and the context,
# so a long soak with varied prompts grows the process until the OOM killer ends it. The cache gets a
# share of what the memory budget leaves after the context (on a CPU node the budget is all of RAM:
# the other half stays for the OS, the page cache that holds the mmapped weights, other processes),
# at least the floor (a long agent prompt of a small model: SmolLM2 135M's 22.5 KiB a token make
# 256 MiB about 11k tokens) and at most the cap (llama.cpp's own default: never more than a stock
# llama-server would keep).
PROMPT_CACHE_SHARE_OF_LEFTOVER = 0.5
PROMPT_CACHE_FLOOR_MIB = 256
PROMPT_CACHE_CAP_MIB = 8192


def _round_down(tokens: int) -> int:
    return tokens // CONTEXT_STEP_TOKENS * CONTEXT_STEP_TOKENS


def whole_input_batches(traits: ModelTraits) -> bool:
    """Embedding and rerank models get -b = -ub = the context: an encoder (no KV cache) or a mean/CLS
    pooled model computes each input in one ubatch, and llama-server refuses a longer one."""
    return traits.kind is not ModelKind.CHAT


def swa_cache_tokens(traits: ModelTraits, slots: int = LLAMA_SERVER_SLOTS) -> int:
    """Cells of the sliding-window cache (llama_kv_cache_iswa: the window per slot plus a ubatch)."""
    if not traits.swa_kv_bytes_per_token:
        return 0
    cells = traits.sliding_window_tokens * slots + LLAMA_SERVER_UBATCH_TOKENS
    return math.ceil(cells / CONTEXT_STEP_TOKENS) * CONTEXT_STEP_TOKENS


def context_memory_bytes(traits: ModelTraits, context_tokens: int, slots: int = LLAMA_SERVER_SLOTS) -> int:
    """What `context_tokens` of context cost beyond the weights: caches, mask, compute reserve."""
    if whole_input_batches(traits):
        # The ubatch is the context: the mask is context x context, and the window cache holds it all.
        per_token = traits.kv_bytes_per_token + traits.swa_kv_bytes_per_token
        mask = context_tokens * context_tokens * MASK_BYTES_PER_ELEMENT
        return per_token * context_tokens + mask + COMPUTE_RESERVE_BYTES
    mask = LLAMA_SERVER_UBATCH_TOKENS * MASK_BYTES_PER_ELEMENT * context_tokens
    swa = traits.swa_kv_bytes_per_token * min(context_tokens, swa_cache_tokens(traits, slots))
    return traits.kv_bytes_per_token * context_tokens + swa + mask + COMPUTE_RESERVE_BYTES


def tokens_that_fit(traits: ModelTraits, memory_budget_bytes: int, slots: int = LLAMA_SERVER_SLOTS) -> int:
    """The most context tokens `memory_budget_bytes` holds (context_memory_bytes inverted; not
    rounded, not capped)."""
    available = memory_budget_bytes - COMPUTE_RESERVE_BYTES
    if available <= 0:
        return 0
    if whole_input_batches(traits):
        # MASK * c^2 + per_token * c <= available
        per_token = traits.kv_bytes_per_token + traits.swa_kv_bytes_per_token
        root = math.isqrt(per_token * per_token + 4 * MASK_BYTES_PER_ELEMENT * available)
        return (root - per_token) // (2 * MASK_BYTES_PER_ELEMENT)
    per_token = traits.kv_bytes_per_token + LLAMA_SERVER_UBATCH_TOKENS * MASK_BYTES_PER_ELEMENT
    window = swa_cache_tokens(traits, slots)
    # Past the window the sliding-window cache stops growing: a fixed cost, then per_token each.
    beyond_window = (available - traits.swa_kv_bytes_per_token * window) // per_token
    if beyond_window >= window:
        return beyond_window
    return available // (per_token + traits.swa_kv_bytes_per_token)


def choose_context_tokens(
    traits: ModelTraits, requested_tokens: int, memory_budget_bytes: int, slots: int = LLAMA_SERVER_SLOTS
) -> int:
    """The -c for a llama-server.

    `requested_tokens` > 0 (--ctx-size) is taken as given, except that an embedding or rerank model
    never gets more than it was trained on (an encoder has no positions past it; --ctx-size is for
    the chat models beside it). `memory_budget_bytes` 0: placement set no budget, memory does not
    limit the choice.
    """
    trained = traits.trained_context_tokens or UNKNOWN_TRAINED_CONTEXT_TOKENS
    if requested_tokens > 0:
        if whole_input_batches(traits) and traits.trained_context_tokens:
            return min(requested_tokens, traits.trained_context_tokens)
        return requested_tokens
    ceiling = min(
        trained, MAX_EMBEDDING_CONTEXT_TOKENS if whole_input_batches(traits) else MAX_AUTO_CONTEXT_TOKENS
    )
    if memory_budget_bytes > 0:
        ceiling = min(ceiling, tokens_that_fit(traits, memory_budget_bytes, slots))
    return max(min(MIN_CONTEXT_TOKENS, trained), _round_down(ceiling))


def prompt_cache_mib(
    traits: ModelTraits, context_tokens: int, memory_budget_bytes: int, slots: int = LLAMA_SERVER_SLOTS
) -> int:
    """The --cache-ram (MiB) of a llama-server running `context_tokens` of context.

    PROMPT_CACHE_SHARE_OF_LEFTOVER of what `memory_budget_bytes` leaves after context_memory_bytes,
    between PROMPT_CACHE_FLOOR_MIB and PROMPT_CACHE_CAP_MIB. Without a budget (the node's memory
    unknown, or --ctx-size chose the context) as much as the context's own KV cache: one more
    context's worth of saved prompts. 0 for embedding and rerank models, which have no prompts to
    continue.
    """
    if whole_input_batches(traits):
        return 0
    if memory_budget_bytes > 0:
        leftover = memory_budget_bytes - context_memory_bytes(traits, context_tokens, slots)
        left = int(leftover * PROMPT_CACHE_SHARE_OF_LEFTOVER)
    else:
        swa = traits.swa_kv_bytes_per_token * min(context_tokens, swa_cache_tokens(traits, slots))
        left = traits.kv_bytes_per_token * context_tokens + swa
    return min(PROMPT_CACHE_CAP_MIB, max(PROMPT_CACHE_FLOOR_MIB, left // MIB))
