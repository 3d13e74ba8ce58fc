"""What a json-logging service prints to stderr outside logging still comes out as JSON."""

from __future__ import annotations

import io
import json
import traceback

from services.node.log_stderr import JsonStderr, StderrLines

GRPC_PRINT = (
    "Traceback (most recent call last):\n"
    '  File "src/python/grpcio/grpc/_cython/_cygrpc/aio/server.pyx.pxi", line 812, in _schedule_rpc_coro\n'
    "asyncio.exceptions.CancelledError\n"
)


def test_a_traceback_written_in_pieces_is_one_message() -> None:
    lines = StderrLines()
    pieces = [GRPC_PRINT[:20], GRPC_PRINT[20:90], GRPC_PRINT[90:], "plain line\n", "half"]
    messages = [m for piece in pieces for m in lines.feed(piece)]
    assert messages == [GRPC_PRINT.rstrip("\n"), "plain line"]
    assert lines.flush() == ["half"]


def test_every_line_written_is_a_json_object() -> None:
    real = io.StringIO()
    stderr = JsonStderr("runner", real)
    try:
        raise ValueError("boom")
    except ValueError:
        traceback.print_exc(file=stderr)
    stderr.write("a library's warning\n\n")
    stderr.flush()
    entries = [json.loads(line) for line in real.getvalue().splitlines()]
    assert [e["level"] for e in entries] == ["error", "warning"]
    assert entries[0]["msg"].startswith("Traceback") and entries[0]["msg"].endswith("ValueError: boom")
    assert all(e["service"] == "runner" and e["logger"] == "stderr" for e in entries)
    assert entries[1]["msg"] == "a library's warning"
