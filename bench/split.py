#!/usr/bin/env python3
"""Split inference: two real nodes splitting Gemma 270M through our mesh vs stock llama.cpp RPC.

Starts two nodes with the `mesh-llm` CLI (tests/support/node.py), each with its own copy of the GGUF
and a `--max-vram` too small to hold it alone, so the mesh splits it: A hosts (more memory), B runs
the rpc-server. Everything between them crosses our link simulator, run in a child process: A and
B pin their QUIC port (`--bind-port`) and advertise a simulator on another loopback address
(127.0.0.2) with the same port number, which relays UDP (QUIC) and TCP (the RPC fast path: TLS to
the worker's QUIC port number at the address the host knows it by) with the same one-way delay.
"Stock" is llama.cpp's own way: the host's llama-server command line (from /proc) with `--rpc`
pointed at a relay in the same child process, with the same delay, in front of a ggml-rpc-server
started with the worker's command line; the relay parses the RPC stream (services.mesh.rpc_protocol)
to count weight bytes (SET_TENSOR data of GGUF tensors) and requests. Same model, shares, -ngl,
threads and context.

For each RTT (`--rtts-ms`, half of it each way):
- loads, `--loads` per path, alternating which goes first: ours (SIGTERM the host's llama-server; its
  runner starts it again), stock (a fresh llama-server) and solo (no --rpc), each timed from the
  process's start to /health 200, with the bytes it moved (ours: the host's ListTunnels counters);
- interleaved rounds of one `/completion` per path (fixed 64-token prompt, temperature 0,
  `cache_prompt: false`, `ignore_eos`), with llama-server's own `timings`, the RPC requests and bytes
  per request, and the CPU the Python processes on the path spent; one 1-token request per path
  gives the per-request part, so the rest is per decoded token.
Last, at 0 ms, the tunnel by itself: llama.cpp RPC spoken directly (HELLO, ALLOC_BUFFER, then
SET_TENSOR 32 KB + GET_TENSOR of 32 KB or 1 MB, one blocking round trip each) through the host's RPC
tunnel to the worker's rpc-server, through one plain relay hop to a second rpc-server, and straight
to a third, interleaved. The host's llama-server is stopped for it (an rpc-server serves one client
at a time; the runner restarts it). Prints one JSON object; progress goes to stderr.

    .venv/bin/python bench/split.py [--rounds 6] [--tokens 64] [--loads 2] [--rtts-ms 0,20]
                                    [--echo-iterations 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx
from remote_routing import CpuMeter, LinkProcess

from services.mesh.invite import InviteToken
from services.mesh.rpc_messages import GetTensor, HelloResponse, RpcTensor, SetTensorHeader
from services.mesh.rpc_protocol import (
    RESPONSE_PREFIX,
    RPC_CONN_CAPS_BYTES,
    SET_TENSOR_HEADER_BYTES,
    RpcCommand,
    RpcPayloadChunk,
    RpcProtocolError,
    RpcRequest,
    RpcRequestHead,
    RpcRequestParser,
    encode_request,
    expects_response,
)
from services.mesh.rpc_zero_transfer import tensor_name
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc
from services.proto.meshllm.runner.v1 import runner_pb2

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # tests.support is not installed with the project

if TYPE_CHECKING:
    from tests.support.node import RunningNode

CATALOG_MODEL = "gemma3-270m"
# About 64 tokens with Gemma's tokenizer: enough prompt to time prompt processing.
PROMPT = (
    "The lighthouse keeper climbed the narrow stairs as the storm rolled in from the grey sea. "
    "Waves broke over the rocks below, the wind howled through the broken shutters, and far out "
    "on the water a small fishing boat fought its way towards the harbour, its lantern swinging. "
    "He lit the great lamp and watched, and"
)
DEFAULT_ROUNDS = 6
DEFAULT_LOADS = 2
DEFAULT_TOKENS = 64
DEFAULT_RTTS_MS = "0,20"
DEFAULT_ECHO_ITERATIONS = 200
ECHO_WARMUP = 20
# Each round trip: SET_TENSOR of 32 KB, then GET_TENSOR of this many bytes. 32 KB is the goal's
# message; 1 MB is what decode reads back per token here (Gemma's 262,144 logits as f32).
ECHO_SET_BYTES = 32 * 1024
ECHO_GET_BYTES = {"32KB": 32 * 1024, "1MB": 1024 * 1024}
ECHO_LARGE_SHARE = 4  # the 1 MB size runs iterations / 4 round trips
WARMUP_REQUESTS = 1
# --max-vram as fractions of the file: each below the 1.1× a node needs alone, together above it.
HOST_VRAM_FRACTION = 0.58
WORKER_VRAM_FRACTION = 0.56
MIRROR_HOST = "127.0.0.2"  # the simulators' address: same port numbers as the nodes, other host
SETTLE_S = 2.0  # after changing the delay: in-flight packets land, the mesh's RTT estimate follows
SPLIT_READY_TIMEOUT_S = 180.0
LOAD_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 300.0
HEALTH_POLL_S = 0.05
ECHO_TIMEOUT_S = 30.0
DECODE_GOAL = 1.0
LOAD_GOAL = 1.5
TUNNEL_GOAL_MS = 0.5

_ALLOC_BUFFER = struct.Struct("<IQ")  # device, size
_U64 = struct.Struct("<Q")
_U64_PAIR = struct.Struct("<QQ")
GGML_TYPE_F32 = 0


def progress(message: str) -> None:
    print(f"[split {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- the link simulators and the stock relay, in a child process


class StockTrace:
    """Counts what crosses the stock relay: bytes each way, requests, answered requests (blocking
    round trips), SET_TENSOR data bytes and the part of them that are GGUF weights."""

    def __init__(self, gguf_tensors: set[str]) -> None:
        self._gguf_tensors = gguf_tensors
        self._parsers: dict[int, RpcRequestParser] = {}
        self._uploading_weight: dict[int, bool] = {}
        self.counts = {
            "to_server_bytes": 0,
            "to_client_bytes": 0,
            "requests": 0,
            "round_trips": 0,
            "set_tensor_data_bytes": 0,
            "weight_bytes": 0,
            "protocol_errors": 0,
        }

    def tap(self, connection: int, to_server: bool, data: bytes) -> None:
        counts = self.counts
        if not to_server:
            counts["to_client_bytes"] += len(data)
            return
        counts["to_server_bytes"] += len(data)
        parser = self._parsers.setdefault(connection, RpcRequestParser())
        try:
            events = parser.feed(data)
        except RpcProtocolError:
            counts["protocol_errors"] += 1
            return
        for event in events:
            if isinstance(event, RpcRequest | RpcRequestHead):
                counts["requests"] += 1
                counts["round_trips"] += expects_response(event.command)
            if isinstance(event, RpcRequest) and event.command is RpcCommand.SET_TENSOR:
                self._data(len(event.payload) - SET_TENSOR_HEADER_BYTES, self._is_weight(event.payload))
            elif isinstance(event, RpcRequestHead):
                self._uploading_weight[connection] = self._is_weight(event.head)
            elif isinstance(event, RpcPayloadChunk):
                self._data(len(event.data), self._uploading_weight.get(connection, False))

    def _is_weight(self, head: bytes) -> bool:
        return tensor_name(head) in self._gguf_tensors

    def _data(self, size: int, weight: bool) -> None:
        self.counts["set_tensor_data_bytes"] += size
        if weight:
            self.counts["weight_bytes"] += size


def serve_links(port_a: int, port_b: int, stock_rpc_port: int, plain_rpc_port: int, model_path: str) -> None:
    """Child process: a UDP+TCP simulator in front of each node, the stock relay (parses) and a plain
    TCP relay; commands on stdin, answers on stdout."""
    from services.mesh.gguf_index import read_gguf_index
    from tests.support.link_simulator import LinkConditions, LinkSimulator

    trace = StockTrace(set(read_gguf_index(Path(model_path)).tensors))
    links = {
        "a": LinkSimulator(port_a, host=MIRROR_HOST, port=port_a, tcp=True).start(),
        "b": LinkSimulator(port_b, host=MIRROR_HOST, port=port_b, tcp=True).start(),
        "stock": LinkSimulator(stock_rpc_port, udp=False, tcp=True, tap=trace.tap).start(),
        # The tunnel measurement's baseline: one relay hop like the one the fast path crosses.
        "plain": LinkSimulator(plain_rpc_port, udp=False, tcp=True).start(),
    }
    ports = {"stock_relay_port": links["stock"].port, "plain_relay_port": links["plain"].port}
    print(json.dumps(ports), flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "delay":
            for link in links.values():
                link.set_conditions(LinkConditions(delay_ms=float(argument)))
            print("{}", flush=True)
        elif command == "stats":
            stats: dict[str, Any] = {
                name: {
                    "udp_packets": link.packets_forwarded,
                    "tcp_connections": link.tcp_connections,
                    "tcp_bytes": link.tcp_bytes_forwarded,
                }
                for name, link in links.items()
            }
            stats["stock"].update(trace.counts)
            print(json.dumps(stats), flush=True)
    for link in links.values():
        link.close()


class Links(LinkProcess):
    def __init__(
        self, node_ports: tuple[int, int], rpc_ports: tuple[int, int], model: Path, logs: Path
    ) -> None:
        super().__init__(__file__, [*(str(port) for port in (*node_ports, *rpc_ports)), str(model)], logs)
        self.stock_relay_port = int(self.ports["stock_relay_port"])
        self.plain_relay_port = int(self.ports["plain_relay_port"])


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before.get(key, 0) for key in after}


# ---- ports, processes, llama-server


def free_node_port() -> int:
    """A port number free for UDP and TCP on 127.0.0.1 (the node) and on MIRROR_HOST (its simulator)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM)
        if all(_bindable(host, port, kind) for host in ("127.0.0.1", MIRROR_HOST) for kind in kinds):
            return port


