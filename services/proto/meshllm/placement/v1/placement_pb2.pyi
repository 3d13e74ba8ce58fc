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
ASSIGNMENT_ROLE_UNSPECIFIED: AssignmentRole
ASSIGNMENT_ROLE_SOLO: AssignmentRole
ASSIGNMENT_ROLE_SPLIT_HOST: AssignmentRole
ASSIGNMENT_ROLE_SPLIT_WORKER: AssignmentRole
ASSIGNMENT_ROLE_STANDBY: AssignmentRole
ASSIGNMENT_ROLE_WAITING: AssignmentRole
ASSIGNMENT_ROLE_DOES_NOT_FIT: AssignmentRole

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
    __slots__ = ("model", "model_path", "model_bytes", "role", "host_node_id", "shares", "reasons")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    MODEL_BYTES_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    HOST_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_path: str
    model_bytes: int
    role: AssignmentRole
    host_node_id: str
    shares: _containers.RepeatedCompositeFieldContainer[LayerShare]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., model_path: _Optional[str] = ..., model_bytes: _Optional[int] = ..., role: _Optional[_Union[AssignmentRole, str]] = ..., host_node_id: _Optional[str] = ..., shares: _Optional[_Iterable[_Union[LayerShare, _Mapping]]] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("generation", "node_id", "vram_bytes", "assignments")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VRAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    generation: int
    node_id: str
    vram_bytes: int
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    def __init__(self, generation: _Optional[int] = ..., node_id: _Optional[str] = ..., vram_bytes: _Optional[int] = ..., assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ...) -> None: ...

class GetPlanRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchPlanRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
