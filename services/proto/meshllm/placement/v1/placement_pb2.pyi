from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AssignmentRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ASSIGNMENT_ROLE_UNSPECIFIED: _ClassVar[AssignmentRole]
    ASSIGNMENT_ROLE_SOLO: _ClassVar[AssignmentRole]
    ASSIGNMENT_ROLE_SPLIT_HOST: _ClassVar[AssignmentRole]
    ASSIGNMENT_ROLE_SPLIT_WORKER: _ClassVar[AssignmentRole]
    ASSIGNMENT_ROLE_STANDBY: _ClassVar[AssignmentRole]
    ASSIGNMENT_ROLE_WAITING: _ClassVar[AssignmentRole]
    ASSIGNMENT_ROLE_DOES_NOT_FIT: _ClassVar[AssignmentRole]
    ASSIGNMENT_ROLE_FETCHING: _ClassVar[AssignmentRole]
ASSIGNMENT_ROLE_UNSPECIFIED: AssignmentRole
ASSIGNMENT_ROLE_SOLO: AssignmentRole
ASSIGNMENT_ROLE_SPLIT_HOST: AssignmentRole
ASSIGNMENT_ROLE_SPLIT_WORKER: AssignmentRole
ASSIGNMENT_ROLE_STANDBY: AssignmentRole
ASSIGNMENT_ROLE_WAITING: AssignmentRole
ASSIGNMENT_ROLE_DOES_NOT_FIT: AssignmentRole
ASSIGNMENT_ROLE_FETCHING: AssignmentRole

class LayerShare(_message.Message):
    __slots__ = ("node_id", "fraction", "bytes")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    fraction: float
    bytes: int
    def __init__(self, node_id: _Optional[str] = ..., fraction: _Optional[float] = ..., bytes: _Optional[int] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("model", "model_path", "model_bytes", "role", "host_node_id", "shares", "reasons", "speculation")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    MODEL_BYTES_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    HOST_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    SPECULATION_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_path: str
    model_bytes: int
    role: AssignmentRole
    host_node_id: str
    shares: _containers.RepeatedCompositeFieldContainer[LayerShare]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    speculation: str
    def __init__(self, model: _Optional[str] = ..., model_path: _Optional[str] = ..., model_bytes: _Optional[int] = ..., role: _Optional[_Union[AssignmentRole, str]] = ..., host_node_id: _Optional[str] = ..., shares: _Optional[_Iterable[_Union[LayerShare, _Mapping]]] = ..., reasons: _Optional[_Iterable[str]] = ..., speculation: _Optional[str] = ...) -> None: ...

class ModelPool(_message.Message):
    __slots__ = ("model", "server_node_ids", "candidate_node_ids", "requests_per_min", "requests_per_min_per_server", "reasons")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SERVER_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MIN_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MIN_PER_SERVER_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    server_node_ids: _containers.RepeatedScalarFieldContainer[str]
    candidate_node_ids: _containers.RepeatedScalarFieldContainer[str]
    requests_per_min: float
    requests_per_min_per_server: float
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., server_node_ids: _Optional[_Iterable[str]] = ..., candidate_node_ids: _Optional[_Iterable[str]] = ..., requests_per_min: _Optional[float] = ..., requests_per_min_per_server: _Optional[float] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class PoolEvent(_message.Message):
    __slots__ = ("at_unix_s", "model", "kind", "reason")
    AT_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    at_unix_s: float
    model: str
    kind: str
    reason: str
    def __init__(self, at_unix_s: _Optional[float] = ..., model: _Optional[str] = ..., kind: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("generation", "node_id", "vram_bytes", "assignments", "standby", "standby_reason", "pool", "events")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VRAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    STANDBY_FIELD_NUMBER: _ClassVar[int]
    STANDBY_REASON_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    generation: int
    node_id: str
    vram_bytes: int
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    standby: bool
    standby_reason: str
    pool: _containers.RepeatedCompositeFieldContainer[ModelPool]
    events: _containers.RepeatedCompositeFieldContainer[PoolEvent]
    def __init__(self, generation: _Optional[int] = ..., node_id: _Optional[str] = ..., vram_bytes: _Optional[int] = ..., assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ..., standby: _Optional[bool] = ..., standby_reason: _Optional[str] = ..., pool: _Optional[_Iterable[_Union[ModelPool, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[PoolEvent, _Mapping]]] = ...) -> None: ...

class LoadRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class DropRequest(_message.Message):
    __slots__ = ("model", "force")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    model: str
    force: bool
    def __init__(self, model: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class PoolChange(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class GetPlanRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchPlanRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
