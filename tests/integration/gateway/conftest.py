"""Fixtures: a real llama-server on Gemma 270M and the real gateway app in front of it.

The gateway's routing table is set directly (the pure seam in services/gateway/routing.py), so these
tests need no runner or placement service; everything on the HTTP path is real. The llama.cpp build
and the model come from the shared fixtures in tests/conftest.py (`llama_bin_dir`, `gemma_path`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from services.gateway.app import EmbeddedServer, bind_listener, embedded_server
from services.gateway.openai_api import build_api_app
from services.gateway.proxy import UpstreamProxy
from services.gateway.routing import LocalServer, Route, RoutingTable, ServerState
from services.gateway.sources import RoutingSources
from services.gateway.status import RequestCounters
from services.node.service_main import run_event_loop
from services.runner.commands import llama_server_argv
from services.runner.gguf_meta import read_model_traits
from services.runner.slots import choose_layout
from services.runner.spec import ProcessKind, ProcessSpec

GEMMA = "gemma3-270m"
LLAMA_START_TIMEOUT_S = 60.0
GATEWAY_START_TIMEOUT_S = 10.0
PROCESS_STOP_TIMEOUT_S = 10.0
POLL_S = 0.1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def poll_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


@dataclass
class LlamaServer:
    """One llama-server process in its own process group, logging to a file."""

    bin_dir: Path
    model_path: str
    alias: str
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # The whole command line, when a test wants the runner's own (services/runner/commands.py);
    # `{port}` is filled in.
    argv: list[str] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LlamaServer:
        command = [
            str(self.bin_dir / "llama-server"), "-m", self.model_path, "--host", "127.0.0.1",
            "--port", str(self.port), "-c", "2048", "--alias", self.alias,
        ]  # fmt: skip
        if self.argv is not None:
            command = [arg.replace("{port}", str(self.port)) for arg in self.argv]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        poll_until(self._healthy, LLAMA_START_TIMEOUT_S, f"llama-server /health (log: {self.log_path})")
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"llama-server exited: {self.log_path.read_text(errors='replace')[-2000:]}")
        return httpx.get(self.base_url + "/health", timeout=1.0).status_code == 200

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(PROCESS_STOP_TIMEOUT_S)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(PROCESS_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()


class GatewayThread:
    """The gateway API app served by uvicorn on its own event loop, so sync SDK calls can't block it."""

    def __init__(self, sources: RoutingSources, counters: RequestCounters) -> None:
        self.sources = sources
        self.counters = counters
        self._sock = bind_listener("127.0.0.1", 0)
        self.port = self._sock.getsockname()[1]
        # The production event loop (uvloop where installed), in a thread of its own.
        self._thread = threading.Thread(target=run_event_loop, args=(self._serve(),), daemon=True)
        self._server: EmbeddedServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self) -> None:
        proxy = UpstreamProxy()
        self._server = embedded_server(build_api_app(self.sources, proxy, self.counters))
        try:
            await self._server.serve(sockets=[self._sock])
        finally:
            await proxy.aclose()

    def start(self) -> GatewayThread:
        self._thread.start()
        poll_until(
            lambda: httpx.get(self.base_url + "/health").status_code == 200,
            GATEWAY_START_TIMEOUT_S,
            "gateway",
        )
        return self

    def wait_idle(self, timeout_s: float) -> None:
        """Until no request is in flight: every relayed response has been closed."""
        poll_until(lambda: self.counters.in_flight == 0, timeout_s, "in-flight requests to finish")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(PROCESS_STOP_TIMEOUT_S)


def runner_argv(
    model: str, model_path: Path, bin_dir: Path, context_tokens: int, threads: int, speculation: str = ""
) -> list[str]:
    """The runner's own llama-server command line for `model` (its slots, -kvu, speculation), with
    `{port}` for start_model_server to fill in."""
    spec = ProcessSpec(
        key=f"llama-server/{model}",
        kind=ProcessKind.LLAMA_SERVER,
        model=model,
        model_path=str(model_path),
        context_size=context_tokens,
        speculation=speculation,
    )
    argv = llama_server_argv(spec, bin_dir, 1, threads, read_model_traits(model_path))
    argv[argv.index("--port") + 1] = "{port}"
    return argv


def runner_server_table(model: str, port: int, model_path: Path, context_tokens: int) -> RoutingTable:
    """The table for one ready llama-server started with the runner's command line: the gateway
    knows its context and slots as the runner's layout chose them."""
    layout = choose_layout(read_model_traits(model_path), context_tokens, 0, 0)
    server = LocalServer(
        model,
        ServerState.READY,
        "127.0.0.1",
        port,
        context_tokens=layout.context_tokens,
        slots=layout.slots,
    )
    return RoutingTable.build([server], ())


@pytest.fixture(scope="module")
def gemma_server(
    llama_bin_dir: Path, gemma_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    log = tmp_path_factory.mktemp("llama") / "llama-server.log"
    server = LlamaServer(llama_bin_dir, str(gemma_path), GEMMA, log).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway_table(gemma_server: LlamaServer) -> RoutingTable:
    """What the gateway routes; a test module overrides this fixture to add other states."""
    return RoutingTable.from_routes([Route(GEMMA, "127.0.0.1", gemma_server.port)])


@pytest.fixture(scope="module")
def gateway(gateway_table: RoutingTable) -> Iterator[GatewayThread]:
    sources = RoutingSources()
    sources.table = gateway_table
    thread = GatewayThread(sources, RequestCounters()).start()
    yield thread
    thread.stop()


@pytest.fixture
def start_llama_server(
    llama_bin_dir: Path, gemma_path: Path, tmp_path: Path
) -> Iterator[Callable[[str], LlamaServer]]:
    """Start extra Gemma servers (e.g. one a test kills); all are stopped at teardown."""
    started: list[LlamaServer] = []

    def start(alias: str) -> LlamaServer:
        server = LlamaServer(llama_bin_dir, str(gemma_path), alias, tmp_path / f"{alias}.log")
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def start_model_server(
    llama_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[Path, str, list[str]], LlamaServer]]:
    """Start llama-servers on any model with a given command line (`{port}` filled in); all are
    stopped when the module is done."""
    started: list[LlamaServer] = []
    logs = tmp_path_factory.mktemp("model-servers")

    def start(model_path: Path, alias: str, argv: list[str]) -> LlamaServer:
        server = LlamaServer(llama_bin_dir, str(model_path), alias, logs / f"{alias}.log", argv=argv)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
