"""Which chat template llama-server renders a model's conversations with: the GGUF's own, or one we ship.

What the pinned llama.cpp does (common/chat.cpp, with --jinja): before rendering it fixes the messages
up for what the template can take, judged by rendering probe conversations (common/jinja/caps.cpp):
`developer` becomes `system`; content parts are joined into one string for a template that only
takes strings; null content becomes ""; a first system message is merged into the next one when the
template ignores system. Nothing else: a template that raises (`raise_exception`) fails the request
with a 400, and a template that never reads `tool_calls` or `tools` leaves them out of the prompt.
It also renders probe conversations with and without tool calls to derive the reply parser; when our
template writes a call as a JSON block between fixed markers, llama.cpp turns such a block in the
model's reply into OpenAI `tool_calls` (and constrains it by a grammar once it starts).

Measured with the pinned llama-server on the conversations agents send (system or developer messages
anywhere, repeated roles, tool calls and results, content parts, a `tools` array;
tests/integration/runner/test_chat_templates_served.py):
- Google's Gemma templates (1, 2, 3, 3n) raise "Conversation roles must alternate" on a tool result,
  two user turns, or a system message past the first: every agent fails at its first tool call.
  templates/gemma.jinja replaces them, whether or not the GGUF has one (the packaged Gemma 3 270M has
  none). The rule is by architecture, so a Gemma GGUF with a tool-aware template of its own
  (FunctionGemma's) gets ours too.
- Plain ChatML templates (SmolLM2's, the tiny test GGUF's, and llama.cpp's stand-in for a GGUF
  without any) accept all of it, but the model never sees the tools, nor its own earlier calls: the
  assistant turn is empty, and SmolLM2 then answers two tool results with nothing. templates/
  chatml.jinja shows both, Hermes-style, and SmolLM2 answers from the results. It replaces the
  stand-in, and an embedded ChatML template that does not read `tool_calls` (SmolLM2's).
"""

from __future__ import annotations

GEMMA_TEMPLATE = "gemma.jinja"
CHATML_TEMPLATE = "chatml.jinja"
GEMMA_ARCHITECTURES = frozenset({"gemma", "gemma2", "gemma3", "gemma3n"})
CHATML_TURN_START = "<|im_start|>"


def shipped_template(architecture: str, has_template: bool, template_text: str = "") -> str | None:
    """The file name under templates/ to use instead of the GGUF's own template, or None.

    `template_text` is the GGUF's `tokenizer.chat_template` when the caller has it ("" when unknown).
    """
    if architecture in GEMMA_ARCHITECTURES:
        return GEMMA_TEMPLATE
    if not has_template or is_tool_blind_chatml(template_text):
        return CHATML_TEMPLATE
    return None


def is_tool_blind_chatml(template_text: str) -> bool:
    """ChatML turns, and nothing that renders an assistant's tool calls."""
    return CHATML_TURN_START in template_text and "tool_calls" not in template_text
