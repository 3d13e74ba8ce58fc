"""llama.cpp's log lines as JSON log entries, and the size-rotating line log (sans-IO parts)."""

from __future__ import annotations

from pathlib import Path

from services.node.rotating_log import RotatingLineLog
from services.runner.llama_log_lines import parse_llama_line

NOW_S = 1_700_000_000.0


def test_a_timing_line_becomes_numbers() -> None:
    line = (
        "0.00.604.080 I slot print_timing: id  3 | task 0 |        eval time =       6.10 ms /    16 tokens "
        "(    0.41 ms per token,  2457.81 tokens per second)"
    )
    entry = parse_llama_line(line, "llama-server.tiny", NOW_S)
    assert (
        entry["level"] == "info"
        and entry["service"] == "llama-server"
        and entry["logger"] == "llama-server.tiny"
    )
    assert entry["module"] == "slot" and entry["function"] == "print_timing"
    assert entry["slot"] == 3 and entry["task"] == 0
    assert entry["eval_ms"] == 6.10 and entry["eval_tokens"] == 16 and entry["eval_tokens_per_s"] == 2457.81
    assert entry["elapsed_s"] == 0.60408


def test_prompt_and_total_timings() -> None:
    prompt = parse_llama_line(
        "0.00.604.047 I slot print_timing: id  3 | task 0 | prompt eval time =       1.48 ms /    25 tokens "
        "(    0.06 ms per token, 16903.31 tokens per second)",
        "l",
        NOW_S,
    )
    assert prompt["prompt_tokens"] == 25 and prompt["prompt_tokens_per_s"] == 16903.31
    total = parse_llama_line(
        "0.00.604.087 I slot print_timing: id  3 | task 0 |       total time =       7.58 ms /    41 tokens",
        "l",
        NOW_S,
    )
    assert total["total_ms"] == 7.58 and total["total_tokens"] == 41 and "total_tokens_per_s" not in total


def test_levels_and_plain_server_lines() -> None:
    warning = parse_llama_line("1.02.003.004 W srv    load_model: no chat template", "l", NOW_S)
    assert warning["level"] == "warning" and warning["msg"] == "no chat template"
    assert warning["elapsed_s"] == 62.003004 and "slot" not in warning
    error = parse_llama_line("0.00.001.000 E srv  llama_server: failed to load model", "l", NOW_S)
    assert error["level"] == "error" and error["function"] == "llama_server"


def test_a_foreign_line_is_kept_whole() -> None:
    entry = parse_llama_line("=== 2026-12-01 20:18:31 mesh-llm runner: llama-server -m x", "l", NOW_S)
    assert entry["msg"] == "=== 2026-12-01 20:18:31 mesh-llm runner: llama-server -m x"
    assert entry["level"] == "info" and entry["ts"] == NOW_S


def test_the_log_rotates_by_size_and_keeps_n_backups(tmp_path: Path) -> None:
    log = RotatingLineLog(tmp_path / "x.log", max_bytes=100, backups=2)
    for index in range(40):
        log.write(f"line {index:02d} " + "." * 10)  # 19 bytes a line: 5 lines a file
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["x.log", "x.log.1", "x.log.2"]
    assert all(p.stat().st_size <= 100 for p in tmp_path.iterdir())
    assert (tmp_path / "x.log").read_text().splitlines()[-1].startswith("line 39")
    assert (tmp_path / "x.log.2").read_text().splitlines()[0].startswith("line 25")


def test_a_reopened_log_counts_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "x.log").write_text("a" * 95 + "\n")
    RotatingLineLog(tmp_path / "x.log", max_bytes=100, backups=1).write("next")
    assert (tmp_path / "x.log").read_text() == "next\n"
    assert (tmp_path / "x.log.1").stat().st_size == 96
