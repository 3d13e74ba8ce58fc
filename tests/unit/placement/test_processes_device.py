"""--device reaches every process placement asks the runner for."""

from __future__ import annotations

from services.placement.plan import ModelAssignment, Role
from services.placement.processes import desired_processes


def test_every_process_carries_the_nodes_device() -> None:
    solo = ModelAssignment("a", "/a.gguf", 1, Role.SOLO, ("fits",))
    worker = ModelAssignment("b", "/b.gguf", 1, Role.SPLIT_WORKER, ("split",), host_node_id="h")
    specs = desired_processes([solo, worker], 0, device="CUDA1")
    assert [(s.key, s.device) for s in specs] == [("llama-server/a", "CUDA1"), ("rpc-server/b", "CUDA1")]
    assert all(s.device == "" for s in desired_processes([solo, worker], 0))
