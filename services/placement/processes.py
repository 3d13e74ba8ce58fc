"""From assignments to the llama.cpp processes this node should run (pure)."""

from __future__ import annotations

from services.placement.plan import ModelAssignment, Role
from services.proto.meshllm.runner.v1 import runner_pb2


def llama_server_key(model: str) -> str:
    return f"llama-server/{model}"


def desired_processes(assignments: list[ModelAssignment], context_size: int) -> list[runner_pb2.ProcessSpec]:
    specs = []
    for assignment in assignments:
        if assignment.role is Role.SOLO:
            specs.append(
                runner_pb2.ProcessSpec(
                    key=llama_server_key(assignment.model),
                    kind=runner_pb2.PROCESS_KIND_LLAMA_SERVER,
                    model=assignment.model,
                    model_path=assignment.path,
                    context_size=context_size,
                )
            )
    return sorted(specs, key=lambda spec: spec.key)