def _bindable(host: str, port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def started_unix_s(pid: int) -> float:
    """When the process started (wall clock, 10 ms ticks): /proc/<pid>/stat against /proc/uptime."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


def wait_healthy(port: int, alive: Callable[[], bool], timeout_s: float = LOAD_TIMEOUT_S) -> float:
    """Poll llama-server's /health until 200; the wall-clock time it answered."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if not alive():
                raise RuntimeError(f"llama-server on {port} exited while loading")
            try:
                if client.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    return time.time()
            except httpx.HTTPError:
                pass
            time.sleep(HEALTH_POLL_S)
    raise RuntimeError(f"llama-server on {port} not healthy after {timeout_s:g} s")


def wait_listening(port: int, timeout_s: float = 30.0) -> None:
    """A probe that closes before HELLO is harmless: rpc-server drops it and accepts the next."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(HEALTH_POLL_S)
    raise RuntimeError(f"nothing listens on {port}")


def set_flag(argv: list[str], flag: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


def drop_flags(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    kept: list[str] = []
    skip = False
    for part in argv:
        if skip:
            skip = False
        elif part in flags:
            skip = True
        else:
            kept.append(part)
    return kept


def cmdline(pid: int) -> list[str]:
    return [part.decode() for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]]


class Spawned:
    """A llama.cpp process of ours (stock or solo), stopped with SIGTERM then SIGKILL."""

    def __init__(self, argv: list[str], log: Path) -> None:
        with log.open("ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass(frozen=True)
class Completion:
    prompt_n: int
    prompt_tok_s: float
    predicted_n: int
    decode_tok_s: float
    content: str
    requests: int  # RPC requests the host's llama-server sent during it
    round_trips: int | None  # of which answered (stock only: the relay parses the stream)
    wire_bytes: int  # RPC bytes both ways between host and worker (ours: before TLS)
    cpu_ns: dict[str, int]  # CPU time the Python hops (meshes, simulator/relay) spent during it


def complete(client: httpx.Client, port: int, tokens: int, api_key: str = "") -> dict[str, Any]:
    """One /completion; `api_key`: the runner's llama-servers each require their own (runner.proto)."""
    body = {
        "prompt": PROMPT,
        "n_predict": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "cache_prompt": False,
    }
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    response = client.post(f"http://127.0.0.1:{port}/completion", json=body, headers=headers)
    response.raise_for_status()
    return dict(response.json())


# ---- the two nodes


@dataclass
class Split:
    host: RunningNode
    worker: RunningNode
    worker_id: str
    model: str
    host_model_path: str
    links: Links


def runner_processes(node: RunningNode, kind: int) -> list[runner_pb2.ProcessStatus]:
    return [p for p in node.runner_status().processes if p.spec.kind == kind]


def ready_host_process(node: RunningNode) -> runner_pb2.ProcessStatus | None:
    for process in runner_processes(node, runner_pb2.PROCESS_KIND_LLAMA_SERVER):
        if process.spec.rpc_endpoints and process.state == runner_pb2.PROCESS_STATE_READY and process.pid:
            return process
    return None


def ready_rpc_server(node: RunningNode) -> runner_pb2.ProcessStatus | None:
    for process in runner_processes(node, runner_pb2.PROCESS_KIND_RPC_SERVER):
        if process.state == runner_pb2.PROCESS_STATE_READY and process.pid:
            return process
    return None


def node_args(name: str, model: Path, vram_bytes: float, port: int) -> list[str]:
    """A node on its own copy of the model, QUIC (and the RPC fast path) pinned to `port`, reached by
    its peer only through the simulator on MIRROR_HOST with the same port number."""
    vram = f"{vram_bytes / 1e9:.6f}"
    return ["--name", name, "--model", str(model), "--max-vram", vram, "--bind-port", str(port),
            "--advertise", f"{MIRROR_HOST}:{port}"]  # fmt: skip


@contextmanager
def two_nodes(
    root: Path, model: Path, rpc_ports: tuple[int, int], extra: tuple[str, ...] = ()
) -> Iterator[Split]:
    """`extra`: more `mesh-llm` flags for both nodes (bench/concurrency.py: --parallel)."""
    from tests.support.node import RunningNode, free_port, wait_until

    port_a, port_b = free_node_port(), free_node_port()
    copies = {}
    for name in ("a", "b"):  # each node its own copy, same file name (= model name)
        (root / f"disk-{name}").mkdir()
        copies[name] = Path(shutil.copyfile(model, root / f"disk-{name}" / model.name))
    size = model.stat().st_size
    with ExitStack() as stack:
        links = Links((port_a, port_b), rpc_ports, model, root)
        stack.callback(links.close)
        a_args = [*node_args("a", copies["a"], size * HOST_VRAM_FRACTION, port_a), *extra]
        a = RunningNode(root / "a", free_port(), free_port(), a_args)
        stack.callback(a.stop)
        a.start()
        wait_until(lambda: "Ctrl-C" in a.cli_output(), 60, "node A to start")
        invite = InviteToken.decode(a.invite())
        # Only A's simulator as the way in (A advertises it anyway; this makes it certain).
        token = InviteToken(invite.mesh_id, invite.secret, (f"{MIRROR_HOST}:{port_a}",)).encode()
        b_args = [*node_args("b", copies["b"], size * WORKER_VRAM_FRACTION, port_b), *extra, "--join", token]
        b = RunningNode(root / "b", free_port(), free_port(), b_args)
        stack.callback(b.stop)
        b.start()
        host = wait_until(lambda: ready_host_process(a), SPLIT_READY_TIMEOUT_S, "A to host the split")
        wait_until(lambda: ready_rpc_server(b), 10, "B to run the rpc-server")
        yield Split(a, b, b.status().node_id, host.spec.model, host.spec.model_path, links)


def mesh_stub(node: RunningNode) -> tuple[grpc.Channel, mesh_pb2_grpc.MeshStub]:
    channel = grpc.insecure_channel(node.node_home.grpc_target("mesh"))
    return channel, mesh_pb2_grpc.MeshStub(channel)


def tunnel_stats(node: RunningNode, peer: str, host_side: bool) -> dict[str, int]:
    channel, stub = mesh_stub(node)
    with channel:
        found = stub.ListTunnels(mesh_pb2.ListTunnelsRequest(), timeout=5).tunnels
    fields = (
        "connections", "fast_path_connections", "bytes_to_peer", "bytes_from_peer",
        "weight_bytes_by_reference", "weight_bytes_raw", "requests", "requests_answered_here",
        "connections_answered_here",
    )  # fmt: skip
    totals = dict.fromkeys(fields, 0)
    for tunnel in found:
        if tunnel.peer_node_id == peer and tunnel.host_side == host_side:
            for name in fields:
                totals[name] += getattr(tunnel, name)
    return totals


def peer_rtt_ms(node: RunningNode) -> float:
    channel, stub = mesh_stub(node)
    with channel:
        peers = stub.ListPeers(mesh_pb2.ListPeersRequest(), timeout=2).peers
    return round(float(peers[0].rtt_ms), 2) if peers else -1.0


# ---- loads


def load_ours(split: Split) -> dict[str, Any]:
    """SIGTERM the host's llama-server; the runner starts it again (a split host always restarts)."""
    from tests.support.node import wait_until

    old = ready_host_process(split.host)
    assert old is not None
    tunnels_before = tunnel_stats(split.host, split.worker_id, True)
    links_before = split.links.stats()
    os.kill(old.pid, signal.SIGTERM)

    def restarted() -> runner_pb2.ProcessStatus | None:
        for process in runner_processes(split.host, runner_pb2.PROCESS_KIND_LLAMA_SERVER):
            if process.spec.rpc_endpoints and process.pid not in (0, old.pid):
                return process
        return None

    new = wait_until(restarted, 60, "the runner to restart the host's llama-server")
    started = started_unix_s(new.pid)
    ready = wait_healthy(new.port, lambda: Path(f"/proc/{new.pid}").exists())
    wait_until(lambda: ready_host_process(split.host), 10, "the runner to see it ready")
    tunnels = delta(tunnel_stats(split.host, split.worker_id, True), tunnels_before)
    link = delta(split.links.stats()["b"], links_before["b"])
    return {
        "seconds": round(ready - started, 2),
        "wire_bytes": tunnels["bytes_to_peer"] + tunnels["bytes_from_peer"],
        "bytes_to_worker": tunnels["bytes_to_peer"],
        "bytes_from_worker": tunnels["bytes_from_peer"],
        "weight_bytes_raw": tunnels["weight_bytes_raw"],
        "weight_bytes_by_reference": tunnels["weight_bytes_by_reference"],
        "requests": tunnels["requests"],
        "connections": tunnels["connections"],
        "fast_path_connections": tunnels["fast_path_connections"],
        # llama-server's static queries the host answered from the worker's earlier answers, and
        # the connections that asked nothing else (they never reached the worker)
        "requests_answered_here": tunnels["requests_answered_here"],
        "connections_answered_here": tunnels["connections_answered_here"],
        "simulator_tcp_bytes": link["tcp_bytes"],  # TLS bytes through the worker's simulator
    }


def load_spawned(argv: list[str], port: int, log: Path) -> tuple[Spawned, float]:
    process = Spawned(argv, log)
    try:
        started = started_unix_s(process.process.pid)
        ready = wait_healthy(port, process.alive)
    except BaseException:
        process.stop()
        raise
    return process, round(ready - started, 2)


def load_stock(argv: list[str], links: Links, log: Path) -> tuple[Spawned, int, dict[str, Any]]:
    port = free_tcp_port()
    before = links.stats()["stock"]
    process, seconds = load_spawned(set_flag(argv, "--port", str(port)), port, log)
    traffic = delta(links.stats()["stock"], before)
    return (
        process,
        port,
        {
            "seconds": seconds,
            "wire_bytes": traffic["to_server_bytes"] + traffic["to_client_bytes"],
            "bytes_to_worker": traffic["to_server_bytes"],
            "bytes_from_worker": traffic["to_client_bytes"],
            "set_tensor_data_bytes": traffic["set_tensor_data_bytes"],
            "weight_bytes": traffic["weight_bytes"],
            "requests": traffic["requests"],
            "round_trips": traffic["round_trips"],
            "connections": traffic["tcp_connections"],
            "protocol_errors": traffic["protocol_errors"],
        },
    )


def load_solo(argv: list[str], log: Path) -> float:
    port = free_tcp_port()
    process, seconds = load_spawned(set_flag(argv, "--port", str(port)), port, log)
    process.stop()
    return seconds


# ---- completions, interleaved


def measure_ours(client: httpx.Client, split: Split, tokens: int, cpu: CpuMeter) -> Completion:
    process = ready_host_process(split.host)
    assert process is not None
    before = tunnel_stats(split.host, split.worker_id, True)
    cpu_before = cpu.snapshot()
    body = complete(client, process.port, tokens, process.api_key)
    used = cpu.since(cpu_before)
    traffic = delta(tunnel_stats(split.host, split.worker_id, True), before)
    wire = traffic["bytes_to_peer"] + traffic["bytes_from_peer"]
    return _completion(body, traffic["requests"], None, wire, used)


def measure_stock(client: httpx.Client, port: int, links: Links, tokens: int, cpu: CpuMeter) -> Completion:
    before = links.stats()["stock"]
    cpu_before = cpu.snapshot()
    body = complete(client, port, tokens)
    used = cpu.since(cpu_before)
    traffic = delta(links.stats()["stock"], before)
    wire = traffic["to_server_bytes"] + traffic["to_client_bytes"]
    return _completion(body, traffic["requests"], traffic["round_trips"], wire, used)


def _completion(
    body: dict[str, Any], requests: int, round_trips: int | None, wire_bytes: int, cpu_ns: dict[str, int]
) -> Completion:
    timings = body["timings"]
    return Completion(
        prompt_n=int(timings["prompt_n"]),
        prompt_tok_s=float(timings["prompt_per_second"]),
        predicted_n=int(timings["predicted_n"]),
        decode_tok_s=float(timings["predicted_per_second"]),
        content=str(body["content"]),
        requests=requests,
        round_trips=round_trips,
        wire_bytes=wire_bytes,
        cpu_ns=cpu_ns,
    )


def per_token(long: list[Completion], short: Completion, field: str) -> float | None:
    """(RPC traffic of a long request − a 1-token one) / (tokens − 1): what one more token costs."""
    values = [getattr(c, field) for c in long]
    base = getattr(short, field)
    if base is None or None in values:
        return None
    tokens = statistics.median(c.predicted_n for c in long) - short.predicted_n
    return round((statistics.median(values) - base) / tokens, 3)


def cpu_per_token_us(samples: list[Completion]) -> dict[str, float]:
    tokens = sum(c.predicted_n for c in samples)
    used = {name: sum(c.cpu_ns[name] for c in samples) / 1000 / tokens for name in samples[0].cpu_ns}
    return {name: round(us, 1) for name, us in used.items()}


def summarize(samples: list[Completion], short: Completion) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "decode_tok_s_median": round(statistics.median(c.decode_tok_s for c in samples), 2),
        "prompt_tok_s_median": round(statistics.median(c.prompt_tok_s for c in samples), 2),
        "prompt_tokens": samples[0].prompt_n,
        "decoded_tokens": samples[0].predicted_n,
        "decode_tok_s": [round(c.decode_tok_s, 2) for c in samples],
        "prompt_tok_s": [round(c.prompt_tok_s, 1) for c in samples],
        "rpc_requests_per_request": statistics.median(c.requests for c in samples),
        "rpc_requests_per_token": per_token(samples, short, "requests"),
        "wire_bytes_per_token": round(per_token(samples, short, "wire_bytes") or 0),
        # CPU the Python processes on the path spent per decoded token (on one machine it competes
        # with llama-server and rpc-server, and most of it sits on the token's critical path).
        "cpu_us_per_token": cpu_per_token_us(samples),
    }
    if short.round_trips is not None:
        summary["rpc_round_trips_per_request"] = statistics.median(c.round_trips or 0 for c in samples)
        summary["rpc_round_trips_per_token"] = per_token(samples, short, "round_trips")
    return summary


