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

class ModelRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_ROLE_UNSPECIFIED: _ClassVar[ModelRole]
    MODEL_ROLE_SOLO: _ClassVar[ModelRole]
    MODEL_ROLE_SPLIT_HOST: _ClassVar[ModelRole]
    MODEL_ROLE_SPLIT_WORKER: _ClassVar[ModelRole]
    MODEL_ROLE_STANDBY: _ClassVar[ModelRole]

class ServeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVE_STATE_UNSPECIFIED: _ClassVar[ServeState]
    SERVE_STATE_LOADING: _ClassVar[ServeState]
    SERVE_STATE_READY: _ClassVar[ServeState]
    SERVE_STATE_WAITING: _ClassVar[ServeState]
    SERVE_STATE_FAILED: _ClassVar[ServeState]
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_CHAT: ModelKind
MODEL_KIND_EMBEDDING: ModelKind
MODEL_KIND_RERANK: ModelKind
MODEL_ROLE_UNSPECIFIED: ModelRole
MODEL_ROLE_SOLO: ModelRole
MODEL_ROLE_SPLIT_HOST: ModelRole
MODEL_ROLE_SPLIT_WORKER: ModelRole
MODEL_ROLE_STANDBY: ModelRole
SERVE_STATE_UNSPECIFIED: ServeState
SERVE_STATE_LOADING: ServeState
SERVE_STATE_READY: ServeState
SERVE_STATE_WAITING: ServeState
SERVE_STATE_FAILED: ServeState

class ModelFile(_message.Message):
    __slots__ = ("name", "path", "bytes", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    bytes: int
    sha256: str
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class LayerShare(_message.Message):
    __slots__ = ("node_id", "fraction")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    fraction: float
    def __init__(self, node_id: _Optional[str] = ..., fraction: _Optional[float] = ...) -> None: ...

class ServedModel(_message.Message):
    __slots__ = ("name", "role", "state", "host_node_id", "shares", "kind", "context_tokens", "speculation", "slots")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HOST_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SPECULATION_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: ModelRole
    state: ServeState
    host_node_id: str
    shares: _containers.RepeatedCompositeFieldContainer[LayerShare]
    kind: ModelKind
    context_tokens: int
    speculation: str
    slots: int
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[ModelRole, str]] = ..., state: _Optional[_Union[ServeState, str]] = ..., host_node_id: _Optional[str] = ..., shares: _Optional[_Iterable[_Union[LayerShare, _Mapping]]] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., context_tokens: _Optional[int] = ..., speculation: _Optional[str] = ..., slots: _Optional[int] = ...) -> None: ...

class Adoption(_message.Message):
    __slots__ = ("model", "reason", "since_unix_s", "by_hand", "for_loss")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    BY_HAND_FIELD_NUMBER: _ClassVar[int]
    FOR_LOSS_FIELD_NUMBER: _ClassVar[int]
    model: str
    reason: str
    since_unix_s: float
    by_hand: bool
    for_loss: bool
    def __init__(self, model: _Optional[str] = ..., reason: _Optional[str] = ..., since_unix_s: _Optional[float] = ..., by_hand: _Optional[bool] = ..., for_loss: _Optional[bool] = ...) -> None: ...

