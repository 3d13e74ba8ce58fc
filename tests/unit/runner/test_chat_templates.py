"""The chat templates we ship, rendered with jinja2 the way Hugging Face renders them, and which one a
GGUF gets (services/runner/chat_templates.py). tests/integration/runner/test_chat_templates_served.py
runs the same kinds of conversation through llama.cpp's own jinja engine."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from services.runner.chat_templates import shipped_template
from services.runner.commands import TEMPLATES_DIR, chat_template_args
from services.runner.gguf_meta import ModelTraits
from tests.support.agent_turns import CALL, WEATHER_TOOL

Message = dict[str, Any]
TURN = re.compile(r"<start_of_turn>(user|model)\n(.*?)<end_of_turn>\n", re.DOTALL)
CHATML_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>\n", re.DOTALL)
# SmolLM2-135M-Instruct's embedded template, verbatim: ChatML that never reads tool_calls or tools.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def user(text: str) -> Message:
    return {"role": "user", "content": text}


def assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}


def system(text: str) -> Message:
    return {"role": "system", "content": text}


def tool_result(call_id: str, text: str) -> Message:
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def render(
    messages: list[Message], add_generation_prompt: bool = True, template: str = "gemma.jinja", **extra: Any
) -> str:
    # As transformers' apply_chat_template: a sandbox, trim_blocks/lstrip_blocks, json.dumps as tojson.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda value: json.dumps(value, ensure_ascii=False)
    env.globals["raise_exception"] = raise_exception
    compiled = env.from_string((TEMPLATES_DIR / template).read_text())
    return compiled.render(
        messages=messages, bos_token="<bos>", add_generation_prompt=add_generation_prompt, **extra
    )


def chatml(messages: list[Message], add_generation_prompt: bool = True, **extra: Any) -> str:
    return render(messages, add_generation_prompt, template="chatml.jinja", **extra)


def chatml_turns(prompt: str) -> list[tuple[str, str]]:
    body = prompt.removesuffix("<|im_start|>assistant\n")
    found = [(m.group(1), m.group(2)) for m in CHATML_TURN.finditer(body)]
    assert "".join(m.group(0) for m in CHATML_TURN.finditer(body)) == body, "text outside the turns"
    return found


def turns(prompt: str) -> list[tuple[str, str]]:
    assert prompt.startswith("<bos>")
    body = prompt.removeprefix("<bos>").removesuffix("<start_of_turn>model\n")
    found = [(m.group(1), m.group(2)) for m in TURN.finditer(body)]
    assert "".join(m.group(0) for m in TURN.finditer(body)) == body, "text outside the turns"
    return found


def assert_alternates(prompt: str) -> list[tuple[str, str]]:
    found = turns(prompt)
    roles = [role for role, _ in found]
    assert all(a != b for a, b in itertools.pairwise(roles)), roles
    return found


AGENT_CONVERSATIONS: dict[str, list[Message]] = {
    "system first": [system("Be brief."), user("Hi")],
    "developer first": [{"role": "developer", "content": "Be brief."}, user("Hi")],
    "system in the middle": [user("Hi"), assistant("Hello"), system("Answer in French."), user("Bye")],
    "two systems": [system("Be brief."), system("Be kind."), user("Hi")],
    "system last": [user("Hi"), assistant("Hello"), system("Wrap up.")],
    "user, user": [user("Hi"), user("Are you there?")],
    "assistant, assistant": [user("Hi"), assistant("Hello"), assistant("How can I help?"), user("Bye")],
    "tool round trip": [
        user("Weather in Paris?"),
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        tool_result("call_1", "18C sunny"),
        assistant("It is 18C."),
        user("Thanks"),
    ],
    "parallel calls": [
        user("Weather?"),
        {"role": "assistant", "content": "", "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
        tool_result("call_1", "18C"),
        tool_result("call_2", "19C"),
    ],
    "content parts everywhere": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
        {"role": "tool", "tool_call_id": "x", "content": [{"type": "text", "text": "18C"}]},
    ],
}


@pytest.mark.parametrize("name", AGENT_CONVERSATIONS)
def test_agent_conversations_become_alternating_gemma_turns(name: str) -> None:
    prompt = render(AGENT_CONVERSATIONS[name], tools=[WEATHER_TOOL])
    found = assert_alternates(prompt)
    assert prompt.endswith("<end_of_turn>\n<start_of_turn>model\n")
    for message in AGENT_CONVERSATIONS[name]:
        content = message["content"]
        texts = [content] if isinstance(content, str) else [p["text"] for p in content or []]
        for text in filter(None, texts):
            assert any(text in turn for _, turn in found), f"{text!r} lost"


def test_an_alternating_conversation_renders_as_googles_template_does() -> None:
    prompt = render([system("Be brief."), user("Hi"), assistant(" Hello! "), user("Bye")])
    assert prompt == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_system_text_joins_the_user_turn_it_stands_in() -> None:
    found = turns(render([user("Hi"), assistant("Hello"), system("Answer in French."), user("Bye")]))
    assert found[-1] == ("user", "Answer in French.\n\nBye")
    assert turns(render([user("Hi"), assistant("Hello"), system("Wrap up.")]))[-1] == ("user", "Wrap up.")


def test_messages_of_one_side_share_a_turn() -> None:
    found = turns(render([user("Hi"), user("Are you there?"), assistant("Yes."), assistant("Ask away.")]))
    assert found == [("user", "Hi\n\nAre you there?"), ("model", "Yes.\n\nAsk away.")]


def test_tool_calls_are_json_blocks_and_results_name_their_call() -> None:
    found = turns(render(AGENT_CONVERSATIONS["parallel calls"]))
    model_turn, results_turn = found[1][1], found[2][1]
    calls = re.findall(r"```tool_call\n(.*?)\n```", model_turn)
    assert [json.loads(c) for c in calls] == [{"name": "get_weather", "arguments": {"city": "Paris"}}] * 2
    assert results_turn == (
        "Tool result of get_weather:\n```tool_output\n18C\n```\n\n"
        "Tool result of get_weather:\n```tool_output\n19C\n```"
    )


def test_object_arguments_and_text_before_a_call() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": {"q": "é"}}}
    found = turns(
        render([user("Go"), {"role": "assistant", "content": "Let me look.", "tool_calls": [call]}])
    )
    assert found[1] == ("model", 'Let me look.\n```tool_call\n{"name": "f", "arguments": {"q": "é"}}\n```')


def test_offered_tools_open_the_first_user_turn_as_json_schemas() -> None:
    found = turns(render([system("Be brief."), user("Weather in Paris?")], tools=[WEATHER_TOOL]))
    first = found[0][1]
    assert json.loads(first.splitlines()[1]) == WEATHER_TOOL["function"]
    assert "```tool_call" in first and first.endswith("Be brief.\n\nWeather in Paris?")
    assert len(found) == 1


def test_no_tools_no_tool_instructions() -> None:
    assert "tool" not in render([user("Hi")], tools=None)
    assert "tool" not in render([user("Hi")], tools=[])


def test_generation_prompt_only_when_asked() -> None:
    conversation = [user("Hi"), assistant("Hello")]
    assert render(conversation, add_generation_prompt=True).endswith(
        "Hello<end_of_turn>\n<start_of_turn>model\n"
    )
    assert render(conversation, add_generation_prompt=False).endswith("Hello<end_of_turn>\n")


@pytest.mark.parametrize("name", AGENT_CONVERSATIONS)
def test_chatml_keeps_every_message_in_a_turn(name: str) -> None:
    found = chatml_turns(chatml(AGENT_CONVERSATIONS[name], tools=[WEATHER_TOOL]))
    for message in AGENT_CONVERSATIONS[name]:
        content = message["content"]
        texts = [content] if isinstance(content, str) else [p["text"] for p in content or []]
        for text in filter(None, texts):
            assert any(text in turn for _, turn in found), f"{text!r} lost"


def test_chatml_of_a_plain_conversation_is_plain_chatml() -> None:
    prompt = chatml([system("Be brief."), user("Hi"), assistant("Hello!"), user("Bye")])
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chatml([user("Hi")], add_generation_prompt=False) == "<|im_start|>user\nHi<|im_end|>\n"


def test_chatml_shows_calls_and_groups_their_results() -> None:
    found = chatml_turns(chatml(AGENT_CONVERSATIONS["parallel calls"]))
    assert [role for role, _ in found] == ["user", "assistant", "user"]
    calls = re.findall(r"<tool_call>\n(.*?)\n</tool_call>", found[1][1])
    assert [json.loads(c) for c in calls] == [{"name": "get_weather", "arguments": {"city": "Paris"}}] * 2
    assert found[2][1] == "<tool_response>\n18C\n</tool_response>\n<tool_response>\n19C\n</tool_response>"


def test_chatml_lists_offered_tools_in_the_first_system_turn() -> None:
    found = chatml_turns(chatml([system("Be brief."), user("Weather?")], tools=[WEATHER_TOOL]))
    assert [role for role, _ in found] == ["system", "user"]
    first = found[0][1]
    assert first.startswith("Be brief.\n\n# Tools")
    tools = re.search(r"<tools>\n(.*?)\n</tools>", first, re.DOTALL)
    assert tools is not None and json.loads(tools.group(1)) == WEATHER_TOOL["function"]
    assert "tool" not in chatml([user("Hi")], tools=None)


def test_gemma_gguf_gets_our_template_even_with_its_own() -> None:
    """Google's Gemma templates raise on tool results and repeated roles (see chat_templates.py)."""
    ours = ["--jinja", "--chat-template-file", str(TEMPLATES_DIR / "gemma.jinja")]
    for architecture in ("gemma", "gemma2", "gemma3", "gemma3n"):
        assert chat_template_args(ModelTraits(architecture, has_chat_template=True)) == ours
        assert chat_template_args(ModelTraits(architecture, has_chat_template=False)) == ours


def test_a_gguf_without_a_template_gets_tool_aware_chatml() -> None:
    """Instead of llama.cpp's built-in ChatML, which leaves tools and tool calls out."""
    args = chat_template_args(ModelTraits("mystery", has_chat_template=False))
    assert args == ["--jinja", "--chat-template-file", str(TEMPLATES_DIR / "chatml.jinja")]


def test_a_gguf_with_its_own_template_keeps_it() -> None:
    assert chat_template_args(ModelTraits("llama", has_chat_template=True)) == ["--jinja"]


def test_tool_blind_chatml_is_replaced_once_its_text_is_known() -> None:
    assert shipped_template("llama", True, SMOLLM2_TEMPLATE) == "chatml.jinja"
    tool_aware = SMOLLM2_TEMPLATE.replace(
        "{% endfor %}", "{% if message.tool_calls %}x{% endif %}{% endfor %}"
    )
    assert shipped_template("qwen2", True, tool_aware) is None
    assert shipped_template("llama", True, "{{ '<|start_header_id|>' }}") is None
