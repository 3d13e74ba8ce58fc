"""FileFetcher's one fetch per destination: a second one is refused while the first runs, but a
fetch right after a cancelled one waits for it to stop, however slowly it stops.

The peer link is a stand-in (no peer is needed to show this): its stream opening never completes,
and when cancelled it takes `stop_s` to give up, as a chunk write in its thread does on a loaded
disk (a thread cannot be cancelled, so the fetch waits for it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.mesh import file_fetch
from services.mesh.file_fetch import FileFetcher
from services.proto.meshllm.mesh.v1 import mesh_pb2

SHA256 = "ab" * 32
QUICK_WAIT_S = 0.2
SLOW_STOP_S = 0.5


class SlowToStopLink:
    def __init__(self, stop_s: float) -> None:
        self.stop_s = stop_s
        self.opened: list[float] = []
        self.stopped: list[float] = []

    async def open_stream(self, kind: int) -> Any:
        self.opened.append(time.monotonic())
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(self.stop_s)
            self.stopped.append(time.monotonic())
            raise


@pytest.fixture(autouse=True)
def quick_duplicate_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_fetch, "PREVIOUS_FETCH_WAIT_S", QUICK_WAIT_S)


def request_for(dest: Path) -> mesh_pb2.FetchFileRequest:
    return mesh_pb2.FetchFileRequest(
        name="m", sha256=SHA256, bytes=1 << 20, dest_path=str(dest), source_node_ids=["peer"]
    )


async def first_report(reports: AsyncIterator[mesh_pb2.FetchProgress]) -> mesh_pb2.FetchProgress:
    return await asyncio.wait_for(anext(reports), 5)


async def test_a_second_fetch_of_a_destination_being_fetched_is_refused(tmp_path: Path) -> None:
    fetcher = FileFetcher(lambda _node_id: SlowToStopLink(0.0), "me")  # type: ignore[arg-type,return-value]
    dest = tmp_path / "model.gguf"
    first = fetcher.fetch(request_for(dest))
    assert (await first_report(first)).state == mesh_pb2.FETCH_STATE_RUNNING
    started = time.monotonic()
    second = await first_report(fetcher.fetch(request_for(dest)))
    assert second.state == mesh_pb2.FETCH_STATE_FAILED
    assert "already being fetched" in second.error
    assert time.monotonic() - started >= QUICK_WAIT_S  # the first's cancel was given time to arrive
    await first.aclose()


@pytest.mark.parametrize("how", ["its task is cancelled", "its stream is closed"])
async def test_a_fetch_right_after_a_cancelled_one_waits_for_it_to_stop(tmp_path: Path, how: str) -> None:
    link = SlowToStopLink(SLOW_STOP_S)
    fetcher = FileFetcher(lambda _node_id: link, "me")  # type: ignore[arg-type,return-value]
    dest = tmp_path / "model.gguf"
    first = fetcher.fetch(request_for(dest))
    reading = asyncio.ensure_future(first_report(first))
    assert (await reading).state == mesh_pb2.FETCH_STATE_RUNNING
    await asyncio.sleep(0.05)  # its source task is in open_stream now
    assert len(link.opened) == 1
    # The two ways a gRPC server lets go of a cancelled call's generator.
    if how == "its task is cancelled":
        reading = asyncio.ensure_future(anext(first))
        await asyncio.sleep(0.05)
        reading.cancel()
    else:
        closing = asyncio.ensure_future(first.aclose())

    second = fetcher.fetch(request_for(dest))
    report = await first_report(second)
    assert report.state == mesh_pb2.FETCH_STATE_RUNNING, report.error  # waited, not refused
    assert len(link.stopped) == 1
    await asyncio.sleep(0.05)
    assert len(link.opened) == 2 and link.opened[1] >= link.stopped[0]  # one fetch at a time
    if how == "its stream is closed":
        await closing
    await second.aclose()
