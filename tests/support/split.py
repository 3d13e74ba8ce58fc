"""Helpers for split-inference tests: copies of one model per node, the same split loaded the stock
way (llama-server `--rpc` straight at fresh rpc-servers), and the mesh's RPC tunnel counters."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx

from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc
from services.runner.commands import default_threads
from services.runner.cpu_cores import physical_cores
from tests.support.node import RunningNode, accepts, free_port, wait_until

STOCK_START_TIMEOUT_S = 120.0
PROMPT = "The lighthouse keeper climbed the stairs as the storm rolled in, and"


def copies_of(model: Path, root: Path, names: list[str]) -> dict[str, Path]:
    """One copy of `model` per node, each in its own folder under the same file name: a worker
    must load its layers from its own copy, never from the host's path."""
    copies = {}
    for name in names:
        folder = root / f"disk-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        copies[name] = Path(shutil.copyfile(model, folder / model.name))
    return copies


def completion(base_url: str, model: str, max_tokens: int = 16) -> str:
    response = httpx.post(
        f"{base_url}/completions",
        json={"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "seed": 1},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["text"])


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def host_argv(host: RunningNode) -> list[str]:
    pid = host.llama_server_pid()
    return [part.decode() for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]]


@contextlib.contextmanager
def stock_split(host: RunningNode, bin_dir: Path, log_dir: Path) -> Iterator[str]:
    """The host's llama-server command line with every --rpc endpoint pointed at a fresh local
    rpc-server instead of the mesh tunnel: same model, shares, -ngl and threads. Yields its /v1."""
    argv = host_argv(host)
    endpoints = _flag(argv, "--rpc").split(",")
    log_dir.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        ports = []
        for index, _ in enumerate(endpoints):
            port = free_port()
            threads = str(default_threads(physical_cores()))
            command = [str(bin_dir / "ggml-rpc-server"), "-H", "127.0.0.1", "-p", str(port), "-t", threads]
            with (log_dir / f"stock-rpc-{index}.log").open("wb") as log:
                processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
            ports.append(port)
        for port in ports:
            wait_until(lambda p=port: accepts(p), 30, f"stock rpc-server on {port}")
        api_port = free_port()
        argv[argv.index("--rpc") + 1] = ",".join(f"127.0.0.1:{port}" for port in ports)
        argv[argv.index("--port") + 1] = str(api_port)
        with (log_dir / "stock-llama-server.log").open("wb") as log:
            processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
        base = f"http://127.0.0.1:{api_port}"
        wait_until(lambda: _healthy(base), STOCK_START_TIMEOUT_S, "the stock split llama-server")
        yield f"{base}/v1"
    finally:
        for process in reversed(processes):
            process.kill()
            process.wait(10)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def tunnels(node: RunningNode) -> list[mesh_pb2.TunnelStats]:
    with grpc.insecure_channel(node.node_home.grpc_target("mesh")) as channel:
        stub = mesh_pb2_grpc.MeshStub(channel)
        return list(stub.ListTunnels(mesh_pb2.ListTunnelsRequest(), timeout=5).tunnels)


def plan_text(node: RunningNode) -> str:
    return meshctl(node, "plan")


def meshctl(node: RunningNode, command: str) -> str:
    binary = Path(sys.executable).parent / "meshctl"
    result = subprocess.run(
        [str(binary), "--home", str(node.home), command],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


SPLIT_READY_TIMEOUT_S = 90.0


def max_vram(model: Path, fraction: float) -> str:
    """--max-vram holding `fraction` of the model's bytes (a split needs 1.1× over the group)."""
    return f"{model.stat().st_size * fraction / 1e9:.9f}"


def start(root: Path, name: str, model: Path, fraction: float, extra: list[str]) -> RunningNode:
    args = ["--name", name, "--model", str(model), "--max-vram", max_vram(model, fraction), *extra]
    return RunningNode(root / name, free_port(), free_port(), args).start()


def answers(node: RunningNode, model: str) -> bool:
    try:
        return bool(completion(node.api_base, model, max_tokens=4))
    except (AssertionError, httpx.HTTPError):
        return False


def split_mesh(root: Path, model: Path, count: int, fraction: float, nodes: list[RunningNode]) -> None:
    """Start `count` nodes into `nodes` (the caller's list, so a failed start still gets them stopped)."""
    disks = copies_of(model, root, [f"n{i}" for i in range(count)])
    first = start(root, "n0", disks["n0"], fraction, [])
    nodes.append(first)
    wait_until(lambda: "Ctrl-C" in first.cli_output(), 60, "the first node to start")
    token = first.invite()
    for i in range(1, count):
        nodes.append(start(root, f"n{i}", disks[f"n{i}"], fraction, ["--join", token]))
    for node in nodes:
        wait_until(
            lambda n=node: answers(n, model.stem),
            SPLIT_READY_TIMEOUT_S,
            f"{node.home.name} to serve the split",
        )
