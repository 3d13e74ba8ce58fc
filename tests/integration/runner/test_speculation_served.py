"""Speculative decoding through the real runner service and real llama-servers on the embedded SmolLM2:
the same text at temperature 0 with n-gram, with a draft model and without any; a draft with another
vocabulary is dropped under `auto` and fails the model under `draft`. The draft is a tiny random
GGUF with SmolLM2's tokenizer copied in (tests/support/tiny_gguf.py): llama-server accepts it, and
its guesses are ~never right, which is what `auto` must survive.

The same-text check runs every server on one thread (ProcessSpec.threads 1). llama.cpp does not
promise batch-invariant numerics ("we use different kernels for different batch sizes",
ggml-org/llama.cpp#23335), and on this CPU build with two threads its flash attention splits the
work by thread: `off` on -t 1 and `off` on -t 2 already answer differently after the copied
function, and n-gram's batched verification differs again (measured on this prompt; with
`-fa off` the threads agree but batched verification does not). On one thread, flash attention
on, the kernels agree, so any difference left is ours: a wrong draft, a wrong pairing, a
verification that accepts what the model would not have said."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from services.proto.meshllm.runner.v1 import runner_pb2 as pb
from tests.integration.runner.test_runner_service import RunnerProcess, runner  # noqa: F401 (fixture)
from tests.support.tiny_gguf import write_tiny_draft_gguf

pytestmark = pytest.mark.integration

READY_TIMEOUT_S = 120.0
FAILED_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 300.0
MAX_TOKENS = 48
# Output that copies the input: where n-gram speculation drafts (and must not change a token).
CODE_LINES = "\n".join(f"    total += price(items[{i}], rate)" for i in range(20))
CODE_PROMPT = (
    "Repeat this Python function exactly, then stop.\n\n```python\ndef total_price(items, rate):\n"
    f"    total = 0\n{CODE_LINES}\n    return total\n```"
)


@pytest.fixture(scope="module")
def smollm2_draft(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_draft_gguf(tmp_path_factory.mktemp("draft") / "smollm2-draft.gguf", smollm2_path)


def spec(key: str, model_path: Path, speculation: str, draft: Path | None = None) -> pb.ProcessSpec:
    return pb.ProcessSpec(
        key=key,
        kind=pb.PROCESS_KIND_LLAMA_SERVER,
        model=key,
        model_path=str(model_path),
        context_size=2048,
        parallel_slots=1,
        speculation=speculation,
        draft_model_path=str(draft or ""),
        threads=1,  # where llama.cpp's CPU kernels are batch-invariant (the module's docstring)
    )


def complete(process: pb.ProcessStatus) -> tuple[str, dict[str, int]]:
    body = {
        "messages": [{"role": "user", "content": CODE_PROMPT}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    }
    response = httpx.post(
        f"http://127.0.0.1:{process.port}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {process.api_key}"},
        timeout=REQUEST_TIMEOUT_S,
    )
    response.raise_for_status()
    reply = response.json()
    return str(reply["choices"][0]["message"]["content"]), reply["timings"]


def test_same_text_with_and_without_speculation(
    runner: RunnerProcess,  # noqa: F811
    smollm2_path: Path,
    smollm2_draft: Path,
) -> None:
    specs = {
        "off": spec("off", smollm2_path, "off"),
        "ngram": spec("ngram", smollm2_path, "ngram"),
        "draft": spec("draft", smollm2_path, "draft", smollm2_draft),
        "auto": spec("auto", smollm2_path, "auto"),  # n-gram (speculation.py)
    }
    runner.apply(*specs.values())
    ready = {key: runner.wait_state(key, pb.PROCESS_STATE_READY, READY_TIMEOUT_S) for key in specs}
    assert {key: p.speculation for key, p in ready.items()} == {
        "off": "off",
        "ngram": "ngram",
        "draft": "draft",
        "auto": "ngram",
    }
    assert ready["auto"].speculation_reason == "auto: n-gram"
    assert ready["draft"].draft_model_path == str(smollm2_draft)
    replies = {key: complete(process) for key, process in ready.items()}
    texts = {key: text for key, (text, _) in replies.items()}
    assert texts["off"] and "total += price" in texts["off"]  # it copies the function
    assert texts["ngram"] == texts["off"]
    assert texts["draft"] == texts["off"]
    assert texts["auto"] == texts["off"]
    assert replies["off"][1].get("draft_n", 0) == 0
    # It really speculated: n-gram drafted from the prompt, and those drafts were accepted.
    assert replies["ngram"][1]["draft_n"] > 0 and replies["ngram"][1]["draft_n_accepted"] > 0


def test_draft_of_another_vocabulary(
    runner: RunnerProcess,  # noqa: F811
    tiny_gguf: Path,
    smollm2_draft: Path,
) -> None:
    """The tiny GGUF's 300-token vocabulary is not SmolLM2's: auto drops the draft (keeping n-gram)
    and says why, `draft` fails the model in one line."""
    runner.apply(
        spec("auto", tiny_gguf, "auto", smollm2_draft), spec("forced", tiny_gguf, "draft", smollm2_draft)
    )
    auto = runner.wait_state("auto", pb.PROCESS_STATE_READY, READY_TIMEOUT_S)
    assert auto.speculation == "ngram" and not auto.draft_model_path
    assert "vocabulary differs" in auto.speculation_reason
    forced = runner.wait_state("forced", pb.PROCESS_STATE_FAILED, FAILED_TIMEOUT_S)
    assert "vocabulary differs" in forced.last_error and "\n" not in forced.last_error
