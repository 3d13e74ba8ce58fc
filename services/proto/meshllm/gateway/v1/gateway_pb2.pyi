from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServiceHealth(_message.Message):
    __slots__ = ("name", "reachable", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    reachable: bool
    detail: str
    def __init__(self, name: _Optional[str] = ..., reachable: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class ModelRoute(_message.Message):
    __slots__ = ("model", "state", "node_ids", "local", "endpoint", "kind", "context_tokens", "speculation", "slots")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SPECULATION_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    state: str
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    local: bool
    endpoint: str
    kind: str
    context_tokens: int
    speculation: str
    slots: int
    def __init__(self, model: _Optional[str] = ..., state: _Optional[str] = ..., node_ids: _Optional[_Iterable[str]] = ..., local: _Optional[bool] = ..., endpoint: _Optional[str] = ..., kind: _Optional[str] = ..., context_tokens: _Optional[int] = ..., speculation: _Optional[str] = ..., slots: _Optional[int] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "name", "api_url", "console_url", "version", "services", "models", "requests_total", "requests_in_flight")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    API_URL_FIELD_NUMBER: _ClassVar[int]
    CONSOLE_URL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    name: str
    api_url: str
    console_url: str
    version: str
    services: _containers.RepeatedCompositeFieldContainer[ServiceHealth]
    models: _containers.RepeatedCompositeFieldContainer[ModelRoute]
    requests_total: int
    requests_in_flight: int
    def __init__(self, node_id: _Optional[str] = ..., name: _Optional[str] = ..., api_url: _Optional[str] = ..., console_url: _Optional[str] = ..., version: _Optional[str] = ..., services: _Optional[_Iterable[_Union[ServiceHealth, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelRoute, _Mapping]]] = ..., requests_total: _Optional[int] = ..., requests_in_flight: _Optional[int] = ...) -> None: ...
