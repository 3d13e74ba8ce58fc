#!/usr/bin/env python3
"""Remote routing: the same streaming chat completion served locally and through a client node's mesh.

Starts two real nodes (the `mesh-llm` CLI, as tests/support/node.py does): A serves Gemma 270M, B is a
`--client` that joins A. Every byte between them crosses our UDP link simulator, run in a child
process so its per-packet work does not share the measuring process: A and B each advertise a
simulator port in front of their pinned QUIC port, and B's invite token names only A's simulator, so
no address that either node knows leads around it. For each RTT it interleaves rounds of one request
sent (a) to A's API port (gateway -> llama-server) and (b) to B's (gateway -> mesh tunnel -> QUIC ->
A's mesh -> A's gateway -> llama-server), alternating which goes first. Per request it measures TTFT
(request sent -> first content delta) and decode speed (deltas after the first / time after the
first); `ignore_eos` keeps every answer exactly `--max-tokens` long. More pairs of short requests
give a steadier TTFT median, and the CPU time each node process spends during each request (from
/proc) shows what the remote path costs per token: on one small machine all of it competes with
llama-server's decode.

It also times the tunnel by itself: one keep-alive TCP connection through B's HTTP tunnel to A (the
port B's mesh hands out on OpenTunnel) vs one straight to A's API port, each sending a POST of 64 B /
32 KB of invalid JSON that A's gateway rejects with a small 400 at once; the difference of the medians
is what the tunnel adds to a round trip. Prints one JSON object.

    .venv/bin/python bench/remote_routing.py [--rounds 8] [--rtts-ms 0,20] [--ttft-probes 24]
                                             [--echo-iterations 200] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx
from streaming_chat import timed_stream

from services.mesh.invite import InviteToken
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # tests.support is not installed with the project

if TYPE_CHECKING:
    from tests.support.node import RunningNode

MODEL = "gemma3-270m"
PROMPT = "Write a long story about a lighthouse keeper and a storm."
DEFAULT_ROUNDS = 8
DEFAULT_MAX_TOKENS = 128
DEFAULT_RTTS_MS = "0,20"
DEFAULT_ECHO_ITERATIONS = 200
ECHO_ITERATIONS_WITH_DELAY = 40  # each costs at least one RTT; enough to see extra round trips
ECHO_SIZES = {"64B": 64, "32KB": 32 * 1024}
WARMUP_REQUESTS = 2
DEFAULT_TTFT_PROBES = 24
TTFT_PROBE_TOKENS = 4
ECHO_WARMUP = 10
SETTLE_S = 3.0  # after changing the delay: let in-flight packets and the mesh's RTT estimate settle
MESH_READY_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 120.0
ECHO_TIMEOUT_S = 10.0
DECODE_GOAL = 0.97
TTFT_SLACK_GOAL_MS = 5.0


@dataclass(frozen=True)
class Sample:
    ttft_s: float
    tokens: int
    decode_tok_s: float
    server_decode_tok_s: float  # llama-server's own `timings.predicted_per_second`
    cpu_ns: dict[str, int]  # CPU time each process of the path used during this request


class CpuMeter:
    """CPU time of the node processes (all their threads, ns precision from /proc/<pid>/task/*/schedstat).

    On a small machine every process on the remote path takes CPU from llama-server's decode, so the
    CPU it spends per token explains a decode ratio below 1 better than noisy tok/s medians do.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def snapshot(self) -> dict[str, int]:
        return {name: _cpu_ns(pid) for name, pid in self.pids.items()}

    def since(self, before: dict[str, int]) -> dict[str, int]:
        now = self.snapshot()
        return {name: now[name] - before[name] for name in now}


def _cpu_ns(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total


# ---- the link simulators, in a child process


def serve_links(target_a: int, target_b: int) -> None:
    """Child process: two simulators (in front of A and of B); commands on stdin, answers on stdout."""
    from tests.support.link_simulator import LinkConditions, LinkSimulator

    links = {"a": LinkSimulator(target_a).start(), "b": LinkSimulator(target_b).start()}
    print(json.dumps({name: link.port for name, link in links.items()}), flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "delay":
            for link in links.values():
                link.set_conditions(LinkConditions(delay_ms=float(argument)))
            print("{}", flush=True)
        elif command == "stats":
            stats = {
                name: {"forwarded": link.packets_forwarded, "dropped": link.packets_dropped}
                for name, link in links.items()
            }
            print(json.dumps(stats), flush=True)
    for link in links.values():
        link.close()


class LinkProcess:
    """A bench's link simulators in a child process (`script --serve-links ARGS`), driven by one-line
    commands on its stdin, each answered by one JSON line; the first line it prints is its ports.
    A process of its own, so the simulators' CPU is measured apart from the bench's."""

    def __init__(self, script: str, args: list[str], logs: Path) -> None:
        command = [sys.executable, script, "--serve-links", *args]
        with (logs / "links.log").open("wb") as err:
            self._process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
            )
        self.ports = self._ask(None)
        self.pid = self._process.pid

    def _ask(self, command: str | None) -> dict[str, Any]:
        assert self._process.stdin is not None and self._process.stdout is not None
        if command is not None:
            self._process.stdin.write(command + "\n")
            self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("link simulator process died")
        return dict(json.loads(line))

    def set_delay(self, one_way_ms: float) -> None:
        self._ask(f"delay {one_way_ms:g}")

    def stats(self) -> dict[str, Any]:
        return self._ask("stats")

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class Links(LinkProcess):
    def __init__(self, target_a: int, target_b: int, logs: Path) -> None:
        super().__init__(__file__, [str(target_a), str(target_b)], logs)
        self.port_a, self.port_b = int(self.ports["a"]), int(self.ports["b"])


# ---- the two nodes


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def two_nodes(root: Path) -> Iterator[tuple[RunningNode, RunningNode, Links]]:
    from tests.support.node import RunningNode, free_port, wait_until

    quic_a, quic_b = free_udp_port(), free_udp_port()
    with ExitStack() as stack:
        links = Links(quic_a, quic_b, root)
        stack.callback(links.close)
        a_args = ["--name", "a", "--model", MODEL, "--bind-port", str(quic_a)]
        a_args += ["--advertise", f"127.0.0.1:{links.port_a}"]
        a = RunningNode(root / "a", free_port(), free_port(), a_args)
        stack.callback(a.stop)
        a.start().wait_ready([MODEL])
        # Only A's simulator as the bootstrap address (A advertises it anyway; this makes it certain).
        invite = InviteToken.decode(a.invite())
        token = InviteToken(invite.mesh_id, invite.secret, (f"127.0.0.1:{links.port_a}",)).encode()
        b_args = ["--name", "b", "--client", "--join", token, "--bind-port", str(quic_b)]
        b_args += ["--advertise", f"127.0.0.1:{links.port_b}"]
        b = RunningNode(root / "b", free_port(), free_port(), b_args)
        stack.callback(b.stop)
        b.start().wait_ready([])
        wait_until(lambda: MODEL in listed_models(b), MESH_READY_TIMEOUT_S, "B to route to A's model")
        yield a, b, links


def listed_models(node: RunningNode) -> set[str]:
    return {m["id"] for m in httpx.get(f"{node.api_base}/models", timeout=5).json()["data"]}


def mesh_stub(node: RunningNode) -> tuple[grpc.Channel, mesh_pb2_grpc.MeshStub]:
    channel = grpc.insecure_channel(node.node_home.grpc_target("mesh"))
    return channel, mesh_pb2_grpc.MeshStub(channel)


def peer_rtt_ms(node: RunningNode) -> float:
    """The mesh's own ping RTT to its (only) peer."""
    channel, stub = mesh_stub(node)
    with channel:
        [peer] = stub.ListPeers(mesh_pb2.ListPeersRequest(), timeout=2).peers
        return float(peer.rtt_ms)


def tunnel_port(node: RunningNode, peer_node_id: str) -> int:
    channel, stub = mesh_stub(node)
    with channel:
        request = mesh_pb2.OpenTunnelRequest(peer_node_id=peer_node_id, kind=mesh_pb2.TUNNEL_KIND_HTTP)
        return int(stub.OpenTunnel(request, timeout=5).port)


# ---- streaming chat completions


def measure(client: httpx.Client, base_url: str, max_tokens: int, cpu: CpuMeter) -> Sample:
    cpu_before = cpu.snapshot()
    timing = timed_stream(client, base_url + "/chat/completions", MODEL, PROMPT, max_tokens)
    used = cpu.since(cpu_before)
    return Sample(timing.ttft_s, timing.tokens, timing.decode_tok_s, timing.server_decode_tok_s, used)


def summarize(samples: list[Sample]) -> dict[str, object]:
    cpu = _cpu_per_token_us(samples)
    return {
        "ttft_ms_median": round(statistics.median(s.ttft_s for s in samples) * 1000, 2),
        "decode_tok_s_median": round(statistics.median(s.decode_tok_s for s in samples), 2),
        "server_decode_tok_s_median": round(statistics.median(s.server_decode_tok_s for s in samples), 2),
        "tokens_median": statistics.median(s.tokens for s in samples),
        "ttft_ms": [round(s.ttft_s * 1000, 1) for s in samples],
        "decode_tok_s": [round(s.decode_tok_s, 1) for s in samples],
        # Outside llama-server: what the path costs per token (the mesh processes also ping and gossip
        # in the background, so the local path shows their idle cost).
        "cpu_us_per_token": {name: round(us, 1) for name, us in cpu.items() if name != "llama_server"},
    }


def interleaved(
    urls: dict[str, str], rounds: int, max_tokens: int, cpu: CpuMeter, warmup: int
) -> dict[str, list[Sample]]:
    """`rounds` requests per path, back to back in pairs, alternating which path goes first."""
    samples: dict[str, list[Sample]] = {path: [] for path in urls}
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        for _ in range(warmup):
            for url in urls.values():
                measure(client, url, max_tokens, cpu)
        for round_index in range(rounds):
            order = ["local", "remote"] if round_index % 2 == 0 else ["remote", "local"]
            for path in order:
                samples[path].append(measure(client, urls[path], max_tokens, cpu))
    return samples


def _median_decode(samples: list[Sample]) -> float:
    return statistics.median(s.decode_tok_s for s in samples)


def _median_ttft_ms(samples: list[Sample]) -> float:
    return statistics.median(s.ttft_s for s in samples) * 1000


def _paired_ttft_ms(samples: dict[str, list[Sample]]) -> float:
    pairs = zip(samples["remote"], samples["local"], strict=True)
    return statistics.median((r.ttft_s - loc.ttft_s) * 1000 for r, loc in pairs)


def _cpu_per_token_us(samples: list[Sample]) -> dict[str, float]:
    tokens = sum(s.tokens for s in samples)
    return {name: sum(s.cpu_ns[name] for s in samples) / 1000 / tokens for name in samples[0].cpu_ns}


def compare(
    samples: dict[str, list[Sample]], probes: dict[str, list[Sample]], rtt_ms: float
) -> dict[str, object]:
    local, remote = summarize(samples["local"]), summarize(samples["remote"])
    pairs = zip(samples["remote"], samples["local"], strict=True)
    paired = [r.decode_tok_s / loc.decode_tok_s for r, loc in pairs]
    decode_ratio = _median_decode(samples["remote"]) / _median_decode(samples["local"])
    added_ttft = _median_ttft_ms(samples["remote"]) - _median_ttft_ms(samples["local"])
    probe_added = _median_ttft_ms(probes["remote"]) - _median_ttft_ms(probes["local"])
    cpu_local, cpu_remote = _cpu_per_token_us(samples["local"]), _cpu_per_token_us(samples["remote"])
    added_cpu = {name: round(cpu_remote[name] - cpu_local[name], 1) for name in cpu_local}
    added_cpu.pop("llama_server", None)
    return {
        "local": local,
        "remote": remote,
        "decode_ratio_remote_over_local": round(decode_ratio, 4),
        # Within each round the two requests ran back to back, so their ratio cancels slow drift.
        "decode_ratio_paired_median": round(statistics.median(paired), 4),
        "added_ttft_ms": round(added_ttft, 2),
        "added_ttft_paired_median_ms": round(_paired_ttft_ms(samples), 2),
        # TTFT again from many short requests (a full round is too slow to give more than a few).
        "ttft_probes": {
            "pairs": len(probes["local"]),
            "max_tokens": TTFT_PROBE_TOKENS,
            "local_ms_median": round(_median_ttft_ms(probes["local"]), 2),
            "remote_ms_median": round(_median_ttft_ms(probes["remote"]), 2),
            "added_ms": round(probe_added, 2),
            "added_paired_median_ms": round(_paired_ttft_ms(probes), 2),
        },
        "added_ttft_minus_rtt_ms": round(probe_added - rtt_ms, 2),
        # CPU the remote path costs per token beyond the local one, per process. On one machine all
        # of it competes with llama-server; between two machines only A's side (a_*) would.
        "added_cpu_us_per_token": {**added_cpu, "total": round(sum(added_cpu.values()), 1)},
        "meets_decode_goal": decode_ratio >= DECODE_GOAL,
        "meets_ttft_goal": probe_added <= rtt_ms + TTFT_SLACK_GOAL_MS,
    }


# ---- the tunnel by itself: one keep-alive connection, POST -> small 400


class Exchange:
    """A keep-alive HTTP/1.1 connection that sends one invalid-JSON POST at a time and reads the 400."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self._port), timeout=ECHO_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        return sock

    def round_trip(self, body: bytes) -> float:
        sock = self._sock or self._connect()
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        started = time.perf_counter()
        sock.sendall(head + body)
        status, closes = self._read_response(sock)
        elapsed = time.perf_counter() - started
        if status != 400:
            raise RuntimeError(f"expected a 400 for invalid JSON, got {status}")
        if closes:
            self.close()
        return elapsed

    @staticmethod
    def _read_response(sock: socket.socket) -> tuple[int, bool]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed mid-response")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed mid-body")
            rest += chunk
        return int(lines[0].split()[1]), headers.get("connection", "").lower() == "close"

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def echo_round_trips(ports: dict[str, int], iterations: int) -> dict[str, object]:
    """Median round trip per path and size, paths interleaved per iteration (same drift for both)."""
    result: dict[str, object] = {"iterations": iterations}
    for size_name, size in ECHO_SIZES.items():
        body = b"x" * size
        exchanges = {path: Exchange(port) for path, port in ports.items()}
        times: dict[str, list[float]] = {path: [] for path in ports}
        try:
            for index in range(ECHO_WARMUP + iterations):
                order = list(ports) if index % 2 == 0 else list(reversed(ports))
                for path in order:
                    elapsed = exchanges[path].round_trip(body)
                    if index >= ECHO_WARMUP:
                        times[path].append(elapsed)
        finally:
            for exchange in exchanges.values():
                exchange.close()
        medians = {path: statistics.median(t) * 1000 for path, t in times.items()}
        result[size_name] = {
            "direct_ms_median": round(medians["direct"], 3),
            "tunnel_ms_median": round(medians["tunnel"], 3),
            "added_ms": round(medians["tunnel"] - medians["direct"], 3),
            "tunnel_ms_p90": round(statistics.quantiles(times["tunnel"], n=10)[-1] * 1000, 3),
        }
    return result


# ---- the run


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument(
        "--rtts-ms", default=DEFAULT_RTTS_MS, help="round-trip times to simulate, comma-separated"
    )
    parser.add_argument(
        "--ttft-probes",
        type=int,
        default=DEFAULT_TTFT_PROBES,
        help=f"extra request pairs of {TTFT_PROBE_TOKENS} tokens per RTT, for a steadier TTFT median",
    )
    parser.add_argument(
        "--echo-iterations",
        type=int,
        default=DEFAULT_ECHO_ITERATIONS,
        help=f"tunnel round trips per size at 0 ms RTT ({ECHO_ITERATIONS_WITH_DELAY} at higher RTTs)",
    )
    parser.add_argument("--serve-links", type=int, nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args()


def bench(args: argparse.Namespace) -> dict[str, object]:
    rtts = [float(r) for r in args.rtts_ms.split(",") if r.strip()]
    root = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    started = time.monotonic()
    result: dict[str, object] = {
        "bench": "remote_routing",
        "model": MODEL,
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "cpus": os.cpu_count(),
    }
    try:
        with two_nodes(root) as (a, b, links):
            result["nodes_ready_s"] = round(time.monotonic() - started, 1)
            urls = {"local": a.api_base, "remote": b.api_base}
            a_id = a.status().node_id
            cpu = CpuMeter(
                {
                    "llama_server": a.llama_server_pid(),
                    "a_gateway": a.service_pid("gateway"),
                    "a_mesh": a.service_pid("mesh"),
                    "b_mesh": b.service_pid("mesh"),
                    "b_gateway": b.service_pid("gateway"),
                    "link_simulator": links.pid,
                }
            )
            echo_ports = {"direct": a.api_port, "tunnel": tunnel_port(b, a_id)}
            per_rtt: dict[str, object] = {}
            for rtt in rtts:
                links.set_delay(rtt / 2)
                time.sleep(SETTLE_S)
                rounds = interleaved(urls, args.rounds, args.max_tokens, cpu, WARMUP_REQUESTS)
                probes = interleaved(urls, args.ttft_probes, TTFT_PROBE_TOKENS, cpu, 0)
                entry = compare(rounds, probes, rtt)
                iterations = args.echo_iterations if rtt == 0 else ECHO_ITERATIONS_WITH_DELAY
                entry["tunnel_round_trip"] = echo_round_trips(
                    echo_ports, min(iterations, args.echo_iterations)
                )
                entry["mesh_ping_rtt_ms"] = round(peer_rtt_ms(b), 2)
                per_rtt[f"{rtt:g}"] = entry
            result["rtt_ms"] = per_rtt
            stats = links.stats()
            # Every packet between the nodes crossed a simulator: B dialed A's; A never dialed B.
            result["link_packets"] = {"via_a_simulator": stats["a"], "via_b_simulator": stats["b"]}
    except Exception:
        print(f"bench failed; node homes and logs kept in {root}", file=sys.stderr)
        raise
    shutil.rmtree(root, ignore_errors=True)
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def main() -> None:
    args = parse_args()
    if args.serve_links:
        serve_links(*args.serve_links)
        return
    print(json.dumps(bench(args), indent=2))


if __name__ == "__main__":
    main()
