"""The runner's own types, mirroring runner.proto at the edge (DESIGN §9 habit 2)."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.proto.meshllm.runner.v1 import runner_pb2
from services.runner.speculation import SpeculationError, parse_mode

LOOPBACK_HOST = "127.0.0.1"


class InvalidSpec(ValueError):
    """A desired process set the runner cannot act on (the caller's mistake, not ours)."""


class ProcessKind(enum.IntEnum):
    LLAMA_SERVER = runner_pb2.PROCESS_KIND_LLAMA_SERVER
    RPC_SERVER = runner_pb2.PROCESS_KIND_RPC_SERVER


class ModelKind(enum.IntEnum):
    """What a model file is for (runner.proto ModelKind), from its GGUF header."""

    CHAT = runner_pb2.MODEL_KIND_CHAT
    EMBEDDING = runner_pb2.MODEL_KIND_EMBEDDING
    RERANK = runner_pb2.MODEL_KIND_RERANK


class ProcessState(enum.IntEnum):
    STARTING = runner_pb2.PROCESS_STATE_STARTING
    READY = runner_pb2.PROCESS_STATE_READY
    BACKOFF = runner_pb2.PROCESS_STATE_BACKOFF
    STOPPING = runner_pb2.PROCESS_STATE_STOPPING
    FAILED = runner_pb2.PROCESS_STATE_FAILED


@dataclass(frozen=True)
class ProcessSpec:
    """What to run. Equality decides whether Apply must restart a process."""

    key: str
    kind: ProcessKind
    model: str = ""
    model_path: str = ""
    rpc_endpoints: tuple[str, ...] = ()
    tensor_split: tuple[float, ...] = ()
    context_size: int = 0
    extra_args: tuple[str, ...] = ()
    draft_model_path: str = ""
    host_node_id: str = ""  # rpc-server: the only split host the mesh lets reach it
    # llama-server with context_size 0: memory it may use beyond the weights (0: not given).
    memory_budget_bytes: int = 0
    parallel_slots: int = 0  # llama-server -np; 0: the runner chooses (slots.py)
    device: str = ""  # --device, as llama.cpp names it ("CPU": no offload); empty: its default
    speculation: str = ""  # llama-server: auto (also ""), draft, ngram, off (speculation.py)
    max_output_tokens: int = 0  # llama-server -n: the cap for requests naming none; 0: none
    threads: int = 0  # -t; 0: one per physical core (cpu_cores.py)

    @classmethod
    def from_proto(cls, message: runner_pb2.ProcessSpec) -> ProcessSpec:
        if not message.key:
            raise InvalidSpec("every process needs a key")
        if message.kind not in ProcessKind._value2member_map_:
            raise InvalidSpec(f"{message.key}: kind must be LLAMA_SERVER or RPC_SERVER")
        kind = ProcessKind(message.kind)
        if kind is ProcessKind.LLAMA_SERVER and not message.model_path:
            raise InvalidSpec(f"{message.key}: llama-server needs a model_path")
        if message.context_size < 0:
            raise InvalidSpec(f"{message.key}: context_size must not be negative")
        if message.memory_budget_bytes < 0:
            raise InvalidSpec(f"{message.key}: memory_budget_bytes must not be negative")
        if message.parallel_slots < 0:
            raise InvalidSpec(f"{message.key}: parallel_slots must not be negative")
        if message.max_output_tokens < 0:
            raise InvalidSpec(f"{message.key}: max_output_tokens must not be negative")
        if message.threads < 0:
            raise InvalidSpec(f"{message.key}: threads must not be negative")
        try:
            parse_mode(message.speculation)
        except SpeculationError as exc:
            raise InvalidSpec(f"{message.key}: {exc}") from None
        return cls(
            key=message.key,
            kind=kind,
            model=message.model,
            model_path=message.model_path,
            rpc_endpoints=tuple(message.rpc_endpoints),
            tensor_split=tuple(message.tensor_split),
            context_size=message.context_size,
            extra_args=tuple(message.extra_args),
            draft_model_path=message.draft_model_path,
            host_node_id=message.host_node_id,
            memory_budget_bytes=message.memory_budget_bytes,
            parallel_slots=message.parallel_slots,
            device=message.device,
            speculation=message.speculation,
            max_output_tokens=message.max_output_tokens,
            threads=message.threads,
        )

    def to_proto(self) -> runner_pb2.ProcessSpec:
        return runner_pb2.ProcessSpec(
            key=self.key,
            kind=int(self.kind),  # type: ignore[arg-type]
            model=self.model,
            model_path=self.model_path,
            rpc_endpoints=self.rpc_endpoints,
            tensor_split=self.tensor_split,
            context_size=self.context_size,
            extra_args=self.extra_args,
            draft_model_path=self.draft_model_path,
            host_node_id=self.host_node_id,
            memory_budget_bytes=self.memory_budget_bytes,
            parallel_slots=self.parallel_slots,
            device=self.device,
            speculation=self.speculation,
            max_output_tokens=self.max_output_tokens,
            threads=self.threads,
        )


def specs_from_proto(messages: Iterable[runner_pb2.ProcessSpec]) -> dict[str, ProcessSpec]:
    specs: dict[str, ProcessSpec] = {}
    for message in messages:
        spec = ProcessSpec.from_proto(message)
        if spec.key in specs:
            raise InvalidSpec(f"duplicate process key {spec.key!r}")
        specs[spec.key] = spec
    return specs


@dataclass(frozen=True)
class ProcessStatus:
    """A snapshot of one supervised process."""

    spec: ProcessSpec
    state: ProcessState
    port: int = 0
    pid: int = 0
    restarts: int = 0
    last_error: str = ""
    state_since_unix_s: float = 0.0
    host: str = LOOPBACK_HOST
    # llama-server, once its GGUF header is read: what the model is and the context it runs with.
    model_kind: ModelKind | None = None
    context_tokens: int = 0
    trained_context_tokens: int = 0  # 0: the header does not say
    slots: int = 0  # llama-server: requests it decodes at once (-np)
    # llama-server: the speculation it runs with (speculation.Speculation.summary), its draft, and why.
    speculation: str = ""
    draft_model_path: str = ""
    speculation_reason: str = ""
    api_key: str = field(default="", repr=False)  # llama-server's own key (runner.proto)

    def to_proto(self) -> runner_pb2.ProcessStatus:
        return runner_pb2.ProcessStatus(
            spec=self.spec.to_proto(),
            state=int(self.state),  # type: ignore[arg-type]
            host=self.host,
            port=self.port,
            pid=self.pid,
            restarts=self.restarts,
            last_error=self.last_error,
            state_since_unix_s=self.state_since_unix_s,
            model_kind=int(self.model_kind or runner_pb2.MODEL_KIND_UNSPECIFIED),  # type: ignore[arg-type]
            context_tokens=self.context_tokens,
            trained_context_tokens=self.trained_context_tokens,
            slots=self.slots,
            speculation=self.speculation,
            draft_model_path=self.draft_model_path,
            speculation_reason=self.speculation_reason,
            api_key=self.api_key,
        )
