from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PeerPath(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PEER_PATH_UNSPECIFIED: _ClassVar[PeerPath]
    PEER_PATH_DIRECT: _ClassVar[PeerPath]
    PEER_PATH_RELAYED: _ClassVar[PeerPath]

class TunnelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TUNNEL_KIND_UNSPECIFIED: _ClassVar[TunnelKind]
    TUNNEL_KIND_HTTP: _ClassVar[TunnelKind]
    TUNNEL_KIND_RPC: _ClassVar[TunnelKind]

class FetchState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FETCH_STATE_UNSPECIFIED: _ClassVar[FetchState]
    FETCH_STATE_RUNNING: _ClassVar[FetchState]
    FETCH_STATE_DONE: _ClassVar[FetchState]
    FETCH_STATE_FAILED: _ClassVar[FetchState]
PEER_PATH_UNSPECIFIED: PeerPath
PEER_PATH_DIRECT: PeerPath
PEER_PATH_RELAYED: PeerPath
TUNNEL_KIND_UNSPECIFIED: TunnelKind
TUNNEL_KIND_HTTP: TunnelKind
TUNNEL_KIND_RPC: TunnelKind
FETCH_STATE_UNSPECIFIED: FetchState
FETCH_STATE_RUNNING: FetchState
FETCH_STATE_DONE: FetchState
FETCH_STATE_FAILED: FetchState

class GetIdentityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Identity(_message.Message):
    __slots__ = ("node_id", "short_id", "public_key", "name", "addresses")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SHORT_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    short_id: str
    public_key: bytes
    name: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., short_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., name: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class GetInviteRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Invite(_message.Message):
    __slots__ = ("mesh_id", "token", "mesh_name")
    MESH_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    mesh_id: str
    token: str
    mesh_name: str
    def __init__(self, mesh_id: _Optional[str] = ..., token: _Optional[str] = ..., mesh_name: _Optional[str] = ...) -> None: ...

class RotateSecretRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPeersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchPeersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Peer(_message.Message):
    __slots__ = ("node_id", "name", "address", "rtt_ms", "path", "relay_node_id", "connected_unix_s")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    RELAY_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    name: str
    address: str
    rtt_ms: float
    path: PeerPath
    relay_node_id: str
    connected_unix_s: float
    def __init__(self, node_id: _Optional[str] = ..., name: _Optional[str] = ..., address: _Optional[str] = ..., rtt_ms: _Optional[float] = ..., path: _Optional[_Union[PeerPath, str]] = ..., relay_node_id: _Optional[str] = ..., connected_unix_s: _Optional[float] = ...) -> None: ...

class ListPeersResponse(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    def __init__(self, peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ...) -> None: ...

class GossipMessage(_message.Message):
    __slots__ = ("peer_node_id", "payload")
    PEER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    peer_node_id: str
    payload: bytes
    def __init__(self, peer_node_id: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class SendGossipResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReceiveGossipRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OpenTunnelRequest(_message.Message):
    __slots__ = ("peer_node_id", "kind", "model", "model_path")
    PEER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    peer_node_id: str
    kind: TunnelKind
    model: str
    model_path: str
    def __init__(self, peer_node_id: _Optional[str] = ..., kind: _Optional[_Union[TunnelKind, str]] = ..., model: _Optional[str] = ..., model_path: _Optional[str] = ...) -> None: ...

class Tunnel(_message.Message):
    __slots__ = ("host", "port")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    host: str
    port: int
    def __init__(self, host: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class ListTunnelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TunnelStats(_message.Message):
    __slots__ = ("peer_node_id", "model", "host_side", "connections", "fast_path_connections", "bytes_to_peer", "bytes_from_peer", "weight_bytes_by_reference", "weight_bytes_raw", "requests", "requests_answered_here", "connections_answered_here")
    PEER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HOST_SIDE_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    FAST_PATH_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    BYTES_TO_PEER_FIELD_NUMBER: _ClassVar[int]
    BYTES_FROM_PEER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BYTES_BY_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BYTES_RAW_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_ANSWERED_HERE_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_ANSWERED_HERE_FIELD_NUMBER: _ClassVar[int]
    peer_node_id: str
    model: str
    host_side: bool
    connections: int
    fast_path_connections: int
    bytes_to_peer: int
    bytes_from_peer: int
    weight_bytes_by_reference: int
    weight_bytes_raw: int
    requests: int
    requests_answered_here: int
    connections_answered_here: int
    def __init__(self, peer_node_id: _Optional[str] = ..., model: _Optional[str] = ..., host_side: _Optional[bool] = ..., connections: _Optional[int] = ..., fast_path_connections: _Optional[int] = ..., bytes_to_peer: _Optional[int] = ..., bytes_from_peer: _Optional[int] = ..., weight_bytes_by_reference: _Optional[int] = ..., weight_bytes_raw: _Optional[int] = ..., requests: _Optional[int] = ..., requests_answered_here: _Optional[int] = ..., connections_answered_here: _Optional[int] = ...) -> None: ...

class ListTunnelsResponse(_message.Message):
    __slots__ = ("tunnels",)
    TUNNELS_FIELD_NUMBER: _ClassVar[int]
    tunnels: _containers.RepeatedCompositeFieldContainer[TunnelStats]
    def __init__(self, tunnels: _Optional[_Iterable[_Union[TunnelStats, _Mapping]]] = ...) -> None: ...

class FetchFileRequest(_message.Message):
    __slots__ = ("name", "sha256", "bytes", "dest_path", "source_node_ids")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    DEST_PATH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    bytes: int
    dest_path: str
    source_node_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., sha256: _Optional[str] = ..., bytes: _Optional[int] = ..., dest_path: _Optional[str] = ..., source_node_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class BadSource(_message.Message):
    __slots__ = ("node_id", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class FetchProgress(_message.Message):
    __slots__ = ("state", "bytes_total", "bytes_done", "bytes_resumed", "bytes_per_s", "eta_s", "sources", "bad_sources", "error", "path")
    STATE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_RESUMED_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    BAD_SOURCES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    state: FetchState
    bytes_total: int
    bytes_done: int
    bytes_resumed: int
    bytes_per_s: float
    eta_s: float
    sources: _containers.RepeatedScalarFieldContainer[str]
    bad_sources: _containers.RepeatedCompositeFieldContainer[BadSource]
    error: str
    path: str
    def __init__(self, state: _Optional[_Union[FetchState, str]] = ..., bytes_total: _Optional[int] = ..., bytes_done: _Optional[int] = ..., bytes_resumed: _Optional[int] = ..., bytes_per_s: _Optional[float] = ..., eta_s: _Optional[float] = ..., sources: _Optional[_Iterable[str]] = ..., bad_sources: _Optional[_Iterable[_Union[BadSource, _Mapping]]] = ..., error: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...
