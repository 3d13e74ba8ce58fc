"""Real mesh-llm nodes for tests: the `mesh-llm` CLI, real supervisord, real llama.cpp, own home dir."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx

from services.node.home import NodeHome
from services.proto.meshllm.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.proto.meshllm.runner.v1 import runner_pb2, runner_pb2_grpc

if TYPE_CHECKING:
    from tests.support.netns import Host

REPO_ROOT = Path(__file__).resolve().parents[2]
MESH_LLM = Path(sys.executable).parent / "mesh-llm"
NODE_START_TIMEOUT_S = 120.0
POLL_S = 0.1


# The kernel may hand the same ephemeral port to two probes in a row (the first one is closed by
# then): a node given it as both --port and --console refuses to start. Never hand one out twice.
_handed_out: set[int] = set()


def free_port() -> int:
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def accepts(port: int) -> bool:
    """Something listens on 127.0.0.1:port."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class NodeExited(AssertionError):
    """The node's CLI process ended while a test waited for it: no point waiting any longer."""


def wait_until(predicate, timeout_s: float, what: str, fatal: tuple[type[Exception], ...] = ()):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns something truthy; fail the test with `what` otherwise.
    Exceptions of the `fatal` types end the wait at once; others mean "not yet"."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except fatal:
            raise
        except Exception as exc:  # the thing we wait for may not exist yet
            last_error = exc
        time.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last error: {last_error!r})")


@dataclass
class RunningNode:
    home: Path
    api_port: int
    console_port: int
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    # Runs the node inside this network namespace (tests/support/netns.py); its API is then on
    # 127.0.0.1 there, so HTTP goes through the host too. gRPC uses Unix sockets: unchanged.
    host: Host | None = None
    output: Path = field(init=False)

    def __post_init__(self) -> None:
        self.output = self.home / "cli-output.txt"

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/v1"

    @property
    def node_home(self) -> NodeHome:
        return NodeHome(self.home)

    def start(self) -> RunningNode:
        self.home.mkdir(parents=True, exist_ok=True)
        command = [
            str(MESH_LLM),
            "--home",
            str(self.home),
            "--port",
            str(self.api_port),
            "--console",
            str(self.console_port),
            *self._loopback_pin(),
            *self._own_store(),
            *self.args,
        ]
        with self.output.open("wb") as out:
            if self.host is None:
                self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
            else:
                self.process = self.host.popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        return self

    def _loopback_pin(self) -> list[str]:
        """Nodes on this machine's own network namespace form a same-machine mesh on loopback: tests
        never send mesh traffic to the machine's real interfaces. Nodes in a test-bed namespace
        (`host`) run with the defaults a user gets."""
        if self.host is not None or "--bind-ip" in self.args:
            return []
        return ["--bind-ip", "127.0.0.1"]

    def _own_store(self) -> list[str]:
        """Each test node keeps its model files in its own home, like a separate machine: the shared
        cache would give every node every model (and make standbys take up models no peer shared)."""
        if "--models-dir" in self.args:
            return []
        return ["--models-dir", str(self.home / "models")]

    def http(self, method: str, url: str, **httpx_kwargs: Any) -> httpx.Response:
        """An HTTP request from where the node runs: this machine, or inside its host's namespace."""
        if self.host is None:
            return httpx.request(method, url, **httpx_kwargs)
        return self.host.http(method, url, **httpx_kwargs)

    def cli_output(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_ready(self, models: list[str], timeout_s: float = NODE_START_TIMEOUT_S) -> None:
        def ready() -> bool:
            if self.process is None or self.process.poll() is not None:
                raise NodeExited(f"node {self.home.name} exited: {self.cli_output()}")
            status = self.status()
            states = {m.model: m.state for m in status.models}
            return all(states.get(m) == "ready" for m in models) and "Ctrl-C" in self.cli_output()

        wait_until(ready, timeout_s, f"node {self.home.name} to serve {models}", fatal=(NodeExited,))

    def status(self) -> gateway_pb2.NodeStatus:
        with grpc.insecure_channel(self.node_home.grpc_target("gateway")) as channel:
            return gateway_pb2_grpc.AdminStub(channel).GetStatus(gateway_pb2.GetStatusRequest(), timeout=2)

    def runner_status(self) -> runner_pb2.RunnerStatus:
        with grpc.insecure_channel(self.node_home.grpc_target("runner")) as channel:
            return runner_pb2_grpc.RunnerStub(channel).GetStatus(runner_pb2.GetStatusRequest(), timeout=2)

    def llama_server_pid(self) -> int:
        def ready_pid() -> int:
            [process] = [
                p for p in self.runner_status().processes if p.state == runner_pb2.PROCESS_STATE_READY
            ]
            return process.pid

        return int(wait_until(ready_pid, 60, "a ready llama-server"))

    def service_pid(self, service: str) -> int:
        env = dict(
            os.environ, MESH_LLM_HOME=str(self.home), MESH_LLM_PYTHON=sys.executable, MESH_LLM_SERVES="true"
        )
        supervisorctl = Path(sys.executable).parent / "supervisorctl"
        out = subprocess.run(
            [str(supervisorctl), "-c", str(REPO_ROOT / "deploy/node.conf"), "pid", service],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        pid = int(out.stdout.strip() or 0)
        assert pid > 0, f"{service} not running: {out.stdout} {out.stderr}"
        return pid

    def chat(self, model: str, prompt: str = "Say hello.", max_tokens: int = 16) -> dict:
        response = self.http(
            "POST",
            f"{self.api_base}/chat/completions",
            json={
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens,
                "temperature": 0,
            },
            timeout=60,
        )
        response.raise_for_status()
        return response.json()

    def invite(self) -> str:
        from services.cli.node_status import node_invite

        return node_invite(self.node_home).token

    def log_contains(self, service: str, text: str) -> bool:
        path = self.node_home.logs / f"{service}.log"
        return path.exists() and text in path.read_text(errors="replace")

    def servers_of(self, model: str) -> list[str]:
        listing = self.http("GET", f"{self.api_base}/models", timeout=5).json()["data"]
        for entry in listing:
            if entry["id"] == model:
                return sorted(entry["meshllm"]["nodes"])
        return []

    def kill_hard(self) -> None:
        """SIGKILL every process of this node at once (a machine losing power, as far as peers see)."""
        victims = [
            int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _environ_has(p, self.home)
        ]
        if self.process is not None:
            victims.append(self.process.pid)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 60) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def _environ_has(proc: Path, home: Path) -> bool:
    try:
        return f"MESH_LLM_HOME={home}".encode() in (proc / "environ").read_bytes()
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def llama_processes_under(home: Path) -> list[int]:
    """llama.cpp processes whose command line or log names this node's home (so other tests don't count)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes()
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        if ("llama-server" in cmdline or "rpc-server" in cmdline) and str(home).encode() in environ:
            if pid_alive(int(entry.name)):
                pids.append(int(entry.name))
    return pids
