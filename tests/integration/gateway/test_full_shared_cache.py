"""A full shared KV cache stops the newest request, not every request (llama.cpp patch 0003).

The runner starts chat llama-servers with slots over one unified cache (-kvu, services/runner/slots.py):
each request may use the whole context, so several long ones can fill it together. Stock llama-server
then fails every request in the batch ("Context size has been exceeded", a 500 each, and clears
their caches). Patched, the newest request is stopped with a 503 that says why (OpenAI's and
Anthropic's SDKs retry a 503) and the others go on to their end.

A real llama-server on SmolLM2-135M with the runner's own command line for a 1,024-token context
(4 slots), behind the real gateway; four requests sent 0.3 s apart. Without speculation they decode
at one pace: four of ~500 tokens (prompt + 480 generated) need ~2,000 cells, the cache is full at
~256 each and again at ~341, so the two newest are stopped and the two oldest finish. With n-gram
speculation (a node's default) one request may run twice as fast as the others and end before the
cache fills, so there each needs ~700 (two never fit together): the oldest always finishes, and the
stops happen while the others have drafts in the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from services.gateway.routing import RoutingTable
from tests.integration.gateway.conftest import GatewayThread, LlamaServer, runner_argv, runner_server_table

MODEL = "smollm2-small-cache"
CONTEXT_TOKENS = 1024
REQUESTS = 4
# Tokens each request generates: 4 x (~20 prompt + 480) > 1024 > 2 x (~20 + 480) at one pace; with
# n-gram speculation 2 x (~20 + 680) > 1024.
GENERATED_TOKENS = {"off": 480, "ngram": 680}
# Requests that finish, at least: at one pace the cache holds two to their end.
FINISHED_AT_LEAST = {"off": 2, "ngram": 1}
SEND_GAP_S = 0.3  # so that "the newest" is well defined: request i is sent i x 0.3 s after the first
THREADS = 2
HTTP_TIMEOUT_S = 180.0


@pytest.fixture(scope="module", params=["off", "ngram"])
def speculation(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def small_cache_server(
    llama_bin_dir: Path,
    smollm2_path: Path,
    speculation: str,
    start_model_server: Callable[[Path, str, list[str]], LlamaServer],
) -> LlamaServer:
    argv = runner_argv(MODEL, smollm2_path, llama_bin_dir, CONTEXT_TOKENS, THREADS, speculation)
    assert ("--spec-type" in argv) == (speculation == "ngram")
    assert "-kvu" in argv and argv[argv.index("-np") + 1] == str(REQUESTS)  # the runner's shared cache
    return start_model_server(smollm2_path, f"{MODEL}-{speculation}", argv)


@pytest.fixture(scope="module")
def gateway_table(small_cache_server: LlamaServer, smollm2_path: Path) -> RoutingTable:
    return runner_server_table(MODEL, small_cache_server.port, smollm2_path, CONTEXT_TOKENS)


def _chat(url: str, index: int, max_tokens: int) -> httpx.Response:
    time.sleep(index * SEND_GAP_S)
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Tell story number {index} about a lighthouse."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,  # only the cap ends it: every request needs its full share of the cache
    }
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=HTTP_TIMEOUT_S)


def test_a_full_shared_cache_stops_the_newest_request_and_the_others_finish(
    gateway: GatewayThread, speculation: str
) -> None:
    tokens = GENERATED_TOKENS[speculation]
    with ThreadPoolExecutor(REQUESTS) as pool:
        responses = list(pool.map(lambda i: _chat(gateway.base_url, i, tokens), range(REQUESTS)))

    finished = [r for r in responses if r.status_code == 200]
    stopped = [r for r in responses if r.status_code == 503]
    assert len(finished) + len(stopped) == REQUESTS, [(r.status_code, r.text[:200]) for r in responses]
    assert responses[0].status_code == 200, responses[0].text  # the oldest is never stopped while others run
    for response in finished:
        body = response.json()
        assert body["usage"]["completion_tokens"] == tokens, body
        assert body["choices"][0]["finish_reason"] == "length", body
    assert len(finished) >= FINISHED_AT_LEAST[speculation], [r.status_code for r in responses]
    assert stopped, f"four requests of {tokens} tokens fit in a 1,024-token cache?"
    for response in stopped:
        message = response.json()["error"]["message"]
        assert "shared context" in message and "retry" in message, message


def test_the_server_serves_again_after_it_stopped_a_request(gateway: GatewayThread) -> None:
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda i: _chat(gateway.base_url, i, 64), range(2)))
    assert [r.status_code for r in responses] == [200, 200], [r.text[:200] for r in responses]
    assert all(r.json()["usage"]["completion_tokens"] == 64 for r in responses)
