from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_CHAT: _ClassVar[ModelKind]
    MODEL_KIND_EMBEDDING: _ClassVar[ModelKind]
    MODEL_KIND_RERANK: _ClassVar[ModelKind]

class ProcessKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROCESS_KIND_UNSPECIFIED: _ClassVar[ProcessKind]
    PROCESS_KIND_LLAMA_SERVER: _ClassVar[ProcessKind]
    PROCESS_KIND_RPC_SERVER: _ClassVar[ProcessKind]

class ProcessState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROCESS_STATE_UNSPECIFIED: _ClassVar[ProcessState]
    PROCESS_STATE_STARTING: _ClassVar[ProcessState]
    PROCESS_STATE_READY: _ClassVar[ProcessState]
    PROCESS_STATE_BACKOFF: _ClassVar[ProcessState]
    PROCESS_STATE_STOPPING: _ClassVar[ProcessState]
    PROCESS_STATE_FAILED: _ClassVar[ProcessState]
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_CHAT: ModelKind
MODEL_KIND_EMBEDDING: ModelKind
MODEL_KIND_RERANK: ModelKind
PROCESS_KIND_UNSPECIFIED: ProcessKind
PROCESS_KIND_LLAMA_SERVER: ProcessKind
PROCESS_KIND_RPC_SERVER: ProcessKind
PROCESS_STATE_UNSPECIFIED: ProcessState
PROCESS_STATE_STARTING: ProcessState
PROCESS_STATE_READY: ProcessState
PROCESS_STATE_BACKOFF: ProcessState
PROCESS_STATE_STOPPING: ProcessState
PROCESS_STATE_FAILED: ProcessState

class ProcessSpec(_message.Message):
    __slots__ = ("key", "kind", "model", "model_path", "rpc_endpoints", "tensor_split", "context_size", "extra_args", "draft_model_path", "host_node_id", "memory_budget_bytes", "speculation", "parallel_slots", "device", "max_output_tokens", "threads")
    KEY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    RPC_ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    TENSOR_SPLIT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_SIZE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_ARGS_FIELD_NUMBER: _ClassVar[int]
    DRAFT_MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    HOST_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    SPECULATION_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_SLOTS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    key: str
    kind: ProcessKind
    model: str
    model_path: str
    rpc_endpoints: _containers.RepeatedScalarFieldContainer[str]
    tensor_split: _containers.RepeatedScalarFieldContainer[float]
    context_size: int
    extra_args: _containers.RepeatedScalarFieldContainer[str]
    draft_model_path: str
    host_node_id: str
    memory_budget_bytes: int
    speculation: str
    parallel_slots: int
    device: str
    max_output_tokens: int
    threads: int
    def __init__(self, key: _Optional[str] = ..., kind: _Optional[_Union[ProcessKind, str]] = ..., model: _Optional[str] = ..., model_path: _Optional[str] = ..., rpc_endpoints: _Optional[_Iterable[str]] = ..., tensor_split: _Optional[_Iterable[float]] = ..., context_size: _Optional[int] = ..., extra_args: _Optional[_Iterable[str]] = ..., draft_model_path: _Optional[str] = ..., host_node_id: _Optional[str] = ..., memory_budget_bytes: _Optional[int] = ..., speculation: _Optional[str] = ..., parallel_slots: _Optional[int] = ..., device: _Optional[str] = ..., max_output_tokens: _Optional[int] = ..., threads: _Optional[int] = ...) -> None: ...

class ProcessStatus(_message.Message):
    __slots__ = ("spec", "state", "host", "port", "pid", "restarts", "last_error", "state_since_unix_s", "model_kind", "context_tokens", "trained_context_tokens", "api_key", "slots", "speculation", "draft_model_path", "speculation_reason")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    STATE_SINCE_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    MODEL_KIND_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRAINED_CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    SPECULATION_FIELD_NUMBER: _ClassVar[int]
    DRAFT_MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    SPECULATION_REASON_FIELD_NUMBER: _ClassVar[int]
    spec: ProcessSpec
    state: ProcessState
    host: str
    port: int
    pid: int
    restarts: int
    last_error: str
    state_since_unix_s: float
    model_kind: ModelKind
    context_tokens: int
    trained_context_tokens: int
    api_key: str
    slots: int
    speculation: str
    draft_model_path: str
    speculation_reason: str
    def __init__(self, spec: _Optional[_Union[ProcessSpec, _Mapping]] = ..., state: _Optional[_Union[ProcessState, str]] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., pid: _Optional[int] = ..., restarts: _Optional[int] = ..., last_error: _Optional[str] = ..., state_since_unix_s: _Optional[float] = ..., model_kind: _Optional[_Union[ModelKind, str]] = ..., context_tokens: _Optional[int] = ..., trained_context_tokens: _Optional[int] = ..., api_key: _Optional[str] = ..., slots: _Optional[int] = ..., speculation: _Optional[str] = ..., draft_model_path: _Optional[str] = ..., speculation_reason: _Optional[str] = ...) -> None: ...

class RunnerStatus(_message.Message):
    __slots__ = ("generation", "processes")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    generation: int
    processes: _containers.RepeatedCompositeFieldContainer[ProcessStatus]
    def __init__(self, generation: _Optional[int] = ..., processes: _Optional[_Iterable[_Union[ProcessStatus, _Mapping]]] = ...) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("processes",)
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    processes: _containers.RepeatedCompositeFieldContainer[ProcessSpec]
    def __init__(self, processes: _Optional[_Iterable[_Union[ProcessSpec, _Mapping]]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
