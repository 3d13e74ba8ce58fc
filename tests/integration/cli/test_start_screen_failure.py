"""The ready screen says why a model failed (the runner's reason), not just "failed"."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.node import RunningNode, free_port, wait_until

pytestmark = pytest.mark.integration

# Five quick failures with 0.5 + 1 + 2 + 4 s of backoff between them, then the ready screen.
READY_SCREEN_TIMEOUT_S = 60.0


def test_the_ready_screen_says_why_a_model_failed(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"this is not a gguf file" * 100)
    node = RunningNode(tmp_path / "node", free_port(), free_port(), ["--model", str(broken)]).start()
    try:
        wait_until(lambda: "Ctrl-C" in node.cli_output(), READY_SCREEN_TIMEOUT_S, "the ready screen")
        [line] = [line for line in node.cli_output().splitlines() if line.strip().startswith("Model")]
    finally:
        node.stop()
    assert "broken  failed" in line
    assert line.endswith(
        ": exited with code 1: gguf_init_from_reader: invalid magic characters: 'this', expected 'GGUF'"
    )
