"""A real node started with `--log-format json`: every service's log and llama-server's own lines are
JSON objects, and log files rotate by size (a small limit through MESH_LLM_LOG_MAX_BYTES)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.node.log_limits import LOG_BACKUPS_ENV, LOG_MAX_BYTES_ENV
from tests.support.node import RunningNode, free_port, wait_until

pytestmark = pytest.mark.integration

SERVICES = ("mesh", "gossip", "runner", "placement", "gateway", "discovery")
MAX_BYTES = 4096  # a few chat requests' worth of llama-server lines
BACKUPS = 2
ROTATE_TIMEOUT_S = 60.0
SETTLE_S = 10.0
REQUIRED = ("ts", "level", "service", "logger", "msg")


@pytest.fixture(scope="module")
def node(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    home = tmp_path_factory.mktemp("json-logs") / "home"
    saved = {name: os.environ.get(name) for name in (LOG_MAX_BYTES_ENV, LOG_BACKUPS_ENV)}
    os.environ.update({LOG_MAX_BYTES_ENV: str(MAX_BYTES), LOG_BACKUPS_ENV: str(BACKUPS)})
    try:
        args = ["--model", str(tiny_gguf), "--log-format", "json"]
        running = RunningNode(home, free_port(), free_port(), args).start()
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
    try:
        running.wait_ready(["tiny-llama"])
        yield running
    finally:
        running.stop()


def _entries(path: Path) -> list[dict]:
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"{path.name}:{number} is not JSON: {line!r}") from None
        missing = [field for field in REQUIRED if field not in entries[-1]]
        assert not missing, f"{path.name}:{number} lacks {missing}: {line!r}"
    return entries


def _llama_logs(node: RunningNode) -> list[Path]:
    return sorted(node.node_home.logs.glob("llama-server_tiny-llama.log*"))


def test_llama_server_lines_are_fields_and_its_log_rotates(node: RunningNode) -> None:
    def rotated_past_backups() -> bool:
        node.chat("tiny-llama", max_tokens=8)
        return (node.node_home.logs / "llama-server_tiny-llama.log.2").exists()

    wait_until(rotated_past_backups, ROTATE_TIMEOUT_S, "llama-server's log to rotate twice")
    for _ in range(5):  # past the oldest backup: it is dropped, never a .3
        node.chat("tiny-llama", max_tokens=8)
    expected = [f"llama-server_tiny-llama.log{suffix}" for suffix in ("", ".1", ".2")]
    # llama-server writes a request's timing lines after answering it, so a rotation (.1 renamed to
    # .2, then the live file to .1) may be under way as the last chat returns: wait for it to end.
    wait_until(lambda: [p.name for p in _llama_logs(node)] == expected, SETTLE_S, "the rotation to settle")
    files = _llama_logs(node)
    assert [p.name for p in files] == expected
    assert all(p.stat().st_size <= MAX_BYTES for p in files)
    entries = [e for p in files for e in _entries(p)]
    assert all(e["service"] == "llama-server" and e["process"] == "llama-server/tiny-llama" for e in entries)
    assert all(e["model"] == "tiny-llama" for e in entries)
    timings = [e for e in entries if "eval_tokens_per_s" in e]
    assert timings and all(e["module"] == "slot" and e["slot"] >= 0 and e["task"] >= 0 for e in timings)
    assert all(e["level"] == "info" and e["function"] == "print_timing" for e in timings)


def test_after_a_stop_every_line_of_every_log_is_json(node: RunningNode) -> None:
    node.chat("tiny-llama", max_tokens=4)
    assert node.stop() == 0
    logs = node.node_home.logs
    for service in SERVICES:
        entries = [e for path in sorted(logs.glob(f"{service}.log*")) for e in _entries(path)]
        assert entries, f"{service} logged nothing"
        assert {e["service"] for e in entries} - {service, "grpc", "uvicorn"} == set(), service
    stopped = [e for p in _llama_logs(node) for e in _entries(p)]
    assert any("cleaning up before exit" in e["msg"] for e in stopped)  # its last line came through
