"""A child process for the length of an `async with`, its output in a log file (tests and benches)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

STOP_TIMEOUT_S = 10.0


@asynccontextmanager
async def process(command: list[str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """Terminated on the way out (killed if it does not stop within STOP_TIMEOUT_S)."""
    with log.open("wb") as out:
        child = await asyncio.create_subprocess_exec(*command, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield child
    finally:
        if child.returncode is None:
            child.terminate()
            try:
                await asyncio.wait_for(child.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                child.kill()
                await child.wait()
