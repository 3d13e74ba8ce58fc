"""How many requests one llama-server decodes at once, and the context it gets with them (pure).

llama-server batches every busy slot's next token into one decode step (continuous batching, on by
default), and a decode step of a few tokens costs about what one costs: it is bound by reading the
weights, not by arithmetic. So N concurrent requests cost far less than N x one, as long as there
are N slots; a request that finds every slot busy waits in llama-server's queue.

The slots share one unified KV cache (-kvu): each request may use the whole context (what we
advertise as its limit), and the slots together hold as many tokens as the context. Without -kvu
llama.cpp would give each slot context / N, shrinking one request's usable context N-fold. With it a
slot costs almost nothing by itself (the sliding-window cache of a model with one holds a window
per slot: context_size.swa_cache_tokens), so the slot count is chosen from the context the slots
share: at least SHARED_TOKENS_PER_SLOT each on average, between MIN_AUTO_SLOTS and MAX_AUTO_SLOTS.
When the busy slots together fill the shared cache, our llama.cpp patch 0003 stops the newest
request (a 503) so the others go on; stock llama-server fails them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.runner.context_size import LLAMA_SERVER_SLOTS, choose_context_tokens, whole_input_batches
from services.runner.gguf_meta import ModelTraits

AUTO_SLOTS = 0  # --parallel 0 / ProcessSpec.parallel_slots 0: chosen here
# llama-server's own `-np auto`: what a small context still gets (the unified cache lets each of
# them use all of it, one at a time).
MIN_AUTO_SLOTS = LLAMA_SERVER_SLOTS
# Past 16 streams a CPU decode step stops being weight-bound (16 x 512-wide activations), and the
# logits buffer llama.cpp reserves per slot (vocabulary x 4 bytes: 1 MiB for Gemma's 262k) grows.
MAX_AUTO_SLOTS = 16
# A chat turn with a system prompt and a short history: 1-2k tokens. Each slot gets that much of the
# shared cache on average, so N short requests fit side by side while one long one can still use all.
SHARED_TOKENS_PER_SLOT = 2048
# llama.cpp's LLAMA_MAX_SEQ: the most sequences one context holds.
MAX_SLOTS = 256


class SlotsError(ValueError):
    """A slot count llama-server cannot run."""


@dataclass(frozen=True)
class ServerLayout:
    """What one llama-server runs with: -c (shared by the slots) and -np."""

    context_tokens: int
    slots: int


def auto_slots(context_tokens: int) -> int:
    """The slot count for `context_tokens` of shared context (module docstring)."""
    return max(MIN_AUTO_SLOTS, min(MAX_AUTO_SLOTS, context_tokens // SHARED_TOKENS_PER_SLOT))


def choose_layout(
    traits: ModelTraits, requested_context: int, requested_slots: int, memory_budget_bytes: int
) -> ServerLayout:
    """The context and slots of a llama-server.

    `requested_slots` > 0 (--parallel) is taken as given; 0 chooses from the context the memory
    budget leaves (context_size.choose_context_tokens), then sizes that context again for the
    chosen slots (a sliding-window cache grows by a window per slot; other models' caches do not).
    Embedding and rerank models keep llama-server's own slots: their context is one input's batch.
    """
    if requested_slots < 0 or requested_slots > MAX_SLOTS:
        raise SlotsError(f"parallel slots must be 0 (automatic) to {MAX_SLOTS}, not {requested_slots}")
    if whole_input_batches(traits):
        context = choose_context_tokens(traits, requested_context, memory_budget_bytes)
        return ServerLayout(context, LLAMA_SERVER_SLOTS)
    slots = requested_slots
    if slots == AUTO_SLOTS:
        slots = auto_slots(choose_context_tokens(traits, requested_context, memory_budget_bytes))
    return ServerLayout(choose_context_tokens(traits, requested_context, memory_budget_bytes, slots), slots)


def slot_args(traits: ModelTraits, layout: ServerLayout) -> list[str]:
    """-np and -kvu for a chat model (an explicit -np turns llama-server's default -kvu off)."""
    if whole_input_batches(traits):
        return []
    return ["-np", str(layout.slots), "-kvu"]
