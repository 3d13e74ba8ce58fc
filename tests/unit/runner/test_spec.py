"""Proto <-> dataclass at the runner's edge (services/runner/spec.py)."""

from __future__ import annotations

import pytest

from services.proto.meshllm.runner.v1 import runner_pb2 as pb
from services.runner.spec import (
    InvalidSpec,
    ModelKind,
    ProcessKind,
    ProcessSpec,
    ProcessState,
    ProcessStatus,
    specs_from_proto,
)


def test_round_trip() -> None:
    message = pb.ProcessSpec(
        key="llama-server/m",
        kind=pb.PROCESS_KIND_LLAMA_SERVER,
        model="m",
        model_path="/m.gguf",
        rpc_endpoints=["127.0.0.1:1"],
        tensor_split=[0.5, 0.5],
        context_size=2048,
        extra_args=["-ngl", "9"],
        draft_model_path="/d.gguf",
        memory_budget_bytes=3 << 30,
    )
    spec = ProcessSpec.from_proto(message)
    assert spec.kind is ProcessKind.LLAMA_SERVER and spec.tensor_split == (0.5, 0.5)
    assert spec.to_proto() == message


def test_equal_specs_compare_equal() -> None:
    message = pb.ProcessSpec(key="r", kind=pb.PROCESS_KIND_RPC_SERVER)
    assert ProcessSpec.from_proto(message) == ProcessSpec.from_proto(message)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (pb.ProcessSpec(kind=pb.PROCESS_KIND_RPC_SERVER), "key"),
        (pb.ProcessSpec(key="x"), "kind"),
        (pb.ProcessSpec(key="x", kind=pb.PROCESS_KIND_LLAMA_SERVER), "model_path"),
        (pb.ProcessSpec(key="x", kind=pb.PROCESS_KIND_RPC_SERVER, context_size=-1), "context_size"),
        (pb.ProcessSpec(key="x", kind=pb.PROCESS_KIND_RPC_SERVER, memory_budget_bytes=-1), "memory_budget"),
    ],
)
def test_invalid(message: pb.ProcessSpec, reason: str) -> None:
    with pytest.raises(InvalidSpec, match=reason):
        ProcessSpec.from_proto(message)


def test_duplicate_keys() -> None:
    message = pb.ProcessSpec(key="r", kind=pb.PROCESS_KIND_RPC_SERVER)
    with pytest.raises(InvalidSpec, match="duplicate"):
        specs_from_proto([message, message])


def test_status_carries_the_model_kind_and_contexts() -> None:
    spec = ProcessSpec("llama-server/e", ProcessKind.LLAMA_SERVER, model_path="/e.gguf")
    known = ProcessStatus(
        spec,
        ProcessState.READY,
        model_kind=ModelKind.EMBEDDING,
        context_tokens=512,
        trained_context_tokens=512,
    )
    message = known.to_proto()
    assert (message.model_kind, message.context_tokens, message.trained_context_tokens) == (
        pb.MODEL_KIND_EMBEDDING,
        512,
        512,
    )
    assert ProcessStatus(spec, ProcessState.STARTING).to_proto().model_kind == pb.MODEL_KIND_UNSPECIFIED


def test_model_kinds_mirror_the_proto() -> None:
    assert {k.name: int(k) for k in ModelKind} == {
        "CHAT": pb.MODEL_KIND_CHAT,
        "EMBEDDING": pb.MODEL_KIND_EMBEDDING,
        "RERANK": pb.MODEL_KIND_RERANK,
    }
