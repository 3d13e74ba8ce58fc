#!/usr/bin/env python3
"""Concurrent streams: aggregate decode tok/s of one model at 1, 4 and 16 requests at once, solo and split.

Starts the same two nodes as bench/split.py (two real `mesh-llm` nodes splitting Gemma 270M through
the link simulator: A hosts, B runs the rpc-server) and, for "solo", a llama-server with the host's
own command line less --rpc/-ngl/--tensor-split (same slots, context, threads). Both run with the
slots the runner chose (services/runner/slots.py: -np, -kvu, continuous batching).

For each RTT (`--rtts-ms`, half each way on the link): `--rounds` interleaved rounds (the order of
the paths alternates); in each, for each stream count, that many `/completion` requests at once
(fixed prompt with a per-stream suffix, temperature 0, `ignore_eos`, `cache_prompt: false`). A
batch's aggregate tok/s is the tokens decoded by all its streams over its wall time (first request
sent to last response), so it includes each request's prompt processing and any queueing. Prints
one JSON object with medians; progress goes to stderr.

    .venv/bin/python bench/concurrency.py [--rounds 3] [--tokens 32] [--streams 1,4,16] [--rtts-ms 0,20]
                                          [--parallel N] [--speculation off]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from split import (
    PROMPT,
    SETTLE_S,
    Spawned,
    Split,
    cmdline,
    drop_flags,
    free_tcp_port,
    model_path,
    peer_rtt_ms,
    ready_host_process,
    set_flag,
    two_nodes,
    wait_healthy,
)

DEFAULT_ROUNDS = 3
DEFAULT_TOKENS = 32
DEFAULT_STREAMS = "1,4,16"
DEFAULT_RTTS_MS = "0,20"
REQUEST_TIMEOUT_S = 600.0
GOAL_STREAMS = 4
GOAL_SPEEDUP = 2.5  # aggregate tok/s at 4 streams over 1


def progress(message: str) -> None:
    print(f"[concurrency {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def one_request(
    client: httpx.Client, port: int, api_key: str, tokens: int, stream: int
) -> tuple[int, float, float]:
    """One /completion: the tokens it decoded, when its decoding started and when it ended
    (monotonic seconds; the start is its end less llama-server's own decode time)."""
    body = {
        "prompt": f"{PROMPT} (story {stream})",
        "n_predict": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "cache_prompt": False,
    }
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    response = client.post(f"http://127.0.0.1:{port}/completion", json=body, headers=headers)
    response.raise_for_status()
    ended = time.monotonic()
    timings = response.json()["timings"]
    return int(timings["predicted_n"]), ended - float(timings["predicted_ms"]) / 1000, ended


def batch(client: httpx.Client, port: int, api_key: str, tokens: int, streams: int) -> dict[str, float]:
    """`streams` requests at once. `tok_s`: decoded tokens over the batch's wall time (prompt
    processing included); `decode_tok_s`: over the decode window, from the first stream's first
    decoded token to the last stream's end (what batching the slots' decode steps speeds up)."""
    with ThreadPoolExecutor(max_workers=streams) as pool:
        started = time.monotonic()
        futures = [pool.submit(one_request, client, port, api_key, tokens, s) for s in range(streams)]
        results = [future.result() for future in futures]
    decoded = sum(n for n, _, _ in results)
    seconds = max(end for _, _, end in results) - started
    window = max(end for _, _, end in results) - min(start for _, start, _ in results)
    return {
        "seconds": round(seconds, 3),
        "tokens": decoded,
        "tok_s": round(decoded / seconds, 2),
        "decode_tok_s": round(decoded / window, 2),
    }


def slots_of(argv: list[str]) -> int:
    return int(argv[argv.index("-np") + 1]) if "-np" in argv else 0


def per_rtt(split: Split, solo_port: int, rtt: float, index: int, args: argparse.Namespace) -> dict[str, Any]:
    split.links.set_delay(rtt / 2)
    time.sleep(SETTLE_S)
    host = ready_host_process(split.host)
    assert host is not None
    targets = {"solo": (solo_port, ""), "split": (host.port, host.api_key)}
    counts = [int(n) for n in args.streams.split(",")]
    samples: dict[str, dict[int, list[dict[str, float]]]] = {p: {n: [] for n in counts} for p in targets}
    limits = httpx.Limits(max_connections=max(counts) * 2, max_keepalive_connections=max(counts) * 2)
    with httpx.Client(timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        for port, key in targets.values():  # one warm-up request each
            one_request(client, port, key, 4, 0)
        for round_index in range(args.rounds):
            paths = list(targets) if (index + round_index) % 2 == 0 else list(reversed(targets))
            for path in paths:
                port, key = targets[path]
                for streams in counts:
                    samples[path][streams].append(batch(client, port, key, args.tokens, streams))
            progress(
                f"RTT {rtt:g} ms round {round_index + 1}: "
                + "; ".join(
                    f"{p} " + ", ".join(f"{n}x {samples[p][n][-1]['decode_tok_s']}" for n in counts)
                    for p in targets
                )
            )
    entry: dict[str, Any] = {"mesh_ping_rtt_ms": peer_rtt_ms(split.worker)}
    for path in targets:
        entry[path] = {"samples": {str(n): samples[path][n] for n in counts}}
        for field in ("decode_tok_s", "tok_s"):
            medians = {n: statistics.median(s[field] for s in samples[path][n]) for n in counts}
            entry[path][f"{field}_median"] = {str(n): round(medians[n], 2) for n in counts}
            entry[path][f"{field}_speedup_over_{counts[0]}"] = {
                str(n): round(medians[n] / medians[counts[0]], 2) for n in counts
            }
            if field == "decode_tok_s" and GOAL_STREAMS in medians and counts[0] == 1:
                entry[path]["meets_goal"] = medians[GOAL_STREAMS] / medians[1] >= GOAL_SPEEDUP
    return entry


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="interleaved rounds per RTT")
    parser.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="decoded tokens per request")
    parser.add_argument("--streams", default=DEFAULT_STREAMS, help="concurrent requests, comma-separated")
    parser.add_argument("--rtts-ms", default=DEFAULT_RTTS_MS, help="round-trip times, comma-separated")
    parser.add_argument(
        "--parallel", type=int, default=0, help="the nodes' --parallel (default 0: the runner's choice)"
    )
    parser.add_argument(
        "--speculation",
        default="",
        help="the nodes' --speculation (default: theirs); off measures batching alone",
    )
    return parser.parse_args()


