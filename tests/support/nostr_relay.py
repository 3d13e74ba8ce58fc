"""A real Nostr relay for tests: nostr-sdk's LocalRelay (the relay implementation nostr-sdk ships),
run as its own process on 127.0.0.1. Public relays are not reachable from the test machines, so
discovery tests pass `--relay ws://127.0.0.1:PORT`.

    python -m tests.support.nostr_relay --port PORT
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import nostr_sdk

from tests.support.node import REPO_ROOT, RunningNode, accepts, free_port, wait_until


async def serve(port: int) -> None:
    relay = nostr_sdk.LocalRelayBuilder().addr("127.0.0.1").port(port).build()
    running = asyncio.ensure_future(relay.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"relay listening on {await relay.url()}", flush=True)
    await stop.wait()
    relay.shutdown()
    running.cancel()


@dataclass
class RunningRelay:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def stop_all(nodes: list[RunningNode]) -> None:
    """Stop nodes together (each takes a few seconds to wind down its services)."""
    for node in nodes:
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGINT)
    for node in nodes:
        node.stop()


def start_relay() -> RunningRelay:

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.nostr_relay", "--port", str(port)], cwd=REPO_ROOT
    )

    def listening() -> bool:
        assert process.poll() is None, "relay process exited"
        return accepts(port)

    wait_until(listening, 15, "the local Nostr relay")
    time.sleep(0.05)
    return RunningRelay(port, process)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))
