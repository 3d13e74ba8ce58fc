"""`python -m services.gateway` as a process: it follows the runner's Watch stream, routes to the
llama-server the runner reports, answers `meshctl status` (gRPC) and `/api/status`, stops on SIGTERM.

The runner here is a scripted Runner servicer on <home>/run/runner.sock (the real one is its own
service with its own tests); the llama-server behind it is real.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest

from services.node.config import NodeConfig
from services.node.grpc_link import start_server
from services.node.home import NodeHome
from services.proto.meshllm.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.proto.meshllm.runner.v1 import runner_pb2, runner_pb2_grpc

if TYPE_CHECKING:
    from conftest import LlamaServer

pytestmark = pytest.mark.integration

GEMMA = "gemma3-270m"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.05


class ScriptedRunner(runner_pb2_grpc.RunnerServicer):
    """Answers Watch like the runner does: the status now, then again on every change."""

    def __init__(self) -> None:
        self.status = runner_pb2.RunnerStatus()
        self._changed = asyncio.Event()

    def publish(self, model: str, state: int, port: int = 0) -> None:
        process = runner_pb2.ProcessStatus(
            spec=runner_pb2.ProcessSpec(kind=runner_pb2.PROCESS_KIND_LLAMA_SERVER, model=model),
            state=state,
            host="127.0.0.1",
            port=port,
        )
        self.status = runner_pb2.RunnerStatus(generation=self.status.generation + 1, processes=[process])
        self._changed.set()
        self._changed = asyncio.Event()

    async def Watch(
        self, request: runner_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[runner_pb2.RunnerStatus]:
        while True:
            changed = self._changed
            yield self.status
            await changed.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except (httpx.HTTPError, grpc.aio.AioRpcError):
            pass  # not up yet
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"timed out waiting for {what}")


async def _model_state(api: httpx.AsyncClient, model: str) -> str:
    models = (await api.get("/v1/models")).json()["data"]
    return next((m["meshllm"]["state"] for m in models if m["id"] == model), "")


async def test_gateway_process(tmp_path: Path, gemma_server: LlamaServer) -> None:
    home = NodeHome(tmp_path / "node")
    config = NodeConfig(home=home.root, name="test-node", api_port=_free_port(), console_port=_free_port())
    config.save()
    runner = ScriptedRunner()
    register = functools.partial(runner_pb2_grpc.add_RunnerServicer_to_server, runner)
    runner_server = await start_server(home, "runner", register)
    log = (tmp_path / "gateway.log").open("wb")
    command = [sys.executable, "-m", "services.gateway", "--home", str(home.root)]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.api_port}", timeout=30.0)
    console = httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.console_port}", timeout=30.0)
    try:
        runner.publish(GEMMA, runner_pb2.PROCESS_STATE_STARTING)
        await _eventually(lambda: _is(_model_state(api, GEMMA), "loading"), "gemma loading")
        loading = await api.post("/v1/completions", json={"model": GEMMA, "prompt": "Hi"})
        assert loading.status_code == 503 and "retry-after" in loading.headers

        runner.publish(GEMMA, runner_pb2.PROCESS_STATE_READY, gemma_server.port)
        await _eventually(lambda: _is(_model_state(api, GEMMA), "ready"), "gemma ready")
        reply = await api.post("/v1/completions", json={"model": GEMMA, "prompt": "Hi", "max_tokens": 4})
        assert reply.status_code == 200 and reply.json()["choices"][0]["text"]

        await _check_admin_status(home, gemma_server.port)
        status = (await console.get("/api/status")).json()
        assert status["name"] == "test-node"
        assert status["models"][0]["endpoint"] == f"127.0.0.1:{gemma_server.port}"
        assert status["requests_total"] == 1
    finally:
        await api.aclose()
        await console.aclose()
        process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        log.close()
        await runner_server.stop(None)
    assert exit_code == 0, (tmp_path / "gateway.log").read_text()


async def _is(value: Awaitable[str], expected: str) -> bool:
    return await value == expected


async def _check_admin_status(home: NodeHome, port: int) -> None:
    async with grpc.aio.insecure_channel(home.grpc_target("gateway")) as channel:
        admin = gateway_pb2_grpc.AdminStub(channel)
        status = await admin.GetStatus(gateway_pb2.GetStatusRequest(), timeout=5.0)
    assert status.name == "test-node"
    assert status.api_url.endswith("/v1")
    assert [(m.model, m.state, m.local, m.endpoint) for m in status.models] == [
        (GEMMA, "ready", True, f"127.0.0.1:{port}")
    ]
    reachable = {s.name: s.reachable for s in status.services}
    assert reachable == {"mesh": False, "gossip": False, "placement": False, "runner": True, "gateway": True}
    assert status.requests_total == 1
    assert status.requests_in_flight == 0
