#!/usr/bin/env python3
"""Gateway overhead: the same streaming answer straight to llama-server and through the gateway, for
each API the gateway forwards (`--api chat|responses|messages|all`: OpenAI chat completions, OpenAI
Responses, Anthropic Messages).

Starts llama-server on Gemma 270M and the gateway's API app (production settings: uvicorn, uvloop,
the same proxy; in its own process, as in a node) with a fixed route to it, then runs interleaved
rounds of one request per path, alternating which path goes first so drift (thermal, other load) hits
both alike. Per request it measures TTFT (request sent -> first content delta) and decode speed
(deltas after the first / time after the first). `ignore_eos` keeps every answer exactly
`--max-tokens` long. Prints one JSON object with medians per path and the ratios.

    .venv/bin/python bench/gateway_overhead.py [--rounds 8] [--max-tokens 128] [--llama-threads N]
        [--api chat|responses|messages|all]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from streaming_chat import API_PATHS, timed_stream

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = "gemma3-270m"
PROMPT = "Write a long story about a lighthouse keeper and a storm."
DEFAULT_ROUNDS = 8
DEFAULT_MAX_TOKENS = 128
WARMUP_REQUESTS = 2
CONTEXT_TOKENS = 2048
START_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.05


@dataclass(frozen=True)
class Sample:
    ttft_s: float
    tokens: int
    decode_tok_s: float
    server_decode_tok_s: float  # llama-server's own `timings.predicted_per_second`


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(POLL_S)
    raise RuntimeError(f"{what} not healthy after {START_TIMEOUT_S:g} s")


@contextmanager
def running(command: list[str], health_url: str, what: str, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(health_url, process, f"{what} (log: {log})")
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def llama_bin_dir() -> Path:
    printed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "llama.cpp" / "build.py"), "--print-dir"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return Path(printed.stdout.strip().splitlines()[-1])


def measure(client: httpx.Client, base_url: str, max_tokens: int, api: str) -> Sample:
    url = base_url + "/v1" + API_PATHS[api]
    timing = timed_stream(client, url, MODEL, PROMPT, max_tokens, api)
    return Sample(timing.ttft_s, timing.tokens, timing.decode_tok_s, timing.server_decode_tok_s)


def summarize(samples: list[Sample]) -> dict[str, float]:
    return {
        "ttft_ms_median": round(statistics.median(s.ttft_s for s in samples) * 1000, 2),
        "decode_tok_s_median": round(statistics.median(s.decode_tok_s for s in samples), 2),
        "server_decode_tok_s_median": round(statistics.median(s.server_decode_tok_s for s in samples), 2),
        "tokens_median": statistics.median(s.tokens for s in samples),
    }


def run_rounds(
    direct_url: str, gateway_url: str, rounds: int, max_tokens: int, api: str
) -> dict[str, list[Sample]]:
    samples: dict[str, list[Sample]] = {"direct": [], "gateway": []}
    urls = {"direct": direct_url, "gateway": gateway_url}
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        for _ in range(WARMUP_REQUESTS):
            for url in urls.values():
                measure(client, url, max_tokens, api)
        for round_index in range(rounds):
            order = ["direct", "gateway"] if round_index % 2 == 0 else ["gateway", "direct"]
            for path in order:
                samples[path].append(measure(client, urls[path], max_tokens, api))
    return samples


def report(samples: dict[str, list[Sample]], rounds: int, max_tokens: int, api: str) -> dict[str, object]:
    direct, gateway = summarize(samples["direct"]), summarize(samples["gateway"])
    pairs = zip(samples["gateway"], samples["direct"], strict=True)
    paired = [g.decode_tok_s / d.decode_tok_s for g, d in pairs]
    return {
        "bench": "gateway_overhead",
        "api": api,
        "path": "/v1" + API_PATHS[api],
        "model": MODEL,
        "rounds": rounds,
        "max_tokens": max_tokens,
        "cpus": os.cpu_count(),
        "direct": direct,
        "gateway": gateway,
        "decode_ratio_gateway_over_direct": round(
            gateway["decode_tok_s_median"] / direct["decode_tok_s_median"], 4
        ),
        "added_ttft_ms": round(gateway["ttft_ms_median"] - direct["ttft_ms_median"], 2),
        # Within each round the two requests ran back to back, so their ratio cancels slow drift
        # (other load on the machine) that the ratio of medians above still feels.
        "decode_ratio_paired_median": round(statistics.median(paired), 4),
    }


def serve_gateway(port: int, upstream_port: int) -> None:
    """The gateway's API app (production uvicorn settings) with a fixed route: the bench's child process."""
    from services.gateway.app import bind_listener, embedded_server
    from services.gateway.openai_api import build_api_app
    from services.gateway.proxy import UpstreamProxy
    from services.gateway.routing import Route, RoutingTable
    from services.gateway.sources import RoutingSources
    from services.gateway.status import RequestCounters
    from services.node.service_main import run_event_loop

    async def serve() -> None:
        sources = RoutingSources()
        sources.table = RoutingTable.from_routes([Route(MODEL, "127.0.0.1", upstream_port)])
        proxy = UpstreamProxy()
        server = embedded_server(build_api_app(sources, proxy, RequestCounters()))
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGTERM, lambda: setattr(server, "should_exit", True)
        )
        try:
            await server.serve(sockets=[bind_listener("127.0.0.1", port)])
        finally:
            await proxy.aclose()

    run_event_loop(serve())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument(
        "--llama-threads",
        type=int,
        default=0,
        help="llama-server --threads (default: llama.cpp's own choice, all cores)",
    )
    parser.add_argument(
        "--api",
        choices=[*API_PATHS, "all"],
        default="chat",
        help="which API's streaming endpoint to compare; all: each in turn, in one run (default: chat)",
    )
    parser.add_argument("--serve-gateway", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def bench(args: argparse.Namespace) -> dict[str, object] | list[dict[str, object]]:
    from services.node.catalog import resolve_model

    llama_port, gateway_port = free_port(), free_port()
    direct_url, gateway_url = f"http://127.0.0.1:{llama_port}", f"http://127.0.0.1:{gateway_port}"
    llama = [
        str(llama_bin_dir() / "llama-server"), "-m", resolve_model(MODEL).path, "--host", "127.0.0.1",
        "--port", str(llama_port), "-c", str(CONTEXT_TOKENS), "--alias", MODEL, "--jinja",
    ]  # fmt: skip
    if args.llama_threads:
        llama += ["--threads", str(args.llama_threads)]
    gateway = [sys.executable, __file__, "--serve-gateway", str(gateway_port)]
    gateway += ["--upstream-port", str(llama_port)]
    logs = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    apis = list(API_PATHS) if args.api == "all" else [args.api]
    results = []
    try:
        with (
            running(llama, direct_url, "llama-server", logs / "llama-server.log"),
            running(gateway, gateway_url, "gateway", logs / "gateway.log"),
        ):
            for api in apis:
                samples = run_rounds(direct_url, gateway_url, args.rounds, args.max_tokens, api)
                result = report(samples, args.rounds, args.max_tokens, api)
                result["llama_threads"] = args.llama_threads or "default"
                results.append(result)
    except Exception:
        print(f"bench failed; process logs kept in {logs}", file=sys.stderr)
        raise
    shutil.rmtree(logs)
    return results[0] if len(results) == 1 else results


def main() -> None:
    args = parse_args()
    if args.serve_gateway:
        serve_gateway(args.serve_gateway, args.upstream_port)
        return
    print(json.dumps(bench(args), indent=2))


if __name__ == "__main__":
    main()
