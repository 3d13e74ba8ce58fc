from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_KIND_UNSPECIFIED: _ClassVar[StreamKind]
    STREAM_KIND_HTTP: _ClassVar[StreamKind]
    STREAM_KIND_RPC: _ClassVar[StreamKind]
    STREAM_KIND_RELAY: _ClassVar[StreamKind]
    STREAM_KIND_CONTROL: _ClassVar[StreamKind]
    STREAM_KIND_FILE: _ClassVar[StreamKind]
STREAM_KIND_UNSPECIFIED: StreamKind
STREAM_KIND_HTTP: StreamKind
STREAM_KIND_RPC: StreamKind
STREAM_KIND_RELAY: StreamKind
STREAM_KIND_CONTROL: StreamKind
STREAM_KIND_FILE: StreamKind

class Hello(_message.Message):
    __slots__ = ("protocol_version", "mesh_id", "public_key", "nonce", "name", "addresses", "is_client")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MESH_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    IS_CLIENT_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    mesh_id: bytes
    public_key: bytes
    nonce: bytes
    name: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    is_client: bool
    def __init__(self, protocol_version: _Optional[int] = ..., mesh_id: _Optional[bytes] = ..., public_key: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., name: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., is_client: _Optional[bool] = ...) -> None: ...

class Proof(_message.Message):
    __slots__ = ("mac", "signature")
    MAC_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    mac: bytes
    signature: bytes
    def __init__(self, mac: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Admitted(_message.Message):
    __slots__ = ("peers", "observed_address")
    PEERS_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[PeerAddress]
    observed_address: str
    def __init__(self, peers: _Optional[_Iterable[_Union[PeerAddress, _Mapping]]] = ..., observed_address: _Optional[str] = ...) -> None: ...

class Refused(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class PeerAddress(_message.Message):
    __slots__ = ("node_id", "addresses")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class GossipPayload(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class SecretUpdate(_message.Message):
    __slots__ = ("mesh_id", "secret", "epoch")
    MESH_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    mesh_id: bytes
    secret: bytes
    epoch: int
    def __init__(self, mesh_id: _Optional[bytes] = ..., secret: _Optional[bytes] = ..., epoch: _Optional[int] = ...) -> None: ...

class Goodbye(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class StreamOpen(_message.Message):
    __slots__ = ("protocol_version", "kind", "source_node_id", "target_node_id", "relayed_kind")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    RELAYED_KIND_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    kind: StreamKind
    source_node_id: str
    target_node_id: str
    relayed_kind: StreamKind
    def __init__(self, protocol_version: _Optional[int] = ..., kind: _Optional[_Union[StreamKind, str]] = ..., source_node_id: _Optional[str] = ..., target_node_id: _Optional[str] = ..., relayed_kind: _Optional[_Union[StreamKind, str]] = ...) -> None: ...

class RpcOpen(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class RpcOffer(_message.Message):
    __slots__ = ("error", "tls_port", "ticket", "server_instance")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TLS_PORT_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    SERVER_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    error: str
    tls_port: int
    ticket: bytes
    server_instance: str
    def __init__(self, error: _Optional[str] = ..., tls_port: _Optional[int] = ..., ticket: _Optional[bytes] = ..., server_instance: _Optional[str] = ...) -> None: ...

class RpcPath(_message.Message):
    __slots__ = ("on_this_stream",)
    ON_THIS_STREAM_FIELD_NUMBER: _ClassVar[int]
    on_this_stream: bool
    def __init__(self, on_this_stream: _Optional[bool] = ...) -> None: ...

class FileRequest(_message.Message):
    __slots__ = ("sha256", "manifest", "offset", "length")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    manifest: bool
    offset: int
    length: int
    def __init__(self, sha256: _Optional[str] = ..., manifest: _Optional[bool] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class FileManifest(_message.Message):
    __slots__ = ("file_bytes", "chunk_bytes", "chunk_sha256")
    FILE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SHA256_FIELD_NUMBER: _ClassVar[int]
    file_bytes: int
    chunk_bytes: int
    chunk_sha256: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, file_bytes: _Optional[int] = ..., chunk_bytes: _Optional[int] = ..., chunk_sha256: _Optional[_Iterable[bytes]] = ...) -> None: ...

class FileReply(_message.Message):
    __slots__ = ("error", "retry_later", "manifest", "tls_port", "ticket", "length")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRY_LATER_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    TLS_PORT_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    error: str
    retry_later: bool
    manifest: FileManifest
    tls_port: int
    ticket: bytes
    length: int
    def __init__(self, error: _Optional[str] = ..., retry_later: _Optional[bool] = ..., manifest: _Optional[_Union[FileManifest, _Mapping]] = ..., tls_port: _Optional[int] = ..., ticket: _Optional[bytes] = ..., length: _Optional[int] = ...) -> None: ...

class FilePath(_message.Message):
    __slots__ = ("on_this_stream",)
    ON_THIS_STREAM_FIELD_NUMBER: _ClassVar[int]
    on_this_stream: bool
    def __init__(self, on_this_stream: _Optional[bool] = ...) -> None: ...

class WireFrame(_message.Message):
    __slots__ = ("hello", "proof", "admitted", "refused", "ping", "pong", "gossip", "secret_update", "goodbye", "stream_open", "peer_announce", "rpc_open", "rpc_offer", "rpc_path", "file_request", "file_reply", "file_path")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    GOSSIP_FIELD_NUMBER: _ClassVar[int]
    SECRET_UPDATE_FIELD_NUMBER: _ClassVar[int]
    GOODBYE_FIELD_NUMBER: _ClassVar[int]
    STREAM_OPEN_FIELD_NUMBER: _ClassVar[int]
    PEER_ANNOUNCE_FIELD_NUMBER: _ClassVar[int]
    RPC_OPEN_FIELD_NUMBER: _ClassVar[int]
    RPC_OFFER_FIELD_NUMBER: _ClassVar[int]
    RPC_PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    FILE_REPLY_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    proof: Proof
    admitted: Admitted
    refused: Refused
    ping: Ping
    pong: Pong
    gossip: GossipPayload
    secret_update: SecretUpdate
    goodbye: Goodbye
    stream_open: StreamOpen
    peer_announce: PeerAddress
    rpc_open: RpcOpen
    rpc_offer: RpcOffer
    rpc_path: RpcPath
    file_request: FileRequest
    file_reply: FileReply
    file_path: FilePath
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., proof: _Optional[_Union[Proof, _Mapping]] = ..., admitted: _Optional[_Union[Admitted, _Mapping]] = ..., refused: _Optional[_Union[Refused, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ..., gossip: _Optional[_Union[GossipPayload, _Mapping]] = ..., secret_update: _Optional[_Union[SecretUpdate, _Mapping]] = ..., goodbye: _Optional[_Union[Goodbye, _Mapping]] = ..., stream_open: _Optional[_Union[StreamOpen, _Mapping]] = ..., peer_announce: _Optional[_Union[PeerAddress, _Mapping]] = ..., rpc_open: _Optional[_Union[RpcOpen, _Mapping]] = ..., rpc_offer: _Optional[_Union[RpcOffer, _Mapping]] = ..., rpc_path: _Optional[_Union[RpcPath, _Mapping]] = ..., file_request: _Optional[_Union[FileRequest, _Mapping]] = ..., file_reply: _Optional[_Union[FileReply, _Mapping]] = ..., file_path: _Optional[_Union[FilePath, _Mapping]] = ...) -> None: ...
