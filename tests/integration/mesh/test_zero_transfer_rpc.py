"""Zero-transfer loading with the real binaries: llama-server --rpc -> relay -> ggml-rpc-server.

The relay (in this process) feeds llama-server's bytes through HostHalf, then WorkerHalf, into
rpc-server; replies go back raw. The worker half maps its own copy of the model at another path.
Generation at temperature 0 must equal the same setup with the relay passing bytes unchanged, and
no weight byte may cross the "mesh" (HostHalf's output).
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from services.mesh.gguf_index import GgufIndex
from services.mesh.rpc_zero_transfer import HostHalf, WorkerHalf, open_gguf_image
from tests.support.node import free_port
from tests.support.processes import process

pytestmark = pytest.mark.integration

PROMPT = "The lighthouse keeper climbed the stairs as the storm rolled in from the sea, and"
PREDICT_TOKENS = 16
START_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 60.0
POLL_S = 0.05
RELAY_READ_BYTES = 1024**2
LOG_TAIL_BYTES = 3000


@dataclass
class Images:
    """The host's and the worker's own mapping of (copies of) the model."""

    host: tuple[mmap.mmap, GgufIndex]
    worker: tuple[mmap.mmap, GgufIndex]


@dataclass
class Relay:
    images: Images | None  # None: pass bytes unchanged (stock RPC)
    hosts: list[HostHalf] = field(default_factory=list)
    workers: list[WorkerHalf] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def handler(
        self, upstream_port: int
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
            for writer in (client_writer, server_writer):
                writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                await asyncio.gather(
                    self._requests(client_reader, server_writer),
                    self._raw(server_reader, client_writer),
                )
            except Exception as exc:  # recorded and asserted on: the test must see relay failures
                self.errors.append(repr(exc))
            finally:
                client_writer.close()
                server_writer.close()

        return handle

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.images is None:
            await self._raw(reader, writer)
            return
        host, worker = HostHalf(*self.images.host), WorkerHalf(*self.images.worker)
        self.hosts.append(host)
        self.workers.append(worker)
        try:
            while data := await reader.read(RELAY_READ_BYTES):
                for piece in host.feed(data):
                    for out in worker.feed(piece):  # file slices: drain each, never buffer a tensor
                        writer.write(out)
                        await writer.drain()
            writer.write_eof()
        finally:
            host.close()
            worker.close()

    async def _raw(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(RELAY_READ_BYTES):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


def log_tail(log: Path) -> str:
    return log.read_bytes()[-LOG_TAIL_BYTES:].decode(errors="replace")


async def wait_listening(port: int, child: asyncio.subprocess.Process, log: Path) -> None:
    """A probe that closes before HELLO is harmless: rpc-server drops it and accepts the next."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and child.returncode is None:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(POLL_S)
            continue
        writer.close()
        return
    raise AssertionError(f"ggml-rpc-server not listening on {port}:\n{log_tail(log)}")


async def wait_healthy(
    client: httpx.AsyncClient, url: str, child: asyncio.subprocess.Process, log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and child.returncode is None:
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get(url + "/health")).status_code == 200:
                return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"llama-server not healthy (exit {child.returncode}):\n{log_tail(log)}")


async def generate(bin_dir: Path, model: Path, relay: Relay, logs: Path) -> str:
    """Start rpc-server and llama-server (every layer on the RPC device) behind `relay`; complete."""
    rpc_port, http_port = free_port(), free_port()
    server = await asyncio.start_server(relay.handler(rpc_port), "127.0.0.1", 0)
    relay_port = server.sockets[0].getsockname()[1]
    rpc_cmd = [str(bin_dir / "ggml-rpc-server"), "-H", "127.0.0.1", "-p", str(rpc_port), "-t", "1"]
    llama_cmd = [
        str(bin_dir / "llama-server"), "-m", str(model), "--rpc", f"127.0.0.1:{relay_port}", "-ngl", "99",
        "--cache-ram", "0", "--ctx-checkpoints", "0", "-c", "512", "-np", "1", "-t", "1",
        "--host", "127.0.0.1", "--port", str(http_port), "--no-webui",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{http_port}"
    rpc_log, llama_log = logs / "rpc.log", logs / "llama.log"
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(server.wait_closed)
        stack.callback(server.close)
        client = await stack.enter_async_context(httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S))
        rpc_server = await stack.enter_async_context(process(rpc_cmd, rpc_log))
        await wait_listening(rpc_port, rpc_server, rpc_log)
        llama = await stack.enter_async_context(process(llama_cmd, llama_log))
        await wait_healthy(client, url, llama, llama_log)
        body = {"prompt": PROMPT, "n_predict": PREDICT_TOKENS, "temperature": 0, "cache_prompt": False}
        response = await client.post(url + "/completion", json=body)
        assert response.status_code == 200, f"{response.text}\n{log_tail(llama_log)}"
        content = response.json()["content"]
        assert isinstance(content, str)
    assert not relay.errors, relay.errors
    return content


@pytest.mark.parametrize("model_fixture", ["tiny_gguf", "gemma_path"])
async def test_zero_transfer_generates_like_stock_with_no_weight_bytes(
    model_fixture: str, request: pytest.FixtureRequest, llama_bin_dir: Path, tmp_path: Path
) -> None:
    model: Path = request.getfixturevalue(model_fixture)
    worker_copy = tmp_path / "worker" / model.name
    worker_copy.parent.mkdir()
    await asyncio.to_thread(shutil.copyfile, model, worker_copy)
    (tmp_path / "stock").mkdir()
    (tmp_path / "zero").mkdir()
    stock = await generate(llama_bin_dir, model, Relay(None), tmp_path / "stock")
    host_image, worker_image = open_gguf_image(model), open_gguf_image(worker_copy)
    try:
        relay = Relay(Images(host_image, worker_image))
        zero = await generate(llama_bin_dir, model, relay, tmp_path / "zero")
    finally:
        host_image[0].close()
        worker_image[0].close()
    assert zero == stock and stock
    sent = [host.counters for host in relay.hosts]
    by_reference = sum(c.weight_bytes_by_reference for c in sent)
    model_bytes = sum(extent.size for extent in host_image[1].tensors.values())
    assert sum(c.weight_bytes_raw for c in sent) == 0
    # The token embeddings are read on the host's CPU (llama.cpp keeps the input layer there) unless
    # the output reuses them (Gemma): every other tensor goes to the RPC device.
    embeddings = host_image[1].tensors["token_embd.weight"].size
    assert model_bytes - embeddings <= by_reference <= model_bytes
    assert sum(w.counters.file_bytes for w in relay.workers) == by_reference
    mesh_bytes = sum(c.bytes_out for c in sent)
    assert mesh_bytes < sum(c.request_bytes_in for c in sent) - by_reference + 400 * sum(
        c.references for c in sent
    )
