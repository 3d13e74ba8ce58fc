"""Chat, embedding and rerank models through the runner service: real llama-server children started
from the runner's own argv, and the kind and context the runner reports for each."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from services.node.config import NodeConfig
from services.proto.meshllm.runner.v1 import runner_pb2 as pb
from services.proto.meshllm.runner.v1 import runner_pb2_grpc
from services.runner.context_size import (
    COMPUTE_RESERVE_BYTES,
    LLAMA_SERVER_UBATCH_TOKENS,
    PROMPT_CACHE_CAP_MIB,
    prompt_cache_mib,
)
from services.runner.gguf_meta import read_model_traits
from tests.support.tiny_gguf import (
    CONTEXT_LENGTH_TOKENS,
    ENCODER_CONTEXT_LENGTH_TOKENS,
    write_tiny_embedding_gguf,
    write_tiny_rerank_gguf,
)

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[3]
RUNNER_START_TIMEOUT_S = 20.0
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
HTTP_TIMEOUT_S = 10.0
EMBEDDING_WIDTH = 32
GIB = 1024**3
# The tiny llama (tests/support/tiny_gguf.py): 4 layers x 4 KV heads x (16 + 16) dims x 2 bytes,
# plus one f16 mask element per ubatch token.
TINY_CHAT_BYTES_PER_TOKEN = 4 * 4 * 32 * 2 + LLAMA_SERVER_UBATCH_TOKENS * 2


@dataclass
class Runner:
    stub: runner_pb2_grpc.RunnerStub
    home: Path
    log_path: Path

    def apply(self, *specs: pb.ProcessSpec) -> None:
        self.stub.Apply(pb.ApplyRequest(processes=list(specs)), timeout=30)

    def wait_for(self, key: str, predicate: Callable[[pb.ProcessStatus], bool]) -> pb.ProcessStatus:
        """Follow Watch until `key`'s status matches (the Watch deadline is the test's)."""
        last = None
        stream = self.stub.Watch(pb.WatchRequest(), timeout=READY_TIMEOUT_S)
        try:
            for status in stream:
                last = next((p for p in status.processes if p.spec.key == key), None)
                if last is not None and predicate(last):
                    return last
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
        finally:
            stream.cancel()
        raise AssertionError(f"{key} never matched; last:\n{last}\nrunner log: {self.log_path}")

    def wait_ready(self, key: str, pid_other_than: int = 0) -> pb.ProcessStatus:
        return self.wait_for(key, lambda p: p.state == pb.PROCESS_STATE_READY and p.pid != pid_other_than)


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory, llama_bin_dir: Path) -> Iterator[Runner]:
    root = tmp_path_factory.mktemp("kinds")
    home = root / "node"
    NodeConfig(home=home, llama_bin_dir=str(llama_bin_dir), log_level="debug").save()
    log_path = root / "runner.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.runner", "--home", str(home)],
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    channel = grpc.insecure_channel(f"unix://{home / 'run' / 'runner.sock'}")
    try:
        grpc.channel_ready_future(channel).result(timeout=RUNNER_START_TIMEOUT_S)
        yield Runner(runner_pb2_grpc.RunnerStub(channel), home, log_path)
    finally:
        process.terminate()  # the runner stops its children before it exits
        process.wait(timeout=STOP_TIMEOUT_S)
        channel.close()


def llama_spec(name: str, path: Path, context_size: int = 0, budget: int = 0) -> pb.ProcessSpec:
    return pb.ProcessSpec(
        key=f"llama-server/{name}",
        kind=pb.PROCESS_KIND_LLAMA_SERVER,
        model=name,
        model_path=str(path),
        context_size=context_size,
        memory_budget_bytes=budget,
    )


def auth(process: pb.ProcessStatus) -> dict[str, str]:
    """Every llama-server the runner starts requires its own key (ProcessStatus.api_key)."""
    return {"authorization": f"Bearer {process.api_key}"}


def post(process: pb.ProcessStatus, path: str, body: dict[str, object]) -> dict[str, object]:
    url = f"http://127.0.0.1:{process.port}{path}"
    response = httpx.post(url, json=body, headers=auth(process), timeout=HTTP_TIMEOUT_S)
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def served_context(process: pb.ProcessStatus) -> int:
    """The context llama-server itself says it runs (GET /v1/models: meta.n_ctx)."""
    url = f"http://127.0.0.1:{process.port}/v1/models"
    response = httpx.get(url, headers=auth(process), timeout=HTTP_TIMEOUT_S)
    response.raise_for_status()
    return int(response.json()["data"][0]["meta"]["n_ctx"])


def test_an_embedding_model_answers_vectors_of_its_width(runner: Runner, tmp_path: Path) -> None:
    path = write_tiny_embedding_gguf(tmp_path / "embed.gguf", n_embd=EMBEDDING_WIDTH)
    runner.apply(llama_spec("embed", path))
    ready = runner.wait_ready("llama-server/embed")
    assert ready.model_kind == pb.MODEL_KIND_EMBEDDING
    assert ready.context_tokens == ready.trained_context_tokens == ENCODER_CONTEXT_LENGTH_TOKENS
    answer = post(ready, "/v1/embeddings", {"model": "embed", "input": ["hello world", "a cat"]})
    vectors = [item["embedding"] for item in answer["data"]]  # type: ignore[attr-defined]
    assert [len(v) for v in vectors] == [EMBEDDING_WIDTH, EMBEDDING_WIDTH]
    # Mean-pooled and L2-normalized by llama-server; different inputs, different vectors.
    assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-3) for v in vectors)
    assert vectors[0] != vectors[1]
    assert served_context(ready) == ENCODER_CONTEXT_LENGTH_TOKENS


def test_a_reranker_scores_every_document(runner: Runner, tmp_path: Path) -> None:
    path = write_tiny_rerank_gguf(tmp_path / "rerank.gguf")
    runner.apply(llama_spec("rerank", path))
    ready = runner.wait_ready("llama-server/rerank")
    assert ready.model_kind == pb.MODEL_KIND_RERANK
    documents = ["a cat is an animal", "paris is in france", "zzz"]
    answer = post(ready, "/v1/rerank", {"model": "rerank", "query": "what is a cat", "documents": documents})
    results = answer["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2]  # type: ignore[attr-defined]
    scores = [r["relevance_score"] for r in results]  # type: ignore[attr-defined]
    assert all(math.isfinite(s) for s in scores) and len(set(scores)) == len(documents)


def test_a_chat_models_context_follows_its_memory_budget(runner: Runner, tiny_gguf: Path) -> None:
    key = "llama-server/chat"
    # Room for 3000 tokens past the reserve: 2816 after rounding down to a multiple of 256.
    tight = COMPUTE_RESERVE_BYTES + 3000 * TINY_CHAT_BYTES_PER_TOKEN
    runner.apply(llama_spec("chat", tiny_gguf, budget=tight))
    first = runner.wait_ready(key)
    assert first.model_kind == pb.MODEL_KIND_CHAT
    assert (first.context_tokens, first.trained_context_tokens) == (2816, CONTEXT_LENGTH_TOKENS)
    assert served_context(first) == 2816

    # A budget that moves but leads to the same context is taken without a restart.
    runner.apply(llama_spec("chat", tiny_gguf, budget=tight - 100 * TINY_CHAT_BYTES_PER_TOKEN))
    same = runner.wait_for(key, lambda p: p.spec.memory_budget_bytes != tight)
    assert (same.pid, same.state, same.context_tokens) == (first.pid, pb.PROCESS_STATE_READY, 2816)

    # Plenty of memory: the trained context, in a restarted process.
    runner.apply(llama_spec("chat", tiny_gguf, budget=4 * GIB))
    roomy = runner.wait_ready(key, pid_other_than=first.pid)
    assert roomy.context_tokens == CONTEXT_LENGTH_TOKENS == served_context(roomy)

    # --ctx-size wins, even past the trained context (the runner says so in its log); llama-server
    # still caps each slot at the trained context.
    runner.apply(llama_spec("chat", tiny_gguf, context_size=2 * CONTEXT_LENGTH_TOKENS, budget=0))
    asked = runner.wait_ready(key, pid_other_than=roomy.pid)
    assert asked.context_tokens == 2 * CONTEXT_LENGTH_TOKENS
    last_run = (runner.home / "logs" / "llama-server_chat.log").read_text().rsplit("mesh-llm runner: ", 1)[1]
    assert f" -c {2 * CONTEXT_LENGTH_TOKENS} " in last_run.splitlines()[0]
    assert served_context(asked) == CONTEXT_LENGTH_TOKENS
    assert "exceeds the 4096 tokens the model was trained on" in runner.log_path.read_text()


def started_cache_ram_mib(runner: Runner, name: str) -> int:
    """The --cache-ram of the last run the runner logged for llama-server/<name>."""
    log = (runner.home / "logs" / f"llama-server_{name}.log").read_text()
    argv = log.rsplit("mesh-llm runner: ", 1)[1].splitlines()[0].split()
    return int(argv[argv.index("--cache-ram") + 1])


def test_a_chat_models_prompt_cache_follows_its_memory_budget(runner: Runner, tiny_gguf: Path) -> None:
    key, traits = "llama-server/cached", read_model_traits(tiny_gguf)
    runner.apply(llama_spec("cached", tiny_gguf, budget=4 * GIB))
    roomy = runner.wait_ready(key)
    assert roomy.context_tokens == CONTEXT_LENGTH_TOKENS
    expected = prompt_cache_mib(traits, CONTEXT_LENGTH_TOKENS, 4 * GIB)
    assert started_cache_ram_mib(runner, "cached") == expected < PROMPT_CACHE_CAP_MIB

    # Less memory, the same context: a cache the new budget cannot hold takes a restart...
    runner.apply(llama_spec("cached", tiny_gguf, budget=2 * GIB))
    tighter = runner.wait_ready(key, pid_other_than=roomy.pid)
    assert started_cache_ram_mib(runner, "cached") == prompt_cache_mib(traits, CONTEXT_LENGTH_TOKENS, 2 * GIB)

    # ...more memory does not: the smaller cache it runs with still fits.
    runner.apply(llama_spec("cached", tiny_gguf, budget=3 * GIB))
    same = runner.wait_for(key, lambda p: p.spec.memory_budget_bytes == 3 * GIB)
    assert (same.pid, same.state) == (tighter.pid, pb.PROCESS_STATE_READY)
