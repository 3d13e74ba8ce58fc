"""Gemma 3 270M split over two real nodes (issue 4): real text, the stock split's exact completion,
zero weight bytes on the mesh, and a worker killed mid-generation.

Each node has its own copy of the GGUF and --max-vram for 0.6 of it, so neither runs it alone.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.mesh.gguf_index import read_gguf_index
from tests.support.node import RunningNode, free_port, wait_until
from tests.support.split import completion, copies_of, host_argv, plan_text, split_mesh, stock_split, tunnels

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m-q4_k_m"  # the file stem: what the nodes call a model given by path
READY_TIMEOUT_S = 180.0
ERROR_DEADLINE_S = 15.0
REPLAN_DEADLINE_S = 15.0


def answers(node: RunningNode) -> bool:
    try:
        return bool(completion(node.api_base, MODEL, max_tokens=2))
    except (AssertionError, httpx.HTTPError):
        return False


@pytest.fixture(scope="module")
def gemma_pair(tmp_path_factory: pytest.TempPathFactory, gemma_path: Path) -> Iterator[list[RunningNode]]:
    root = tmp_path_factory.mktemp("gemma-split")
    disks = copies_of(gemma_path, root, ["g0", "g1"])
    vram = f"{gemma_path.stat().st_size * 0.6 / 1e9:.6f}"
    nodes: list[RunningNode] = []

    def start(name: str, extra: list[str]) -> RunningNode:
        args = ["--name", name, "--model", str(disks[name]), "--max-vram", vram, *extra]
        return RunningNode(root / name, free_port(), free_port(), args).start()

    try:
        nodes.append(start("g0", []))
        wait_until(lambda: "Ctrl-C" in nodes[0].cli_output(), 60, "the first node to start")
        nodes.append(start("g1", ["--join", nodes[0].invite()]))
        for node in nodes:
            wait_until(lambda n=node: answers(n), READY_TIMEOUT_S, f"{node.home.name} to serve the split")
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def roles(nodes: list[RunningNode]) -> tuple[RunningNode, RunningNode]:
    [host] = [n for n in nodes if "split_host" in plan_text(n)]
    [worker] = [n for n in nodes if n is not host]
    return host, worker


def test_both_nodes_answer_with_the_stock_splits_completion(
    gemma_pair: list[RunningNode], llama_bin_dir: Path, tmp_path: Path
) -> None:
    host, _ = roles(gemma_pair)
    with stock_split(host, llama_bin_dir, tmp_path) as stock_api:
        expected = completion(stock_api, MODEL, max_tokens=24)
    assert len(expected.split()) >= 5  # real words, not an empty or broken generation
    for node in gemma_pair:
        assert completion(node.api_base, MODEL, max_tokens=24) == expected


def test_loading_the_split_sent_no_weight_bytes(gemma_pair: list[RunningNode], gemma_path: Path) -> None:
    host, worker = roles(gemma_pair)
    [to_worker] = [t for t in tunnels(host) if t.host_side]
    assert to_worker.weight_bytes_raw == 0
    # The worker holds the last `-ngl - 1` blocks and the final norm (the output matrix stays on
    # the CPU host): exactly their tensors were loaded, each from the worker's own copy...
    argv = host_argv(host)
    offloaded = int(argv[argv.index("-ngl") + 1]) - 1
    index = read_gguf_index(gemma_path)
    layers = 1 + max(int(name.split(".")[1]) for name in index.tensors if name.startswith("blk."))
    on_worker = {f"blk.{i}." for i in range(layers - offloaded, layers)}
    expected = index.tensors["output_norm.weight"].size + sum(
        e.size for name, e in index.tensors.items() if name[: name.index(".", 4) + 1] in on_worker
    )
    assert 0 < offloaded < layers
    assert to_worker.weight_bytes_by_reference == expected
    # ...while all the host ever sent it (load and every request so far) is a few MB.
    assert to_worker.bytes_to_peer < expected * 0.2
    [from_host] = [t for t in tunnels(worker) if not t.host_side]
    assert from_host.bytes_from_peer == to_worker.bytes_to_peer


def test_killing_the_worker_mid_generation_ends_the_request_and_the_host_replans(
    gemma_pair: list[RunningNode],
) -> None:
    host, worker = roles(gemma_pair)
    events: list[str] = []
    done = threading.Event()

    def long_stream() -> None:
        body = {"model": MODEL, "prompt": "Count:", "max_tokens": 4000, "stream": True, "ignore_eos": True}
        try:
            with httpx.stream("POST", f"{host.api_base}/completions", json=body, timeout=60) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        events.append(line[6:])
        except httpx.HTTPError as exc:
            events.append(f"transport error: {exc!r}")
        finally:
            done.set()

    threading.Thread(target=long_stream, daemon=True).start()
    wait_until(lambda: len(events) > 5, 60, "the split to be streaming")
    worker.kill_hard()
    killed_at = time.monotonic()
    assert done.wait(ERROR_DEADLINE_S), "the in-flight request hung after its worker died"
    assert events[-1] != "[DONE]", "a request whose worker died must not look complete"
    last = json.loads(events[-1]) if events[-1].startswith("{") else {}
    assert "error" in last or events[-1].startswith("transport error"), events[-3:]

    # The host re-plans without the worker: alone it cannot hold the model, and says so.
    wait_until(
        lambda: "split_host" not in plan_text(host), REPLAN_DEADLINE_S, "the host to drop the dead worker"
    )
    assert "does not fit" in plan_text(host) or "waiting" in plan_text(host)
    reply = httpx.post(
        f"{host.api_base}/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2}, timeout=10
    )
    assert reply.status_code == 503 and "error" in reply.json(), reply.text
    assert time.monotonic() - killed_at < REPLAN_DEADLINE_S + ERROR_DEADLINE_S
    assert host.status().node_id  # the host node itself never went down

    # The worker comes back (same home, same identity): the split serves again.
    worker.start()
    wait_until(lambda: answers(host), READY_TIMEOUT_S, "the split to serve again")
    assert "split_host" in plan_text(host)


def test_three_nodes_split_gemma_like_the_stock_split(
    tmp_path_factory: pytest.TempPathFactory, gemma_path: Path, llama_bin_dir: Path, tmp_path: Path
) -> None:
    """0.4 of the model each: no two nodes hold 1.1×, so the host uses both others as workers."""
    nodes: list[RunningNode] = []
    try:
        split_mesh(tmp_path_factory.mktemp("gemma-trio"), gemma_path, 3, 0.4, nodes)
        [host] = [n for n in nodes if "split_host" in plan_text(n)]
        assert sum("split_worker" in plan_text(n) for n in nodes) == 2
        with stock_split(host, llama_bin_dir, tmp_path) as stock_api:
            expected = completion(stock_api, MODEL, max_tokens=24)
        assert len(expected.split()) >= 5
        for node in nodes:
            assert completion(node.api_base, MODEL, max_tokens=24) == expected
        to_workers = [t for t in tunnels(host) if t.host_side]
        assert len(to_workers) == 2 and all(
            t.weight_bytes_raw == 0 < t.weight_bytes_by_reference for t in to_workers
        )
    finally:
        for node in nodes:
            node.stop()