def bench(args: argparse.Namespace) -> dict[str, Any]:
    rtts = [float(r) for r in args.rtts_ms.split(",") if r.strip()]
    root = Path(tempfile.mkdtemp(prefix="bench-concurrency-"))
    logs = root / "logs"
    logs.mkdir()
    started = time.monotonic()
    model = model_path()
    result: dict[str, Any] = {
        "bench": "concurrency",
        "model": model.name,
        "rounds": args.rounds,
        "tokens": args.tokens,
        "streams": args.streams,
        "speculation": args.speculation or "the nodes' default",
        "cpus": os.cpu_count(),
    }
    try:
        progress(f"starting two nodes on {model.name} (logs in {root})")
        rpc_ports = (free_tcp_port(), free_tcp_port())  # the split bench's stock relays, unused here
        extra = ("--parallel", str(args.parallel)) if args.parallel else ()
        extra += ("--speculation", args.speculation) if args.speculation else ()
        with two_nodes(root, model, rpc_ports, extra) as split, ExitStack() as stack:
            host = ready_host_process(split.host)
            assert host is not None
            host_argv = cmdline(host.pid)
            result["slots"] = slots_of(host_argv)
            result["host_argv"] = " ".join([Path(host_argv[0]).name, *host_argv[1:]])
            solo_port = free_tcp_port()
            solo_argv = set_flag(
                drop_flags(host_argv, ("--rpc", "-ngl", "--tensor-split")), "--port", str(solo_port)
            )
            solo = Spawned(solo_argv, logs / "solo.log")
            stack.callback(solo.stop)
            wait_healthy(solo_port, solo.alive)
            progress(f"split and solo ready, {result['slots']} slots each")
            result["rtt_ms"] = {
                f"{rtt:g}": per_rtt(split, solo_port, rtt, index, args) for index, rtt in enumerate(rtts)
            }
    except Exception:
        print(f"bench failed; node homes and logs kept in {root}", file=sys.stderr)
        raise
    shutil.rmtree(root, ignore_errors=True)
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def main() -> None:
    print(json.dumps(bench(parse_args()), indent=2))


if __name__ == "__main__":
    main()
