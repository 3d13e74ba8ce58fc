#!/usr/bin/env python3
"""Model file transfer between peers (FetchFile) vs a plain TCP copy of the same file on the same link.

Starts two real nodes with the `mesh-llm` CLI (tests/support/node.py): A serves a random GGUF of
about `--size-mb` MB (`--model PATH`, so A advertises it), B is a `--client` that joins A over
loopback. Then, interleaved, `--runs` times each:
  - peer: B's mesh fetches the file from A (FetchFile over B's gRPC socket, new dest each run):
    manifest, chunks over the TLS fast path, every chunk and the whole file verified, renamed into
    place. Timed from the call to its DONE message.
  - tcp: a child process sends the file with sendfile() over a plain loopback TCP socket and this
    process writes it to a file (recv_into + write): no encryption, no hashing.
Both write into the same directory and read a source file that is in the page cache. The output
has MB/s per run, medians, `ratio_peer_over_tcp` (ratio of the medians; goal >= 0.5), and the CPU
seconds A's and B's mesh processes spent per run (from /proc): on a small machine the verification
(two sha256 passes on the receiver) and TLS are what a peer transfer costs over a raw copy.

    .venv/bin/python bench/file_transfer.py [--size-mb 512] [--runs 3]

`measure_transfer(source, receiver, ...)` runs the comparison on nodes another bench started.
"""

from __future__ import annotations

import argparse
import hashlib
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from services.proto.meshllm.gossip.v1 import gossip_pb2, gossip_pb2_grpc
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # tests.support is not installed with the project

if TYPE_CHECKING:
    from tests.support.node import RunningNode

MODEL = "transfer"
DEFAULT_SIZE_MB = 512
DEFAULT_RUNS = 3
MB = 1_000_000
# f32 weights at n_embd 1024: ~42 MB per layer (tests/support/tiny_gguf.py).
GGUF_EMBD = 1024
GGUF_BYTES_PER_LAYER = 10 * GGUF_EMBD * GGUF_EMBD * 4
MESH_READY_TIMEOUT_S = 60.0
FETCH_TIMEOUT_S = 600.0
TCP_RECV_BYTES = 1024 * 1024
RATIO_GOAL = 0.5


# ---- the plain TCP copy


def serve_tcp_copy(path: str) -> None:
    """Child process: accept one connection, sendfile() `path` down it, exit."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        print(server.getsockname()[1], flush=True)
        connection, _ = server.accept()
        with connection, open(path, "rb") as handle:
            connection.sendfile(handle)


def tcp_copy(source: Path, dest: Path) -> float:
    """Seconds to copy `source` to `dest` over loopback TCP (a sender process, this one receiving)."""
    sender = subprocess.Popen(
        [sys.executable, __file__, "--serve-tcp", str(source)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert sender.stdout is not None
        port = int(sender.stdout.readline())
        buffer = bytearray(TCP_RECV_BYTES)
        view = memoryview(buffer)
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port)) as connection, open(dest, "wb") as out:
            while count := connection.recv_into(buffer):
                out.write(view[:count])
        elapsed = time.perf_counter() - started
    finally:
        sender.wait(10)
    if dest.stat().st_size != source.stat().st_size:
        raise RuntimeError("the TCP copy is incomplete")
    return elapsed


# ---- the peer transfer


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peer_fetch(receiver: RunningNode, source_id: str, sha256: str, size: int, dest: Path) -> dict[str, Any]:
    request = mesh_pb2.FetchFileRequest(
        name=MODEL, sha256=sha256, bytes=size, dest_path=str(dest), source_node_ids=[source_id]
    )
    with grpc.insecure_channel(receiver.node_home.grpc_target("mesh")) as channel:
        stub = mesh_pb2_grpc.MeshStub(channel)
        started = time.perf_counter()
        messages = list(stub.FetchFile(request, timeout=FETCH_TIMEOUT_S))
        elapsed = time.perf_counter() - started
    last = messages[-1] if messages else None
    if last is None or last.state != mesh_pb2.FETCH_STATE_DONE:
        raise RuntimeError(f"fetch failed: {last}")
    return {"seconds": elapsed, "progress_messages": len(messages)}


def measure_transfer(
    source: RunningNode,
    receiver: RunningNode,
    source_id: str,
    file_path: Path,
    sha256: str,
    out_dir: Path,
    runs: int = DEFAULT_RUNS,
) -> dict[str, Any]:
    """Interleaved peer fetches (receiver's mesh from source's) and plain TCP copies of `file_path`
    into `out_dir`; medians, the ratio and the mesh processes' CPU per run."""
    size = file_path.stat().st_size
    mesh_pids = {"source": source.service_pid("mesh"), "receiver": receiver.service_pid("mesh")}
    peer_s, tcp_s, cpu = [], [], []
    for run in range(runs):
        dest = out_dir / f"peer-{run}.gguf"
        before = {name: cpu_s(pid) for name, pid in mesh_pids.items()}
        peer_s.append(peer_fetch(receiver, source_id, sha256, size, dest)["seconds"])
        cpu.append({name: round(cpu_s(pid) - before[name], 2) for name, pid in mesh_pids.items()})
        dest.unlink()
        copy = out_dir / f"tcp-{run}.bin"
        tcp_s.append(tcp_copy(file_path, copy))
        copy.unlink()
    peer_mb_s = [size / s / MB for s in peer_s]
    tcp_mb_s = [size / s / MB for s in tcp_s]
    ratio = statistics.median(peer_mb_s) / statistics.median(tcp_mb_s)
    return {
        "file_bytes": size,
        "runs": runs,
        "peer_mb_s": [round(v, 1) for v in peer_mb_s],
        "tcp_mb_s": [round(v, 1) for v in tcp_mb_s],
        "peer_mb_s_median": round(statistics.median(peer_mb_s), 1),
        "tcp_mb_s_median": round(statistics.median(tcp_mb_s), 1),
        "ratio_peer_over_tcp": round(ratio, 3),
        "ratio_goal": RATIO_GOAL,
        "mesh_cpu_s_per_peer_run": cpu,
        "cores": os.cpu_count(),
    }


