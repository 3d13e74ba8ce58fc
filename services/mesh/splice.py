"""Copy bytes both ways between two stream pairs until either side ends (the tunnel's data path)."""

from __future__ import annotations

import asyncio
import contextlib

SPLICE_READ_BYTES = 256 * 1024


async def pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter: list[int] | None = None
) -> None:
    """One direction; half-closes the far side at EOF so request/response protocols finish cleanly."""
    try:
        while True:
            data = await reader.read(SPLICE_READ_BYTES)
            if not data:
                break
            if counter is not None:
                counter[0] += len(data)
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Both directions; when one direction fails (reset, peer gone) the other is torn down too."""
    forward = asyncio.ensure_future(pump(a[0], b[1]))
    backward = asyncio.ensure_future(pump(b[0], a[1]))
    try:
        done, pending = await asyncio.wait([forward, backward], return_when=asyncio.FIRST_EXCEPTION)
        if any(t.exception() is not None for t in done):
            for task in pending:
                task.cancel()
        else:
            await asyncio.gather(*pending, return_exceptions=True)
    finally:
        for task in (forward, backward):
            task.cancel()
        for _, writer in (a, b):
            with contextlib.suppress(Exception):
                writer.close()
