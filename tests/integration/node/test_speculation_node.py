"""A real node with `--speculation draft` pairs its model with a draft it has on disk, and says so:
the runner's status, the gateway's, gossip and `meshctl plan`. The draft is a tiny random GGUF with
SmolLM2's tokenizer copied in (tests/support/tiny_gguf.py): the same vocabulary, 12x smaller, so
auto-pairing takes it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.proto.meshllm.runner.v1 import runner_pb2
from tests.support.node import RunningNode, free_port, wait_until
from tests.support.tiny_gguf import write_tiny_draft_gguf

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m"
DRAFT_NAME = "smollm2-draft"
GOSSIP_TIMEOUT_S = 30.0
WIDE_COLUMNS = 300


@pytest.fixture(scope="module")
def node(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    home = tmp_path_factory.mktemp("node") / "home"
    store = home / "models"  # the node's own store (RunningNode passes --models-dir there)
    write_tiny_draft_gguf(store / f"{DRAFT_NAME}.gguf", smollm2_path)
    running = RunningNode(
        home, free_port(), free_port(), ["--model", MODEL, "--speculation", "draft"]
    ).start()
    try:
        running.wait_ready([MODEL])
        yield running
    finally:
        running.stop()


def test_runner_runs_the_paired_draft(node: RunningNode) -> None:
    servers = [
        p for p in node.runner_status().processes if p.spec.kind == runner_pb2.PROCESS_KIND_LLAMA_SERVER
    ]
    assert len(servers) == 1
    assert servers[0].speculation == "draft"
    assert Path(servers[0].draft_model_path).name == f"{DRAFT_NAME}.gguf"


def test_status_gossip_and_plan_show_the_draft(node: RunningNode) -> None:
    label = f"draft {DRAFT_NAME}"
    routes = {m.model: m for m in node.status().models}
    assert routes[MODEL].speculation == label
    meshctl = Path(sys.executable).parent / "meshctl"

    def plan_shows_it() -> bool:
        plan = subprocess.run(
            [str(meshctl), "--home", str(node.home), "plan"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "COLUMNS": str(WIDE_COLUMNS)},  # no wrapping inside the table's cells
        )
        return plan.returncode == 0 and label in plan.stdout

    wait_until(plan_shows_it, GOSSIP_TIMEOUT_S, "meshctl plan to show the draft in use")
