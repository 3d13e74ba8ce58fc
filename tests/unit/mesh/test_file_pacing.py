"""File bytes yield to inference (services/mesh/file_pacing.py) and progress is rate-limited
(services/mesh/transfer_rate.py): pure, with a fake clock."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from services.mesh.file_pacing import (
    FILE_BYTES_PER_S_WHILE_INFERENCE,
    PACED_SLICE_BYTES,
    PACING_BURST_S,
    SendPacer,
    TunnelActivity,
)
from services.mesh.transfer_rate import PROGRESS_MIN_INTERVAL_S, ReportGate, TransferRate

MIB = 1024 * 1024


def sent_in(pacer: SendPacer, seconds: float, busy: bool) -> int:
    """Bytes a sender following the pacer gets out in `seconds` (it sleeps exactly as told)."""
    now, total = 100.0, 0
    while True:
        count = pacer.slice_bytes(busy, MIB)
        now += pacer.delay_s(count, now, busy)
        if now >= 100.0 + seconds:
            return total
        total += count


def test_without_inference_or_cap_file_bytes_go_at_full_speed() -> None:
    pacer = SendPacer()
    assert pacer.rate(inference_busy=False) == 0
    assert pacer.slice_bytes(False, 8 * MIB) == 8 * MIB
    assert all(pacer.delay_s(MIB, 1.0, False) == 0 for _ in range(100))


def test_while_inference_runs_file_bytes_are_paced_in_small_slices() -> None:
    pacer = SendPacer()
    assert pacer.slice_bytes(True, 8 * MIB) == PACED_SLICE_BYTES
    sent = sent_in(pacer, 2.0, busy=True)
    expected = 2.0 * FILE_BYTES_PER_S_WHILE_INFERENCE
    assert expected <= sent <= expected * 1.1 + PACING_BURST_S * FILE_BYTES_PER_S_WHILE_INFERENCE


def test_an_operator_cap_applies_always_and_the_lower_rate_wins() -> None:
    pacer = SendPacer(cap_bytes_per_s=4 * MIB)
    assert pacer.rate(False) == 4 * MIB and pacer.rate(True) == 4 * MIB
    fast_cap = SendPacer(cap_bytes_per_s=10 * FILE_BYTES_PER_S_WHILE_INFERENCE)
    assert fast_cap.rate(True) == FILE_BYTES_PER_S_WHILE_INFERENCE


def test_an_idle_pacer_allows_only_a_short_burst() -> None:
    pacer = SendPacer(cap_bytes_per_s=MIB)
    assert pacer.delay_s(MIB // 2, 1000.0, False) == 0  # idle for ages: no debt, little credit
    delay = pacer.delay_s(MIB // 2, 1000.0, False)
    assert delay == pytest.approx(0.5 - PACING_BURST_S)


def test_inference_ending_lifts_the_pacing_at_once() -> None:
    pacer = SendPacer()
    for _ in range(50):
        pacer.delay_s(PACED_SLICE_BYTES, 1.0, True)
    assert pacer.delay_s(MIB, 1.0, False) == 0


def test_activity_counts_open_tunnels_per_peer() -> None:
    activity = TunnelActivity()
    with activity.carrying("a"):
        with activity.carrying("a"):
            assert activity.busy("a") and not activity.busy("b")
        assert activity.busy("a")
    assert not activity.busy("a")


async def test_counted_stream_handlers_count_while_they_run() -> None:
    activity = TunnelActivity()
    seen: list[bool] = []

    async def handler(source: str, initial: bytes, reader: asyncio.StreamReader, writer: object) -> None:
        seen.append(activity.busy(source))
        raise ConnectionError("the stream broke")

    counted = activity.counting(handler)  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        await counted("peer", b"", asyncio.StreamReader(), None)  # type: ignore[arg-type]
    assert seen == [True] and not activity.busy("peer")


# ---- progress


def test_the_rate_spans_the_recent_window() -> None:
    rate = TransferRate(window_s=2.0)
    assert rate.bytes_per_s() == 0 and rate.eta_s(100) == 0
    for second in range(10):
        rate.record(float(second), second * 1000)
    assert rate.bytes_per_s() == pytest.approx(1000)
    assert rate.eta_s(5000) == pytest.approx(5.0)
    rate.record(10.0, 9000)  # stalled for a second
    assert rate.bytes_per_s() < 1000


def test_reports_go_out_on_change_at_most_so_often() -> None:
    gate = ReportGate()
    assert gate.wait_s(0.0, "a") == 0
    gate.sent(0.0, "a")
    assert gate.wait_s(0.1, "a") is None  # nothing new
    assert gate.wait_s(0.1, "b") == pytest.approx(PROGRESS_MIN_INTERVAL_S - 0.1)
    assert gate.wait_s(PROGRESS_MIN_INTERVAL_S, "b") == 0


# ---- the source's sending, over a real loopback connection


async def send_through_source(busy: bool, cap_bytes_per_s: float = 0.0) -> float:
    """Seconds FileSource takes to send 1 MiB to a peer, with an inference tunnel open or not."""
    from services.mesh.file_source import FileSource

    received = asyncio.get_running_loop().create_future()

    async def drain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.set_result(len(await reader.readexactly(MIB)))
        writer.close()

    server = await asyncio.start_server(drain, "127.0.0.1", 0)
    activity = TunnelActivity()
    source = FileSource(None, activity, cap_bytes_per_s)
    _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    started = asyncio.get_running_loop().time()
    with activity.carrying("peer") if busy else contextlib.nullcontext():
        await source._send("peer", bytes(MIB), writer)
    assert await received == MIB
    writer.close()
    server.close()
    return asyncio.get_running_loop().time() - started


def paced_s(rate: float) -> float:
    """The least time 1 MiB can take at `rate`: after the burst an idle pacer allows, each slice
    waits for the one before it (the last one is not waited for)."""
    return (MIB - PACING_BURST_S * rate - PACED_SLICE_BYTES) / rate


async def test_the_source_paces_file_bytes_only_while_inference_runs() -> None:
    paced = paced_s(FILE_BYTES_PER_S_WHILE_INFERENCE)
    assert await send_through_source(busy=True) >= paced * 0.95
    assert await send_through_source(busy=False) < paced / 2


async def test_the_operators_cap_paces_the_source_without_inference() -> None:
    assert await send_through_source(busy=False, cap_bytes_per_s=8 * MIB) >= paced_s(8 * MIB) * 0.95
