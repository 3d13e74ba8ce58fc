"""A llama.cpp process's log as the runner writes it: JSON fields, the tail of a run, rotation.

The lines are real llama-server output (the pinned build, started on tests/support/tiny_gguf.py's
model: a chat request, then a model file with a bad magic).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from services.node.log_limits import LogFileLimits
from services.runner.process_log import CUT_LINE_NOTE, LINE_LIMIT_BYTES, LOG_TAIL_BYTES, ProcessLog

SERVED = [
    "0.00.090.532 I srv  llama_server: listening on http://127.0.0.1:44069",
    "0.00.832.311 I slot get_availabl: id  3 | task -1 | selected slot by LRU, t_last = -1",
    "0.00.832.370 I slot launch_slot_: id  3 | task 0 | processing task, is_child = 0",
    "0.00.835.504 I slot print_timing: id  3 | task 0 |        eval time =       0.91 ms /     4 tokens "
    "(    0.30 ms per token,  3307.61 tokens per second)",
]
FAILED = [
    "0.00.025.139 E gguf_init_from_reader: invalid magic characters: 'garb', expected 'GGUF'",
    "0.00.025.245 E llama_model_load: error loading model: llama_model_loader: failed to load model "
    "from bad.gguf",
    "0.00.025.737 E srv  llama_server: exiting due to model loading error",
]
RPC_BANNER = ["Starting RPC server v7.0.0", "  endpoint       : 127.0.0.1:18924"]


def _json_log(tmp_path: Path, limits: LogFileLimits | None = None) -> ProcessLog:
    path = tmp_path / "llama-server_tiny.log"
    return ProcessLog(path, "llama-server/tiny", "llama-server", "tiny", log_format="json", limits=limits)


def _entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_json_lines_carry_llama_cpp_fields_and_who_wrote_them(tmp_path: Path) -> None:
    log = _json_log(tmp_path)
    log.open_run(["llama-server", "-m", "tiny.gguf"])
    for line in SERVED:
        log.write_line(line)
    start, listening, pick, launch, timing = _entries(log.path)
    assert start["event"] == "start" and start["argv"] == ["llama-server", "-m", "tiny.gguf"]
    for entry in (listening, pick, launch, timing):
        assert entry["service"] == "llama-server" and entry["process"] == "llama-server/tiny"
        assert entry["model"] == "tiny" and entry["level"] == "info" and isinstance(entry["ts"], float)
    assert listening["module"] == "srv" and listening["msg"] == "listening on http://127.0.0.1:44069"
    assert launch["module"] == "slot" and launch["slot"] == 3 and launch["task"] == 0
    assert launch["msg"] == "processing task, is_child = 0"
    assert timing["eval_tokens"] == 4 and timing["eval_tokens_per_s"] == 3307.61


def test_errors_keep_their_level_and_the_tail_has_the_raw_lines(tmp_path: Path) -> None:
    log = _json_log(tmp_path)
    log.open_run(["llama-server"])
    for line in FAILED:
        log.write_line(line)
    entries = _entries(log.path)[1:]
    assert [e["level"] for e in entries] == ["error", "error", "error"]
    assert entries[0]["function"] == "gguf_init_from_reader"
    assert entries[0]["msg"].startswith("invalid magic characters")
    # services/runner/failure.py reads llama.cpp's own lines, whatever the file's format.
    assert log.tail() == "".join(f"{line}\n" for line in FAILED)


def test_unprefixed_lines_are_json_too(tmp_path: Path) -> None:
    path = tmp_path / "rpc-server_0.log"
    log = ProcessLog(path, "rpc-server/0", "rpc-server", log_format="json")
    log.open_run(["ggml-rpc-server"])
    for line in RPC_BANNER:
        log.write_line(line)
    banner = _entries(path)[1:]
    assert [e["msg"] for e in banner] == RPC_BANNER
    assert all(e["service"] == "rpc-server" and e["level"] == "info" for e in banner)


def test_pretty_keeps_llama_cpp_lines_as_printed(tmp_path: Path) -> None:
    path = tmp_path / "p.log"
    log = ProcessLog(path, "llama-server/tiny", "llama-server", log_format="pretty")
    log.open_run(["llama-server", "--flag"])
    log.write_line(SERVED[0])
    header, line = path.read_text().strip("\n").splitlines()
    assert header.startswith("=== ") and header.endswith("mesh-llm runner: llama-server --flag")
    assert line == SERVED[0]


def test_the_tail_covers_only_the_current_run_and_is_bounded(tmp_path: Path) -> None:
    log = _json_log(tmp_path)
    log.open_run(["first"])
    log.write_line("old failure")
    log.open_run(["second"])
    log.write_line("new failure")
    assert log.tail() == "new failure\n"
    for index in range(LOG_TAIL_BYTES // 10):
        log.write_line(f"line {index:05d}")
    assert len(log.tail()) <= LOG_TAIL_BYTES and log.tail().endswith(f"line {LOG_TAIL_BYTES // 10 - 1:05d}\n")


def test_the_file_rotates_by_size_with_bounded_backups(tmp_path: Path) -> None:
    limits = LogFileLimits(max_bytes=2048, backups=2)
    log = _json_log(tmp_path, limits)
    log.open_run(["llama-server"])
    for _ in range(40):
        for line in SERVED:
            log.write_line(line)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["llama-server_tiny.log", "llama-server_tiny.log.1", "llama-server_tiny.log.2"]
    assert all(p.stat().st_size <= limits.max_bytes for p in tmp_path.iterdir())
    assert all(_entries(p) for p in tmp_path.iterdir())  # every file, every line: JSON


async def test_the_pump_copies_a_pipe_and_survives_an_overlong_line(tmp_path: Path) -> None:
    log = _json_log(tmp_path)
    log.open_run(["llama-server"])
    stream = asyncio.StreamReader(limit=LINE_LIMIT_BYTES)
    stream.feed_data(f"{SERVED[0]}\n".encode())
    stream.feed_data(b"x" * (LINE_LIMIT_BYTES + 10) + b"\n")
    stream.feed_data(f"{SERVED[2]}\n".encode())
    stream.feed_eof()
    log.start_pump(stream)
    await log.finish()
    messages = [e["msg"] for e in _entries(log.path)[1:]]
    assert messages[0] == "listening on http://127.0.0.1:44069"
    assert CUT_LINE_NOTE in messages and messages[-1] == "processing task, is_child = 0"
