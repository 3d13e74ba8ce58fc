#!/usr/bin/env python3
"""What the llama.cpp RPC stream carries: load-time commands and bytes, weight uploads vs the GGUF file,
and blocking round trips per decoded token (DESIGN §2, "Zero-transfer loading").

Per model it starts `ggml-rpc-server` on 127.0.0.1 and `llama-server --rpc 127.0.0.1:<relay> -ngl 99`
(every layer on the RPC device), where the relay is a TCP relay in this process that feeds both
directions through `services.mesh.rpc_protocol`'s parsers. It records:

- load (start -> /health ok, including llama-server's warmup decode): per-command counts and bytes;
- weights: each SET_TENSOR / SET_TENSOR_HASH whose `rpc_tensor.name` is a GGUF tensor name, and
  whether the SET_TENSOR data equals the file bytes at that tensor's data offset + the request offset;
- decode: after one warm-up completion, two of the same prompt (`cache_prompt: false`) with 1 and
  1+K tokens. `per_step` splits the long run at each GRAPH_COMPUTE / GRAPH_RECOMPUTE (one per decode
  step with every layer remote) and gives medians over the decode steps: the steady cost of a token.
  `runs` has each run's totals, so per-request traffic shows as the rest: llama-server's prompt-cache
  save (`--cache-ram`) and SWA context checkpoint (`--ctx-checkpoints`) read KV views back with one
  GET_TENSOR each (`get_tensor_names_*_run`).

    .venv/bin/python bench/rpc_trace.py [--models tiny,gemma3-270m] [--tokens 32] [--threads 1]
                                        [--llama-args '--cache-ram 0 --ctx-checkpoints 0']

Prints one JSON object. Process logs go to a temp dir, printed on stderr if a run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mmap
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from asyncio import StreamReader, StreamWriter
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from services.mesh.gguf_index import GgufIndex, read_gguf_index  # noqa: E402
from services.mesh.rpc_messages import (  # noqa: E402
    GetTensor,
    SetTensorHash,
    SetTensorHeader,
    decode_bool_response,
)
from services.mesh.rpc_protocol import (  # noqa: E402
    REQUEST_PREFIX,
    RESPONSE_PREFIX,
    SET_TENSOR_HEADER_BYTES,
    RpcCommand,
    RpcPayloadChunk,
    RpcProtocolError,
    RpcRequest,
    RpcRequestEnd,
    RpcRequestEvent,
    RpcRequestHead,
    RpcRequestParser,
    RpcResponse,
    RpcResponseParser,
    expects_response,
)
from tests.support.processes import process  # noqa: E402

PROMPT = "The lighthouse keeper climbed the stairs as the storm rolled in from the sea, and"
DEFAULT_MODELS = "tiny,gemma3-270m"
DEFAULT_DECODE_TOKENS = 32
CONTEXT_TOKENS = 1024
START_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.1
RELAY_READ_BYTES = 1024 * 1024
NAME_SAMPLE_COUNT = 8


def answered(counts: Counter[str]) -> int:
    """How many of these commands block the client on a reply: its round trips."""
    return sum(n for name, n in counts.items() if expects_response(RpcCommand[name]))


@dataclass
class PhaseTraffic:
    count: Counter[str] = field(default_factory=Counter)
    request_bytes: Counter[str] = field(default_factory=Counter)  # incl. the 9-byte prefix
    response_bytes: Counter[str] = field(default_factory=Counter)  # incl. the 8-byte prefix
    names: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def summary(self) -> dict[str, object]:
        commands = {
            name: {
                "count": self.count[name],
                "request_bytes": self.request_bytes[name],
                "response_bytes": self.response_bytes[name],
            }
            for name in sorted(self.count)
        }
        return {"commands": commands, **self.totals()}

    def totals(self) -> dict[str, int]:
        return {
            "round_trips": answered(self.count),
            "client_to_server_bytes": sum(self.request_bytes.values()),
            "server_to_client_bytes": sum(self.response_bytes.values()),
        }


@dataclass
class Upload:
    """One SET_TENSOR in flight: its header and how many data bytes were compared so far."""

    header: SetTensorHeader
    seen: int = 0
    matches: bool = True


@dataclass
class WeightAudit:
    """SET_TENSOR / SET_TENSOR_HASH vs the GGUF file: does every weight upload carry file bytes?"""

    index: GgufIndex
    image: mmap.mmap
    uploads: int = 0
    named: int = 0
    matching: int = 0
    weight_data_bytes: int = 0
    mismatches: list[str] = field(default_factory=list)
    tensors: set[str] = field(default_factory=set)
    other_bytes: int = 0
    other_names: Counter[str] = field(default_factory=Counter)
    hash_requests: int = 0
    hash_named: int = 0
    hash_hits: int = 0
    cache_flagged: int = 0

    def start(self, head: bytes) -> Upload:
        self.uploads += 1
        upload = Upload(SetTensorHeader.decode(head))
        self.cache_flagged += upload.header.cache_flag
        return upload

    def chunk(self, upload: Upload, data: bytes) -> None:
        extent = self.index.extent(upload.header.tensor.name)
        if extent is not None and upload.matches:
            start = extent.offset + upload.header.offset + upload.seen
            in_bounds = upload.header.offset + upload.seen + len(data) <= extent.size
            upload.matches = in_bounds and self.image[start : start + len(data)] == data
        upload.seen += len(data)

    def finish(self, upload: Upload) -> None:
        name = upload.header.tensor.name
        if self.index.extent(name) is None:
            self.other_bytes += upload.seen
            self.other_names[name] += 1
            return
        self.named += 1
        self.tensors.add(name)
        self.weight_data_bytes += upload.seen
        if upload.matches:
            self.matching += 1
        else:
            self.mismatches.append(f"{name}@{upload.header.offset}+{upload.seen}")

    def hash_request(self, payload: bytes) -> None:
        self.hash_requests += 1
        self.hash_named += self.index.extent(SetTensorHash.decode(payload).tensor.name) is not None

    def summary(self) -> dict[str, object]:
        return {
            "gguf_tensors": len(self.index.tensors),
            "set_tensor_uploads": self.uploads,
            "uploads_with_gguf_name": self.named,
            "uploads_matching_file_bytes": self.matching,
            "mismatches": self.mismatches[:NAME_SAMPLE_COUNT],
            "distinct_gguf_tensors_uploaded": len(self.tensors),
            "weight_data_bytes": self.weight_data_bytes,
            "set_tensor_hash_requests": self.hash_requests,
            "set_tensor_hash_with_gguf_name": self.hash_named,
            "set_tensor_hash_hits": self.hash_hits,
            "set_tensors_with_cache_flag": self.cache_flagged,
            "other_set_tensor_uploads": sum(self.other_names.values()),
            "other_set_tensor_bytes": self.other_bytes,
            "other_set_tensor_names": dict(self.other_names.most_common(NAME_SAMPLE_COUNT)),
        }


@dataclass
class Step:
    commands: Counter[str] = field(default_factory=Counter)
    to_server_bytes: int = 0
    to_client_bytes: int = 0


@dataclass
class Trace:
    """Everything the relay saw, bucketed by the phase the bench was in."""

    audit: WeightAudit
    phase: str = "load"
    phases: dict[str, PhaseTraffic] = field(default_factory=lambda: defaultdict(PhaseTraffic))
    connections: int = 0
    protocol_errors: list[str] = field(default_factory=list)
    # Long run only: the commands from one graph computation up to the next (one decode step when
    # every layer is on the RPC device); steps[0] is the prompt.
    steps: list[Step] = field(default_factory=list)
    relays: set[asyncio.Task[None]] = field(default_factory=set)

    def _count_step(self, command: RpcCommand, wire_bytes: int) -> None:
        if self.phase != "long":
            return
        if command in (RpcCommand.GRAPH_COMPUTE, RpcCommand.GRAPH_RECOMPUTE):
            self.steps.append(Step())
        if self.steps:
            self.steps[-1].commands[command.name] += 1
            self.steps[-1].to_server_bytes += wire_bytes

    def on_request(self, event: RpcRequestEvent, upload: Upload | None) -> Upload | None:
        traffic = self.phases[self.phase]
        if isinstance(event, RpcRequest | RpcRequestHead):
            name = event.command.name
            size = len(event.payload) if isinstance(event, RpcRequest) else event.payload_bytes
            traffic.count[name] += 1
            traffic.request_bytes[name] += REQUEST_PREFIX.size + size
            self._count_step(event.command, REQUEST_PREFIX.size + size)
        if isinstance(event, RpcRequestHead):
            upload = self.audit.start(event.head)
            traffic.names["SET_TENSOR"][upload.header.tensor.name] += 1
            return upload
        if isinstance(event, RpcPayloadChunk) and upload is not None:
            self.audit.chunk(upload, event.data)
        elif isinstance(event, RpcRequestEnd) and upload is not None:
            self.audit.finish(upload)
            return None
        elif isinstance(event, RpcRequest):
            self._on_whole_request(event, traffic)
        return upload

    def _on_whole_request(self, event: RpcRequest, traffic: PhaseTraffic) -> None:
        if event.command is RpcCommand.SET_TENSOR:
            upload = self.audit.start(event.payload)
            self.audit.chunk(upload, event.payload[SET_TENSOR_HEADER_BYTES:])
            self.audit.finish(upload)
            traffic.names["SET_TENSOR"][upload.header.tensor.name] += 1
        elif event.command is RpcCommand.SET_TENSOR_HASH:
            self.audit.hash_request(event.payload)
        elif event.command is RpcCommand.GET_TENSOR:
            traffic.names["GET_TENSOR"][GetTensor.decode(event.payload).tensor.name] += 1

    def on_response(self, response: RpcResponse) -> None:
        traffic = self.phases[self.phase]
        wire_bytes = RESPONSE_PREFIX.size + len(response.payload)
        traffic.response_bytes[response.command.name] += wire_bytes
        if self.phase == "long" and self.steps:
            self.steps[-1].to_client_bytes += wire_bytes
        if response.command is RpcCommand.SET_TENSOR_HASH:
            self.audit.hash_hits += decode_bool_response(response.payload)


async def pump_requests(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trace: Trace,
                        responses: RpcResponseParser) -> None:  # fmt: skip
    parser, upload, parsing = RpcRequestParser(), None, True
    while data := await reader.read(RELAY_READ_BYTES):
        if parsing:
            try:
                for event in parser.feed(data):
                    responses.expect_reply_to(event)  # before forwarding: the answer cannot beat it
                    upload = trace.on_request(event, upload)
            except RpcProtocolError as exc:
                trace.protocol_errors.append(f"request: {exc}")
                parsing = False
        writer.write(data)
        await writer.drain()
    writer.write_eof()


async def pump_responses(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trace: Trace,
                         parser: RpcResponseParser) -> None:  # fmt: skip
    parsing = True
    while data := await reader.read(RELAY_READ_BYTES):
        if parsing:
            try:
                for response in parser.feed(data):
                    trace.on_response(response)
            except RpcProtocolError as exc:
                trace.protocol_errors.append(f"response: {exc}")
                parsing = False
        writer.write(data)
        await writer.drain()
    writer.close()


def relay_handler(
    trace: Trace, upstream_port: int
) -> Callable[[StreamReader, StreamWriter], Awaitable[None]]:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        trace.connections += 1
        task = asyncio.current_task()
        assert task is not None
        trace.relays.add(task)  # owned by trace_model, which awaits or cancels it on the way out
        task.add_done_callback(trace.relays.discard)
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        for stream_writer in (client_writer, server_writer):
            stream_writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        responses = RpcResponseParser()
        try:
            await asyncio.gather(
                pump_requests(client_reader, server_writer, trace, responses),
                pump_responses(server_reader, client_writer, trace, responses),
            )
        except (ConnectionError, OSError) as exc:
            trace.protocol_errors.append(f"relay: {exc!r}")
        finally:
            for stream_writer in (client_writer, server_writer):
                stream_writer.close()

    return handle


async def stop_relay(relay: asyncio.Server, trace: Trace) -> None:
    """After both processes are gone: their connections hit EOF, so the relay tasks end on their own."""
    relay.close()
    await relay.wait_closed()
    if trace.relays:
        _, stuck = await asyncio.wait(set(trace.relays), timeout=STOP_TIMEOUT_S)
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_listening(port: int, child: asyncio.subprocess.Process) -> None:
    """A probe connection that closes before HELLO is harmless: rpc-server drops it and accepts the next."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and child.returncode is None:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(POLL_S)
            continue
        writer.close()
        return
    raise RuntimeError(f"ggml-rpc-server not listening on {port} (exit code {child.returncode})")


