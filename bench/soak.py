#!/usr/bin/env python3
"""Soak: many concurrent streaming chats for minutes, against one node and then a 3-node mesh in which
one server is killed (SIGKILL, every process of it: a machine losing power) and restarted midway.

Phase `single`: one node serving the embedded SmolLM2 model, `--streams` concurrent clients each
sending streaming chat completions back to back (each prompt unique, so llama-server's prompt cache
keeps filling) for `--seconds`.
Phase `mesh`: nodes a, b and c all serve the model (a takes every client request and spreads them
over the three replicas, services/gateway/replicas.py); b is SIGKILLed at a third of the run and
started again at half of it.

Per phase: requests, errors (a non-200, a broken stream, an error event), errors that failed in
the window from the kill until the restarted node serves again, plus SETTLE_S (streams that were
on b break then: the goal is 0 outside it), time to first token p50/p99, and the RSS of every
process of every node (grouped by program) after a warm-up and at the end, so growth beyond caches
sized by config shows. Prints one
JSON object. Nodes run on this machine, pinned to loopback (tests/support/node.py).

    .venv/bin/python bench/soak.py [--seconds 300] [--streams 64] [--max-tokens 16] [--phase all|single|mesh]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.node.catalog import resolve_model
from tests.support.node import RunningNode, free_port, wait_until

MODEL = "smollm2-135m"
WARMUP_S = 10.0
SETTLE_S = 5.0
REQUEST_TIMEOUT_S = 120.0
START_TIMEOUT_S = 180.0
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Tally:
    ttft_s: list[float] = field(default_factory=list)
    requests: int = 0
    errors: list[tuple[float, str]] = field(default_factory=list)  # (when it failed, what)
    started_at: dict[float, float] = field(default_factory=dict)  # failure time -> its request's start


def node_pids(home: Path) -> list[int]:
    """Every live process of the node at `home` (the CLI, supervisord, services, llama.cpp)."""
    marker = f"MESH_LLM_HOME={home}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return pids


def rss_by_program(homes: list[Path]) -> dict[str, float]:
    """MiB of resident memory per program name (llama-server, python services by module, …)."""
    totals: dict[str, float] = defaultdict(float)
    for home in homes:
        for pid in node_pids(home):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
            words = [a.decode(errors="replace") for a in argv if a]
            name = Path(words[0]).name if words else "?"
            if "-m" in words and name.startswith("python"):
                name = words[words.index("-m") + 1]  # services.gateway, services.mesh, …
            elif name.startswith("python") and len(words) > 1:
                name = Path(words[1]).name  # supervisord, mesh-llm
            totals[name] += pages * PAGE_BYTES / 2**20
    return {name: round(mib, 1) for name, mib in sorted(totals.items())}


def kill_node(node: RunningNode) -> int:
    """SIGKILL every process of the node at once (no goodbye, no cleanup)."""
    pids = node_pids(node.home)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if node.process is not None:
        node.process.wait(30)
    return len(pids)


async def one_stream(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int, tally: Tally) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    started = time.monotonic()
    first = None

    def failed(what: str) -> None:
        now = time.monotonic()
        tally.errors.append((now, what))
        tally.started_at[now] = started

    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                failed(f"HTTP {response.status_code}: {response.text[:120]}")
                return
            async for line in response.aiter_lines():
                if line.startswith('data: {"error"'):
                    failed(line[:160])
                    return
                if first is None and line.startswith("data: {"):
                    first = time.monotonic()
            if first is None:
                failed("stream ended without a chunk")
                return
    except httpx.HTTPError as exc:
        failed(f"{type(exc).__name__}: {exc}"[:160])
        return
    tally.requests += 1
    tally.ttft_s.append(first - started)


async def drive(url: str, streams: int, seconds: float, max_tokens: int) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds
    counter = iter(range(10**9))
    limits = httpx.Limits(max_connections=streams * 2, max_keepalive_connections=streams)

    async def client_loop(client: httpx.AsyncClient, index: int) -> None:
        while time.monotonic() < deadline:
            # A unique prompt each time: llama-server's prompt cache keeps filling, as in real use.
            prompt = f"Request {next(counter)} from client {index}: name three colours."
            await one_stream(client, url, prompt, max_tokens, tally)

    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        await asyncio.gather(*(client_loop(client, i) for i in range(streams)))
    return tally


def summarize(tally: Tally, kill_window: tuple[float, float] | None = None) -> dict[str, object]:
    ttft = sorted(tally.ttft_s)
    # A request is the killed node's if it was in flight when the node died or was sent while the
    # mesh had not yet seen it go and come back (its start falls in the window, plus SETTLE_S).
    inside = [
        e
        for e in tally.errors
        if kill_window
        and tally.started_at.get(e[0], e[0]) <= kill_window[1] + SETTLE_S
        and e[0] >= kill_window[0]
    ]
    outside = [e for e in tally.errors if e not in inside]
    origin = kill_window[0] if kill_window else 0.0
    result: dict[str, object] = {
        "requests_ok": tally.requests,
        "errors": len(tally.errors),
        "errors_outside_kill_window": len(outside),
        "ttft_ms_p50": round(statistics.median(ttft) * 1000, 1) if ttft else None,
        "ttft_ms_p99": round(ttft[min(len(ttft) - 1, int(len(ttft) * 0.99))] * 1000, 1) if ttft else None,
        "error_samples": sorted({what for _, what in tally.errors})[:5],
        # Seconds from the kill (or the phase start): when each failed request began and ended.
        "errors_outside_timeline": [
            {
                "started_s": round(tally.started_at.get(t, t) - origin, 1),
                "failed_s": round(t - origin, 1),
                "what": what[:100],
            }
            for t, what in sorted(outside)[:12]
        ],
    }
    if kill_window:
        result["errors_in_kill_window"] = len(inside)
    return result


def start(root: Path, name: str, args: list[str]) -> RunningNode:
    return RunningNode(root / name, free_port(), free_port(), ["--name", name, *args]).start()


def single_phase(root: Path, streams: int, seconds: float, max_tokens: int) -> dict[str, object]:
    node = start(root, "solo", ["--model", MODEL])
    try:
        node.wait_ready([MODEL], START_TIMEOUT_S)
        url = node.api_base + "/chat/completions"
        asyncio.run(drive(url, streams, WARMUP_S, max_tokens))
        rss_start = rss_by_program([node.home])
        tally = asyncio.run(drive(url, streams, seconds, max_tokens))
        rss_end = rss_by_program([node.home])
    finally:
        node.stop()
    return {"phase": "single", **summarize(tally), "rss_mib_start": rss_start, "rss_mib_end": rss_end}


def mesh_phase(root: Path, streams: int, seconds: float, max_tokens: int) -> dict[str, object]:
    nodes: list[RunningNode] = []
    try:
        a = start(root, "a", ["--model", MODEL])
        nodes.append(a)
        a.wait_ready([MODEL], START_TIMEOUT_S)
        token = a.invite()
        b = start(root, "b", ["--join", token, "--model", MODEL])
        c = start(root, "c", ["--join", token, "--model", MODEL])
        nodes += [b, c]
        for node in (b, c):
            node.wait_ready([MODEL], START_TIMEOUT_S)
        wait_until(lambda: len(serving_nodes(a)) == 3, START_TIMEOUT_S, "a to route to all three")
        url = a.api_base + "/chat/completions"
        asyncio.run(drive(url, streams, WARMUP_S, max_tokens))
        homes = [n.home for n in nodes]
        rss_start = rss_by_program(homes)
        window: list[float] = []

        async def run() -> Tally:
            load = asyncio.create_task(drive(url, streams, seconds, max_tokens))
            await asyncio.sleep(seconds / 3)
            window.append(time.monotonic())
            killed = await asyncio.to_thread(kill_node, b)
            print(f"killed b ({killed} processes)", file=sys.stderr)
            await asyncio.sleep(seconds / 2 - seconds / 3)
            restarted = await asyncio.to_thread(lambda: start(root, "b", ["--join", token, "--model", MODEL]))
            nodes[1] = restarted
            await asyncio.to_thread(restarted.wait_ready, [MODEL], START_TIMEOUT_S)
            window.append(time.monotonic())
            print("b is back", file=sys.stderr)
            return await load

        tally = asyncio.run(run())
        rss_end = rss_by_program([n.home for n in nodes])
    finally:
        for node in nodes:
            node.stop()
    result = summarize(tally, (window[0], window[1]))
    return {
        "phase": "mesh",
        **result,
        "b_down_s": round(window[1] - window[0], 1),
        "rss_mib_start": rss_start,
        "rss_mib_end": rss_end,
    }


def serving_nodes(node: RunningNode) -> tuple[str, ...]:
    data = httpx.get(node.api_base + "/models", timeout=5).json()["data"]
    entry = next((e for e in data if e["id"] == MODEL), None)
    return tuple(entry["meshllm"]["nodes"]) if entry else ()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=300.0, help="load per phase (default 300)")
    parser.add_argument("--streams", type=int, default=64, help="concurrent streaming clients (default 64)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--phase", choices=["all", "single", "mesh"], default="all")
    args = parser.parse_args()
    resolve_model(MODEL)
    root = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    results = {"bench": "soak", "model": MODEL, "streams": args.streams, "seconds": args.seconds}
    results["cpus"] = os.cpu_count()
    phases = []
    if args.phase in ("all", "single"):
        phases.append(single_phase(root, args.streams, args.seconds, args.max_tokens))
    if args.phase in ("all", "mesh"):
        phases.append(mesh_phase(root, args.streams, args.seconds, args.max_tokens))
    results["phases"] = phases
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