def interleaved(
    split: Split, stock_port: int, rounds: int, tokens: int
) -> tuple[dict[str, list[Completion]], dict[str, Completion]]:
    cpu = CpuMeter(
        {
            "a_mesh": split.host.service_pid("mesh"),
            "b_mesh": split.worker.service_pid("mesh"),
            "link_simulator": split.links.pid,  # ours: the simulators; stock: the relay
        }
    )
    paths: dict[str, Callable[[httpx.Client, int], Completion]] = {
        "ours": lambda client, n: measure_ours(client, split, n, cpu),
        "stock": lambda client, n: measure_stock(client, stock_port, split.links, n, cpu),
    }
    samples: dict[str, list[Completion]] = {path: [] for path in paths}
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        for _ in range(WARMUP_REQUESTS):
            for measure in paths.values():
                measure(client, tokens)
        for index in range(rounds):
            order = list(paths) if index % 2 == 0 else list(reversed(paths))
            for path in order:
                samples[path].append(paths[path](client, tokens))
        short = {path: measure(client, 1) for path, measure in paths.items()}
    return samples, short


# ---- the tunnel by itself: llama.cpp RPC spoken directly


class RpcClient:
    """Just enough of a llama.cpp RPC client: HELLO, one buffer, SET_TENSOR + GET_TENSOR round trips."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=ECHO_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._tensor: RpcTensor | None = None
        self._payload = bytes(range(256)) * (ECHO_SET_BYTES // 256)
        self._size = max(ECHO_GET_BYTES.values())

    def send_hello(self) -> None:
        """HELLO and the buffer's allocation at once: a split host answers a HELLO it knows itself,
        and only the allocation takes the connection to the worker's rpc-server."""
        hello = encode_request(RpcCommand.HELLO, bytes(RPC_CONN_CAPS_BYTES))
        self.sock.sendall(hello + encode_request(RpcCommand.ALLOC_BUFFER, _ALLOC_BUFFER.pack(0, self._size)))

    def finish_setup(self) -> None:
        """After send_hello: read both answers, name an F32 tensor filling the buffer."""
        if not HelloResponse.decode(self._response()).compatible:
            raise RuntimeError("rpc-server speaks another protocol version")
        remote_ptr, _ = _U64_PAIR.unpack(self._response())
        if not remote_ptr:
            raise RuntimeError("rpc-server could not allocate a buffer")
        self.sock.sendall(encode_request(RpcCommand.BUFFER_GET_BASE, _U64.pack(remote_ptr)))
        (base,) = _U64.unpack(self._response())
        size = self._size
        self._tensor = RpcTensor(
            id=1, type=GGML_TYPE_F32, buffer=remote_ptr, ne=(size // 4, 1, 1, 1),
            nb=(4, size, size, size), data=base, name="bench-echo",
        )  # fmt: skip

    def round_trip(self, get_bytes: int) -> float:
        """SET_TENSOR 32 KB (no answer) + GET_TENSOR `get_bytes`: one blocking round trip."""
        assert self._tensor is not None
        set_tensor = SetTensorHeader(self._tensor, 0).encode() + self._payload
        get_tensor = GetTensor(self._tensor, 0, get_bytes).encode()
        message = encode_request(RpcCommand.SET_TENSOR, set_tensor)
        message += encode_request(RpcCommand.GET_TENSOR, get_tensor)
        started = time.perf_counter()
        self.sock.sendall(message)
        answer = self._response()
        elapsed = time.perf_counter() - started
        if len(answer) != get_bytes or answer[: len(self._payload)] != self._payload[:get_bytes]:
            raise RuntimeError("GET_TENSOR did not return what SET_TENSOR wrote")
        return elapsed

    def _response(self) -> bytes:
        (size,) = RESPONSE_PREFIX.unpack(self._read(RESPONSE_PREFIX.size))
        return self._read(size)

    def _read(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("rpc-server closed the connection")
            data += chunk
        return bytes(data)

    def close(self) -> None:
        self.sock.close()


def rpc_tunnel_port(split: Split) -> int:
    channel, stub = mesh_stub(split.host)
    with channel:
        request = mesh_pb2.OpenTunnelRequest(
            peer_node_id=split.worker_id,
            kind=mesh_pb2.TUNNEL_KIND_RPC,
            model=split.model,
            model_path=split.host_model_path,
        )
        return int(stub.OpenTunnel(request, timeout=5).port)


def open_tunnel_client(split: Split) -> RpcClient:
    """A connection through the host's RPC tunnel to the worker's rpc-server, which serves one client at
    a time: queue ours behind the host's llama-server's, then stop that llama-server (the runner
    starts it again, and its new connection waits behind ours)."""
    from tests.support.node import wait_until

    host = ready_host_process(split.host)
    assert host is not None
    host_id = split.host.status().node_id
    before = tunnel_stats(split.worker, host_id, False)["connections"]
    client = RpcClient(rpc_tunnel_port(split))
    client.send_hello()
    wait_until(
        lambda: tunnel_stats(split.worker, host_id, False)["connections"] > before,
        10,
        "our tunnel connection to reach the worker",
    )
    time.sleep(0.2)  # the worker's mesh connects to its rpc-server right after counting it
    os.kill(host.pid, signal.SIGTERM)
    client.finish_setup()
    return client


def echo_round_trips(split: Split, direct_port: int, iterations: int) -> dict[str, Any]:
    """Per size, round trips on three paths interleaved: straight to an rpc-server, through one plain
    relay hop (the simulator's, at 0 ms) to another, and through the host's RPC tunnel, whose TLS
    crosses that same kind of hop, to the worker's. `added_ms` = tunnel − relay: the tunnel's own."""
    clients = {"direct": RpcClient(direct_port), "relay": RpcClient(split.links.plain_relay_port)}
    for client in clients.values():
        client.send_hello()
        client.finish_setup()
    clients["tunnel"] = open_tunnel_client(split)
    result: dict[str, Any] = {}
    try:
        for size_name, get_bytes in ECHO_GET_BYTES.items():
            count = iterations if get_bytes <= ECHO_SET_BYTES else max(20, iterations // ECHO_LARGE_SHARE)
            times: dict[str, list[float]] = {path: [] for path in clients}
            for index in range(ECHO_WARMUP + count):
                order = list(clients) if index % 2 == 0 else list(reversed(clients))
                for path in order:
                    elapsed = clients[path].round_trip(get_bytes)
                    if index >= ECHO_WARMUP:
                        times[path].append(elapsed * 1000)
            medians = {path: statistics.median(t) for path, t in times.items()}
            result[size_name] = {
                "iterations": count,
                "set_bytes": ECHO_SET_BYTES,
                "get_bytes": get_bytes,
                **{f"{path}_ms_median": round(ms, 3) for path, ms in medians.items()},
                "tunnel_ms_p90": round(statistics.quantiles(times["tunnel"], n=10)[-1], 3),
                "added_ms": round(medians["tunnel"] - medians["relay"], 3),
                "added_vs_direct_ms": round(medians["tunnel"] - medians["direct"], 3),
            }
    finally:
        for client in clients.values():
            client.close()
    return result


# ---- the run


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="requests per path and RTT")
    parser.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="decoded tokens per request")
    parser.add_argument("--loads", type=int, default=DEFAULT_LOADS, help="loads per path and RTT")
    parser.add_argument(
        "--rtts-ms", default=DEFAULT_RTTS_MS, help="round-trip times to simulate, comma-separated"
    )
    parser.add_argument(
        "--echo-iterations", type=int, default=DEFAULT_ECHO_ITERATIONS, help="32 KB round trips per path"
    )
    parser.add_argument("--serve-links", nargs=5, help=argparse.SUPPRESS)
    return parser.parse_args()


def model_path() -> Path:
    from services.node.catalog import resolve_model

    return Path(resolve_model(CATALOG_MODEL).path)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def loads_and_rounds(
    split: Split, index: int, argvs: dict[str, list[str]], args: argparse.Namespace, logs: Path
) -> tuple[dict[str, list[Any]], dict[str, list[Completion]], dict[str, Completion]]:
    """`--loads` loads per path, alternating which goes first, then the rounds on the last ones. A
    stock llama-server is stopped before the next starts: its rpc-server serves one client at a time."""
    stock: Spawned | None = None
    loads: dict[str, list[Any]] = {"ours": [], "stock": [], "solo_seconds": []}
    try:
        for load in range(args.loads):
            order = ["ours", "stock"] if (index + load) % 2 == 0 else ["stock", "ours"]
            for path in order:
                if path == "ours":
                    loads["ours"].append(load_ours(split))
                    continue
                if stock is not None:
                    stock.stop()
                stock, stock_port, sample = load_stock(argvs["stock"], split.links, logs / "stock.log")
                loads["stock"].append(sample)
            loads["solo_seconds"].append(load_solo(argvs["solo"], logs / "solo.log"))
        progress(
            f"loads ours {[s['seconds'] for s in loads['ours']]} s, stock "
            f"{[s['seconds'] for s in loads['stock']]} s, solo {loads['solo_seconds']} s; "
            f"{args.rounds} rounds of {args.tokens} tokens"
        )
        samples, short = interleaved(split, stock_port, args.rounds, args.tokens)
    finally:
        if stock is not None:
            stock.stop()
    return loads, samples, short


def load_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Median seconds; the counts are the same every load, so the last load's."""
    seconds = [s["seconds"] for s in samples]
    return {**samples[-1], "seconds": seconds, "seconds_median": median(seconds)}


def per_rtt(
    split: Split, rtt: float, index: int, argvs: dict[str, list[str]], args: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    split.links.set_delay(rtt / 2)
    time.sleep(SETTLE_S)
    progress(f"RTT {rtt:g} ms: {args.loads} loads each of ours, stock and solo")
    loads, samples, short = loads_and_rounds(split, index, argvs, args, logs)
    ours, theirs = summarize(samples["ours"], short["ours"]), summarize(samples["stock"], short["stock"])
    pairs = zip(samples["ours"], samples["stock"], strict=True)
    decode_ratio = ours["decode_tok_s_median"] / theirs["decode_tok_s_median"]
    load = {path: load_summary(loads[path]) for path in ("ours", "stock")}
    solo = median(loads["solo_seconds"])
    load["solo"] = {"seconds_median": solo, "seconds": loads["solo_seconds"]}
    load_ratio = load["ours"]["seconds_median"] / solo
    entry = {
        "mesh_ping_rtt_ms": peer_rtt_ms(split.worker),
        "ours": ours,
        "stock": theirs,
        "decode_ratio_ours_over_stock": round(decode_ratio, 4),
        "decode_ratio_paired_median": round(
            statistics.median(o.decode_tok_s / s.decode_tok_s for o, s in pairs), 4
        ),
        "prompt_ratio_ours_over_stock": round(ours["prompt_tok_s_median"] / theirs["prompt_tok_s_median"], 4),
        "same_text": all(
            c.content == samples["stock"][0].content for c in samples["ours"] + samples["stock"]
        ),
        "load": load,
        "load_ratio_ours_over_solo": round(load_ratio, 3),
        "load_ratio_stock_over_solo": round(load["stock"]["seconds_median"] / solo, 3),
        "meets_decode_goal": decode_ratio >= DECODE_GOAL,
        "meets_load_goal": load_ratio <= LOAD_GOAL,
        "meets_weight_goal": all(s["weight_bytes_raw"] == 0 for s in loads["ours"]),
    }
    progress(
        f"RTT {rtt:g} ms: decode ours {ours['decode_tok_s_median']} vs stock {theirs['decode_tok_s_median']} "
        f"tok/s (ratio {entry['decode_ratio_ours_over_stock']})"
    )
    return entry


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from tests.support.node import wait_until

    rtts = [float(r) for r in args.rtts_ms.split(",") if r.strip()]
    root = Path(tempfile.mkdtemp(prefix="bench-split-"))
    logs = root / "logs"
    logs.mkdir()
    started = time.monotonic()
    model = model_path()
    result: dict[str, Any] = {
        "bench": "split",
        "model": model.name,
        "model_bytes": model.stat().st_size,
        "rounds": args.rounds,
        "tokens": args.tokens,
        "loads": args.loads,
        "cpus": os.cpu_count(),
    }
    stock_rpc_port, plain_rpc_port, direct_rpc_port = free_tcp_port(), free_tcp_port(), free_tcp_port()
    try:
        progress(f"starting two nodes on {model.name} (logs in {root})")
        # Speculation off: this measures the transport (bench/speculative.py measures speculation).
        no_speculation = ("--speculation", "off")
        with (
            two_nodes(root, model, (stock_rpc_port, plain_rpc_port), no_speculation) as split,
            ExitStack() as stack,
        ):
            result["split_ready_s"] = round(time.monotonic() - started, 1)
            host = ready_host_process(split.host)
            worker = ready_rpc_server(split.worker)
            assert host is not None and worker is not None
            host_argv, worker_argv = cmdline(host.pid), cmdline(worker.pid)
            result["host_argv"] = " ".join(
                Path(host_argv[0]).name if i == 0 else a for i, a in enumerate(host_argv)
            )
            result["worker_argv"] = " ".join([Path(worker_argv[0]).name, *worker_argv[1:]])
            # Stock: the worker's rpc-server command line on our ports; two more for the echo.
            for port in (stock_rpc_port, plain_rpc_port, direct_rpc_port):
                rpc_server = Spawned(set_flag(worker_argv, "-p", str(port)), logs / f"rpc-{port}.log")
                stack.callback(rpc_server.stop)
                wait_listening(port)
            relay = f"127.0.0.1:{split.links.stock_relay_port}"
            argvs = {
                "stock": set_flag(host_argv, "--rpc", relay),
                "solo": drop_flags(host_argv, ("--rpc", "-ngl", "--tensor-split")),
            }
            progress(f"split ready after {result['split_ready_s']} s: A hosts, B works")
            result["rtt_ms"] = {
                f"{rtt:g}": per_rtt(split, rtt, index, argvs, args, logs) for index, rtt in enumerate(rtts)
            }
            split.links.set_delay(0)
            time.sleep(SETTLE_S)
            progress(f"tunnel round trips, {args.echo_iterations} per path and size")
            echo = echo_round_trips(split, direct_rpc_port, args.echo_iterations)
            echo["meets_goal"] = echo["32KB"]["added_ms"] <= TUNNEL_GOAL_MS
            result["tunnel_round_trip"] = echo
            wait_until(lambda: ready_host_process(split.host), 60, "the host's llama-server back")
            totals = tunnel_stats(split.host, split.worker_id, True)
            stats = split.links.stats()
            result["fast_path"] = {
                "connections": totals["connections"],
                "fast_path_connections": totals["fast_path_connections"],
                "used": totals["fast_path_connections"] > 0,
                "connections_answered_here": totals["connections_answered_here"],
                # The TLS connections went through the worker's simulator, not around it:
                "simulator_tcp_connections": stats["b"]["tcp_connections"],
            }
            result["weight_bytes_raw_total"] = totals["weight_bytes_raw"]
            result["link_packets"] = {name: stats[name]["udp_packets"] for name in ("a", "b")}
    except Exception:
        print(f"bench failed; node homes and logs kept in {root}", file=sys.stderr)
        raise
    shutil.rmtree(root, ignore_errors=True)
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def main() -> None:
    args = parse_args()
    if args.serve_links:
        *ports, path = args.serve_links
        serve_links(*(int(port) for port in ports), path)
        return
    print(json.dumps(bench(args), indent=2))


if __name__ == "__main__":
    main()
