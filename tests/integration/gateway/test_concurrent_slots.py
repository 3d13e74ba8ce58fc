"""N concurrent requests to one model are decoded together (services/runner/slots.py).

A real llama-server on Gemma 270M, started with the runner's own command line (its -np and -kvu),
behind the real gateway: four streamed completions all receive tokens before any of them finishes,
llama-server's /slots shows four processing at once, and /v1/models says how many slots there are.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from services.gateway.routing import RoutingTable
from tests.integration.gateway.conftest import GatewayThread, LlamaServer, runner_argv, runner_server_table

MODEL = "gemma-slots"
CONTEXT_TOKENS = 8192  # 4 slots of 2048 on average (slots.auto_slots), each may use all 8192
STREAMS = 4
# Long enough that the four streams overlap however the two cores are shared; ignore_eos keeps
# every stream going to the end.
STREAM_TOKENS = 48
THREADS = 2
HTTP_TIMEOUT_S = 120.0
SLOTS_POLL_S = 0.05


@pytest.fixture(scope="module")
def slots_server(
    llama_bin_dir: Path, gemma_path: Path, start_model_server: Callable[[Path, str, list[str]], LlamaServer]
) -> LlamaServer:
    argv = runner_argv(MODEL, gemma_path, llama_bin_dir, CONTEXT_TOKENS, THREADS)
    return start_model_server(gemma_path, MODEL, argv)


@pytest.fixture(scope="module")
def gateway_table(slots_server: LlamaServer, gemma_path: Path) -> RoutingTable:
    return runner_server_table(MODEL, slots_server.port, gemma_path, CONTEXT_TOKENS)


async def _stream(client: httpx.AsyncClient, url: str, index: int) -> tuple[float, float, int]:
    """(first token, end) times of one streamed completion, and how many chunks carried text."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Count from {index} upwards, one number a line."}],
        "max_tokens": STREAM_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    first, chunks = 0.0, 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[len("data: ") :])["choices"][0]["delta"]
            if delta.get("content"):
                chunks += 1
                first = first or time.monotonic()
    return first, time.monotonic(), chunks


async def _most_processing(client: httpx.AsyncClient, url: str, done: asyncio.Event) -> int:
    """The most slots llama-server reported busy at once while the streams ran."""
    most = 0
    while not done.is_set():
        slots = (await client.get(url + "/slots")).json()
        most = max(most, sum(1 for slot in slots if slot["is_processing"]))
        await asyncio.sleep(SLOTS_POLL_S)
    return most


async def _run_streams(gateway_url: str, server_url: str) -> tuple[list[tuple[float, float, int]], int]:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
        done = asyncio.Event()
        watcher = asyncio.create_task(_most_processing(client, server_url, done))
        results = await asyncio.gather(*(_stream(client, gateway_url, i) for i in range(STREAMS)))
        done.set()
        return list(results), await watcher


def test_four_streams_are_decoded_together(slots_server: LlamaServer, gateway: GatewayThread) -> None:
    slots = httpx.get(slots_server.base_url + "/slots", timeout=HTTP_TIMEOUT_S).json()
    assert len(slots) == STREAMS
    assert all(slot["n_ctx"] == CONTEXT_TOKENS for slot in slots)  # unified: each may use all of it

    results, most_processing = asyncio.run(_run_streams(gateway.base_url, slots_server.base_url))

    assert all(chunks >= STREAM_TOKENS // 2 for _, _, chunks in results), results
    last_first_token = max(first for first, _, _ in results)
    first_finish = min(end for _, end, _ in results)
    assert last_first_token < first_finish, "a stream waited for another to finish"
    assert most_processing == STREAMS


def test_models_list_shows_the_slots(gateway: GatewayThread) -> None:
    models = httpx.get(gateway.base_url + "/v1/models", timeout=HTTP_TIMEOUT_S).json()["data"]
    [model] = [m for m in models if m["id"] == MODEL]
    assert model["meshllm"]["slots"] == STREAMS
    assert model["meshllm"]["context_tokens"] == CONTEXT_TOKENS
