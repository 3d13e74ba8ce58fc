from services.proto.meshllm.gossip.v1 import gossip_pb2 as _gossip_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GossipEnvelope(_message.Message):
    __slots__ = ("protocol_version", "summary", "entries", "delta")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    summary: DigestSummary
    entries: DigestEntries
    delta: Delta
    def __init__(self, protocol_version: _Optional[int] = ..., summary: _Optional[_Union[DigestSummary, _Mapping]] = ..., entries: _Optional[_Union[DigestEntries, _Mapping]] = ..., delta: _Optional[_Union[Delta, _Mapping]] = ...) -> None: ...

class DigestSummary(_message.Message):
    __slots__ = ("bucket_hashes",)
    BUCKET_HASHES_FIELD_NUMBER: _ClassVar[int]
    bucket_hashes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, bucket_hashes: _Optional[_Iterable[int]] = ...) -> None: ...

class DigestEntries(_message.Message):
    __slots__ = ("buckets", "keys", "ranks")
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedScalarFieldContainer[int]
    keys: _containers.RepeatedScalarFieldContainer[int]
    ranks: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, buckets: _Optional[_Iterable[int]] = ..., keys: _Optional[_Iterable[int]] = ..., ranks: _Optional[_Iterable[int]] = ...) -> None: ...

class Tombstone(_message.Message):
    __slots__ = ("node_id", "version", "died_unix_s")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DIED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    version: int
    died_unix_s: float
    def __init__(self, node_id: _Optional[str] = ..., version: _Optional[int] = ..., died_unix_s: _Optional[float] = ...) -> None: ...

class Delta(_message.Message):
    __slots__ = ("records", "tombstones", "want_keys", "rumor")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONES_FIELD_NUMBER: _ClassVar[int]
    WANT_KEYS_FIELD_NUMBER: _ClassVar[int]
    RUMOR_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[_gossip_pb2.NodeRecord]
    tombstones: _containers.RepeatedCompositeFieldContainer[Tombstone]
    want_keys: _containers.RepeatedScalarFieldContainer[int]
    rumor: bool
    def __init__(self, records: _Optional[_Iterable[_Union[_gossip_pb2.NodeRecord, _Mapping]]] = ..., tombstones: _Optional[_Iterable[_Union[Tombstone, _Mapping]]] = ..., want_keys: _Optional[_Iterable[int]] = ..., rumor: _Optional[bool] = ...) -> None: ...
