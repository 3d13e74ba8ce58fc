"""The coding agents `make agents` installs, and a pass-through recorder of what they ask a node.

The versions are pinned once, in the Makefile (`AGENT_PACKAGES`); the install lives in
`<cache>/mesh-llm/agents/<first 16 hex of sha256(AGENT_PACKAGES)>/`, which is found here the same way.
A missing install fails the test (`make test` installs it first): never a skip.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.node import MESH_LLM, free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
AGENT_BINARIES = ("opencode", "pi", "codex", "claude")
RECORDER_START_TIMEOUT_S = 10.0
RECORDER_STOP_TIMEOUT_S = 10.0
# Hop-by-hop or recomputed headers; bodies are relayed as raw bytes (still encoded, if they were).
_NOT_RELAYED = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def agent_packages() -> str:
    """The Makefile's pinned `AGENT_PACKAGES`, exactly as make sees it."""
    match = re.search(r"^AGENT_PACKAGES :=(.*)$", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile has no `AGENT_PACKAGES :=` line"
    return match.group(1).strip()


def agents_dir() -> Path:
    cache = os.environ.get("MESH_LLM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mesh-llm"
    )
    digest = hashlib.sha256(agent_packages().encode()).hexdigest()[:16]
    return Path(cache) / "agents" / digest


def agent_bin_dir() -> Path:
    """node_modules/.bin of the pinned install, with every agent in it; fails the test otherwise."""
    root = agents_dir()
    bin_dir = root / "node_modules" / ".bin"
    missing = [name for name in AGENT_BINARIES if not (bin_dir / name).exists()]
    if not (root / ".installed").exists() or missing:
        pytest.fail(
            f"the coding agents are not installed in {root} (missing: {missing or 'its stamp'}); "
            "run `make agents`"
        )
    return bin_dir


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    status: int
    body_bytes: int


@dataclass
class RequestRecorder:
    """An HTTP server on 127.0.0.1 that relays every request to `upstream` unchanged, streaming both
    ways, and notes each one's method, path and status: what an agent sent, on which endpoint."""

    upstream: str
    port: int = field(default_factory=free_port)
    seen: list[SeenRequest] = field(default_factory=list)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    def paths(self, method: str = "POST") -> list[str]:
        return [r.path for r in self.seen if r.method == method]

    async def _relay(self, request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_RELAYED}
        client = httpx.AsyncClient(timeout=None)
        upstream = await client.send(
            client.build_request(
                request.method,
                f"{self.upstream}{request.url.path}",
                params=request.url.query,
                headers=headers,
                content=body,
            ),
            stream=True,
        )
        self.seen.append(SeenRequest(request.method, request.url.path, upstream.status_code, len(body)))

        async def relayed() -> AsyncIterator[bytes]:
            async for chunk in upstream.aiter_raw():
                yield chunk

        async def close() -> None:
            await upstream.aclose()
            await client.aclose()

        reply_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _NOT_RELAYED}
        return StreamingResponse(
            relayed(),
            status_code=upstream.status_code,
            headers=reply_headers,
            background=BackgroundTask(close),
        )

    def start(self) -> RequestRecorder:
        methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]
        app = Starlette(routes=[Route("/{path:path}", self._relay, methods=methods)])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
        self._thread.start()
        wait_until(lambda: server.started, RECORDER_START_TIMEOUT_S, "the request recorder to listen")
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(RECORDER_STOP_TIMEOUT_S)


@dataclass(frozen=True)
class AgentTurn:
    """One `mesh-llm <agent> … -- <agent args>` run to its end, and what its recorder saw."""

    agent: str
    returncode: int | None  # None: killed at the deadline
    stdout: str
    stderr: str
    seconds: float
    seen: tuple[SeenRequest, ...]

    def describe(self) -> str:
        return (
            f"{self.agent}: exit {self.returncode} after {self.seconds:.0f} s; requests {list(self.seen)}\n"
            f"--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-3000:]}"
        )


def run_launcher(
    agent: str,
    launcher_args: list[str],
    env: dict[str, str],
    cwd: Path,
    recorder: RequestRecorder,
    timeout_s: float,
) -> AgentTurn:
    """Run the launcher (which execs the agent) in its own session, so that at the deadline the agent
    and whatever it started go together."""
    started = time.monotonic()
    process = subprocess.Popen(
        [str(MESH_LLM), agent, "--port", str(recorder.port), *launcher_args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
        returncode: int | None = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        returncode = None
    return AgentTurn(agent, returncode, stdout, stderr, time.monotonic() - started, tuple(recorder.seen))