async def wait_healthy(client: httpx.AsyncClient, url: str, child: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.returncode is not None:
            raise RuntimeError(f"llama-server exited with {child.returncode}")
        try:
            if (await client.get(url + "/health")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(POLL_S)
    raise RuntimeError(f"llama-server not healthy after {START_TIMEOUT_S:g} s")


async def complete(client: httpx.AsyncClient, url: str, tokens: int) -> dict[str, float]:
    body = {
        "prompt": PROMPT,
        "n_predict": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "cache_prompt": False,
    }
    response = await client.post(url + "/completion", json=body)
    response.raise_for_status()
    timings = response.json()["timings"]
    return {key: timings[key] for key in ("prompt_n", "predicted_n", "predicted_per_second")}


def steady_state(steps: list[Step]) -> dict[str, object]:
    """Median per decode step (prompt step excluded): what a token costs once a request is running."""
    decode = steps[1:]
    names = sorted({name for step in decode for name in step.commands})
    trips = [
        sum(n for name, n in step.commands.items() if expects_response(RpcCommand[name])) for step in decode
    ]
    return {
        "steps": len(decode),
        "commands_median": {
            name: statistics.median(step.commands[name] for step in decode) for name in names
        },
        "round_trips": {"min": min(trips), "median": statistics.median(trips), "max": max(trips)},
        "client_to_server_bytes_median": statistics.median(step.to_server_bytes for step in decode),
        "server_to_client_bytes_median": statistics.median(step.to_client_bytes for step in decode),
    }


async def trace_model(model: str, bin_dir: Path, args: argparse.Namespace, logs: Path) -> dict[str, object]:
    path = Path(model) if model.endswith(".gguf") else model_path(model, logs)
    index = await asyncio.to_thread(read_gguf_index, path)
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as image:
        trace = Trace(WeightAudit(index, image))
        rpc_port, http_port = free_port(), free_port()
        relay = await asyncio.start_server(relay_handler(trace, rpc_port), "127.0.0.1", 0)
        relay_port = relay.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{http_port}"
        server_cmd = [
            str(bin_dir / "ggml-rpc-server"),
            "-H",
            "127.0.0.1",
            "-p",
            str(rpc_port),
            "-t",
            str(args.threads),
        ]
        llama_cmd = [
            str(bin_dir / "llama-server"), "-m", str(path), "--host", "127.0.0.1", "--port", str(http_port),
            "--rpc", f"127.0.0.1:{relay_port}", "-ngl", "99", "-c", str(CONTEXT_TOKENS),
            "-t", str(args.threads), "-np", "1", *shlex.split(args.llama_args),
        ]  # fmt: skip
        async with AsyncExitStack() as stack, httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client:
            stack.push_async_callback(stop_relay, relay, trace)
            rpc_server = await stack.enter_async_context(process(server_cmd, logs / "rpc.log"))
            await wait_listening(rpc_port, rpc_server)
            started = time.monotonic()
            llama = await stack.enter_async_context(process(llama_cmd, logs / f"{path.stem}.log"))
            await wait_healthy(client, url, llama)
            load_s = time.monotonic() - started
            # One throwaway completion first: it fills the client's GET_ALLOC_SIZE cache for this
            # prompt length, which the short run would otherwise pay and the long run not.
            trace.phase = "warm"
            await complete(client, url, 1 + args.tokens)
            trace.phase = "short"
            short = await complete(client, url, 1)
            trace.phase = "long"
            long = await complete(client, url, 1 + args.tokens)
            trace.phase = "after"
        return {
            "model": path.name,
            "ngl": 99,
            "llama_args": args.llama_args,
            "connections": trace.connections,
            "protocol_errors": trace.protocol_errors,
            "load": {"seconds": round(load_s, 2), **trace.phases["load"].summary()},
            "weights": trace.audit.summary(),
            "decode": {
                "tokens": args.tokens,
                "server_tok_s": round(long["predicted_per_second"], 2),
                "completion_timings": {"short": short, "long": long},
                "per_step": steady_state(trace.steps),
                "runs": {run: trace.phases[run].totals() for run in ("short", "long")},
                "get_tensor_names_short_run": dict(trace.phases["short"].names["GET_TENSOR"]),
                "get_tensor_names_long_run": dict(trace.phases["long"].names["GET_TENSOR"]),
                "set_tensor_names_long_run": dict(trace.phases["long"].names["SET_TENSOR"]),
            },
        }


def model_path(model: str, logs: Path) -> Path:
    if model == "tiny":
        from tests.support.tiny_gguf import write_tiny_llama_gguf

        target = logs / "tiny.gguf"
        write_tiny_llama_gguf(target, seed=0)
        return target
    from services.node.catalog import resolve_model

    return Path(resolve_model(model).path)


def llama_bin_dir() -> Path:
    printed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "llama.cpp" / "build.py"), "--print-dir"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return Path(printed.stdout.strip().splitlines()[-1])


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", default=DEFAULT_MODELS, help="comma-separated: tiny, catalog names, .gguf"
    )
    parser.add_argument("--tokens", type=int, default=DEFAULT_DECODE_TOKENS, help="decoded tokens measured")
    parser.add_argument("--threads", type=int, default=1, help="threads for llama-server and rpc-server")
    parser.add_argument("--llama-args", default="", help="extra llama-server arguments, e.g. '--cache-ram 0'")
    args = parser.parse_args()
    bin_dir = llama_bin_dir()
    results: dict[str, object] = {}
    logs = Path(tempfile.mkdtemp(prefix="rpc-trace-"))
    for model in args.models.split(","):
        try:
            results[model] = await trace_model(model, bin_dir, args, logs)
        except Exception:
            print(f"rpc_trace: {model} failed; logs in {logs}", file=sys.stderr)
            raise
    print(json.dumps({"bench": "rpc_trace", "bin_dir": str(bin_dir), "models": results}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