# ---- the two nodes


@contextmanager
def two_nodes(root: Path, model: Path) -> Iterator[tuple[RunningNode, RunningNode, str]]:
    from tests.support.node import RunningNode, free_port, wait_until

    with ExitStack() as stack:
        a = RunningNode(root / "a", free_port(), free_port(), ["--name", "a", "--model", str(model)])
        stack.callback(a.stop)
        a.start().wait_ready([MODEL])
        b = RunningNode(
            root / "b", free_port(), free_port(), ["--name", "b", "--client", "--join", a.invite()]
        )
        stack.callback(b.stop)
        b.start().wait_ready([])
        a_id = a.status().node_id
        wait_until(lambda: advertises(b, a_id), MESH_READY_TIMEOUT_S, "B to see A advertise the file")
        yield a, b, a_id


def advertises(receiver: RunningNode, node_id: str) -> bool:
    with grpc.insecure_channel(receiver.node_home.grpc_target("gossip")) as channel:
        view = gossip_pb2_grpc.GossipStub(channel).GetView(gossip_pb2.GetViewRequest(), timeout=2)
    return any(r.node_id == node_id and any(m.sha256 for m in r.models_on_disk) for r in view.nodes)


def write_model(path: Path, size_mb: int) -> Path:
    from tests.support.tiny_gguf import write_tiny_llama_gguf

    layers = max(1, round(size_mb * MB / GGUF_BYTES_PER_LAYER))
    return write_tiny_llama_gguf(path, n_layers=layers, n_embd=GGUF_EMBD, seed=11)


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from services.runner.binaries import BIN_DIR_ENV, find_llama_bin_dir

    root = Path(tempfile.mkdtemp(prefix="bench-file-transfer-"))
    # This run's hash caches and model stores only; llama.cpp's build stays where it is.
    os.environ[BIN_DIR_ENV] = str(find_llama_bin_dir())
    os.environ["MESH_LLM_CACHE"] = str(root / "cache")
    ok = False
    try:
        model = write_model(root / "models" / f"{MODEL}.gguf", args.size_mb)
        sha256 = hashlib.sha256(model.read_bytes()).hexdigest()
        out = root / "out"
        out.mkdir()
        with two_nodes(root, model) as (a, b, a_id):
            result = measure_transfer(a, b, a_id, model, sha256, out, args.runs)
        ok = True
        return result
    finally:
        if ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"logs kept in {root}", file=sys.stderr)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=DEFAULT_SIZE_MB)
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument("--serve-tcp", metavar="PATH", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.serve_tcp:
        serve_tcp_copy(args.serve_tcp)
        return
    print(json.dumps(bench(args), indent=2))


if __name__ == "__main__":
    main()