class SeenModel(_message.Message):
    __slots__ = ("name", "sha256", "bytes", "last_served_unix_s", "dropped_unix_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_SERVED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    DROPPED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    bytes: int
    last_served_unix_s: float
    dropped_unix_s: float
    def __init__(self, name: _Optional[str] = ..., sha256: _Optional[str] = ..., bytes: _Optional[int] = ..., last_served_unix_s: _Optional[float] = ..., dropped_unix_s: _Optional[float] = ...) -> None: ...

class FileTransfer(_message.Message):
    __slots__ = ("name", "sha256", "bytes_total", "bytes_done", "bytes_per_s", "source_node_ids", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    bytes_total: int
    bytes_done: int
    bytes_per_s: float
    source_node_ids: _containers.RepeatedScalarFieldContainer[str]
    error: str
    def __init__(self, name: _Optional[str] = ..., sha256: _Optional[str] = ..., bytes_total: _Optional[int] = ..., bytes_done: _Optional[int] = ..., bytes_per_s: _Optional[float] = ..., source_node_ids: _Optional[_Iterable[str]] = ..., error: _Optional[str] = ...) -> None: ...

class NodeRecord(_message.Message):
    __slots__ = ("node_id", "name", "version", "software_version", "addresses", "is_client", "region", "vram_bytes", "models_on_disk", "models_wanted", "served", "request_rate_per_min", "rtt_ms", "leaving", "updated_unix_s", "force_split", "publishing", "adopted", "models_seen", "fetching", "metrics")
    class RequestRatePerMinEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class RttMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    IS_CLIENT_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    VRAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODELS_ON_DISK_FIELD_NUMBER: _ClassVar[int]
    MODELS_WANTED_FIELD_NUMBER: _ClassVar[int]
    SERVED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_RATE_PER_MIN_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    LEAVING_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    FORCE_SPLIT_FIELD_NUMBER: _ClassVar[int]
    PUBLISHING_FIELD_NUMBER: _ClassVar[int]
    ADOPTED_FIELD_NUMBER: _ClassVar[int]
    MODELS_SEEN_FIELD_NUMBER: _ClassVar[int]
    FETCHING_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    name: str
    version: int
    software_version: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    is_client: bool
    region: str
    vram_bytes: int
    models_on_disk: _containers.RepeatedCompositeFieldContainer[ModelFile]
    models_wanted: _containers.RepeatedScalarFieldContainer[str]
    served: _containers.RepeatedCompositeFieldContainer[ServedModel]
    request_rate_per_min: _containers.ScalarMap[str, float]
    rtt_ms: _containers.ScalarMap[str, float]
    leaving: bool
    updated_unix_s: float
    force_split: bool
    publishing: bool
    adopted: _containers.RepeatedCompositeFieldContainer[Adoption]
    models_seen: _containers.RepeatedCompositeFieldContainer[SeenModel]
    fetching: _containers.RepeatedCompositeFieldContainer[FileTransfer]
    metrics: MetricsSummary
    def __init__(self, node_id: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[int] = ..., software_version: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., is_client: _Optional[bool] = ..., region: _Optional[str] = ..., vram_bytes: _Optional[int] = ..., models_on_disk: _Optional[_Iterable[_Union[ModelFile, _Mapping]]] = ..., models_wanted: _Optional[_Iterable[str]] = ..., served: _Optional[_Iterable[_Union[ServedModel, _Mapping]]] = ..., request_rate_per_min: _Optional[_Mapping[str, float]] = ..., rtt_ms: _Optional[_Mapping[str, float]] = ..., leaving: _Optional[bool] = ..., updated_unix_s: _Optional[float] = ..., force_split: _Optional[bool] = ..., publishing: _Optional[bool] = ..., adopted: _Optional[_Iterable[_Union[Adoption, _Mapping]]] = ..., models_seen: _Optional[_Iterable[_Union[SeenModel, _Mapping]]] = ..., fetching: _Optional[_Iterable[_Union[FileTransfer, _Mapping]]] = ..., metrics: _Optional[_Union[MetricsSummary, _Mapping]] = ...) -> None: ...

class MetricsSummary(_message.Message):
    __slots__ = ("requests", "models", "tunnels", "restarts", "requests_in_flight", "pool_events", "gossip")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TUNNELS_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    POOL_EVENTS_FIELD_NUMBER: _ClassVar[int]
    GOSSIP_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RequestCount]
    models: _containers.RepeatedCompositeFieldContainer[ModelTraffic]
    tunnels: _containers.RepeatedCompositeFieldContainer[TunnelTraffic]
    restarts: _containers.RepeatedCompositeFieldContainer[ProcessRestarts]
    requests_in_flight: int
    pool_events: _containers.RepeatedCompositeFieldContainer[PoolEventCount]
    gossip: _containers.RepeatedCompositeFieldContainer[GossipKindTraffic]
    def __init__(self, requests: _Optional[_Iterable[_Union[RequestCount, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelTraffic, _Mapping]]] = ..., tunnels: _Optional[_Iterable[_Union[TunnelTraffic, _Mapping]]] = ..., restarts: _Optional[_Iterable[_Union[ProcessRestarts, _Mapping]]] = ..., requests_in_flight: _Optional[int] = ..., pool_events: _Optional[_Iterable[_Union[PoolEventCount, _Mapping]]] = ..., gossip: _Optional[_Iterable[_Union[GossipKindTraffic, _Mapping]]] = ...) -> None: ...

class RequestCount(_message.Message):
    __slots__ = ("model", "endpoint", "status", "forwarded", "count")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    model: str
    endpoint: str
    status: int
    forwarded: bool
    count: int
    def __init__(self, model: _Optional[str] = ..., endpoint: _Optional[str] = ..., status: _Optional[int] = ..., forwarded: _Optional[bool] = ..., count: _Optional[int] = ...) -> None: ...

class HistogramCounts(_message.Message):
    __slots__ = ("counts", "sum")
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedScalarFieldContainer[int]
    sum: float
    def __init__(self, counts: _Optional[_Iterable[int]] = ..., sum: _Optional[float] = ...) -> None: ...

class ModelTraffic(_message.Message):
    __slots__ = ("model", "tokens_in", "tokens_out", "ttft_seconds", "decode_tokens_per_second", "slots_busy", "slots_total", "requests_queued", "draft_tokens", "accepted_draft_tokens")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOKENS_IN_FIELD_NUMBER: _ClassVar[int]
    TOKENS_OUT_FIELD_NUMBER: _ClassVar[int]
    TTFT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DECODE_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SLOTS_BUSY_FIELD_NUMBER: _ClassVar[int]
    SLOTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_QUEUED_FIELD_NUMBER: _ClassVar[int]
    DRAFT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_DRAFT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    model: str
    tokens_in: int
    tokens_out: int
    ttft_seconds: HistogramCounts
    decode_tokens_per_second: HistogramCounts
    slots_busy: int
    slots_total: int
    requests_queued: int
    draft_tokens: int
    accepted_draft_tokens: int
    def __init__(self, model: _Optional[str] = ..., tokens_in: _Optional[int] = ..., tokens_out: _Optional[int] = ..., ttft_seconds: _Optional[_Union[HistogramCounts, _Mapping]] = ..., decode_tokens_per_second: _Optional[_Union[HistogramCounts, _Mapping]] = ..., slots_busy: _Optional[int] = ..., slots_total: _Optional[int] = ..., requests_queued: _Optional[int] = ..., draft_tokens: _Optional[int] = ..., accepted_draft_tokens: _Optional[int] = ...) -> None: ...

class TunnelTraffic(_message.Message):
    __slots__ = ("peer_node_id", "model", "bytes_to_peer", "bytes_from_peer", "weight_bytes_by_reference", "weight_bytes_raw")
    PEER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BYTES_TO_PEER_FIELD_NUMBER: _ClassVar[int]
    BYTES_FROM_PEER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BYTES_BY_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BYTES_RAW_FIELD_NUMBER: _ClassVar[int]
    peer_node_id: str
    model: str
    bytes_to_peer: int
    bytes_from_peer: int
    weight_bytes_by_reference: int
    weight_bytes_raw: int
    def __init__(self, peer_node_id: _Optional[str] = ..., model: _Optional[str] = ..., bytes_to_peer: _Optional[int] = ..., bytes_from_peer: _Optional[int] = ..., weight_bytes_by_reference: _Optional[int] = ..., weight_bytes_raw: _Optional[int] = ...) -> None: ...

class ProcessRestarts(_message.Message):
    __slots__ = ("service", "process", "restarts")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    service: str
    process: str
    restarts: int
    def __init__(self, service: _Optional[str] = ..., process: _Optional[str] = ..., restarts: _Optional[int] = ...) -> None: ...

class PoolEventCount(_message.Message):
    __slots__ = ("kind", "count")
    KIND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    count: int
    def __init__(self, kind: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class MeshView(_message.Message):
    __slots__ = ("local_node_id", "nodes")
    LOCAL_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    local_node_id: str
    nodes: _containers.RepeatedCompositeFieldContainer[NodeRecord]
    def __init__(self, local_node_id: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[NodeRecord, _Mapping]]] = ...) -> None: ...

class GetViewRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpdateLocalRequest(_message.Message):
    __slots__ = ("record", "fields")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    record: NodeRecord
    fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, record: _Optional[_Union[NodeRecord, _Mapping]] = ..., fields: _Optional[_Iterable[str]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GossipStats(_message.Message):
    __slots__ = ("kinds",)
    KINDS_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedCompositeFieldContainer[GossipKindTraffic]
    def __init__(self, kinds: _Optional[_Iterable[_Union[GossipKindTraffic, _Mapping]]] = ...) -> None: ...

class GossipKindTraffic(_message.Message):
    __slots__ = ("kind", "sent_bytes", "sent_messages", "received_bytes", "received_messages")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    SENT_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    kind: str
    sent_bytes: int
    sent_messages: int
    received_bytes: int
    received_messages: int
    def __init__(self, kind: _Optional[str] = ..., sent_bytes: _Optional[int] = ..., sent_messages: _Optional[int] = ..., received_bytes: _Optional[int] = ..., received_messages: _Optional[int] = ...) -> None: ...
