"""The FILE stream's frames, sans-IO (see wire.proto): requests, replies, and the receiver's parser
of replies whose chunk bytes follow raw after their frame.

The parser works like an asyncio BufferedProtocol (get_buffer / buffer_updated): it always asks
for exactly the bytes up to the next boundary (length prefix, frame, chunk body), so a TLS
transport decrypts chunk bytes straight into the chunk's buffer with no copy in Python. `feed()`
does the same for byte strings (the QUIC fallback stream), and unit tests drive it byte by byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.gossip.model_hashes import ChunkManifest, ManifestError
from services.mesh.frames import LENGTH_PREFIX, MAX_FRAME_BYTES, FrameError, decode_frame, encode_frame
from services.proto.meshllm.mesh.v1 import wire_pb2


class FileWireError(FrameError):
    """The peer broke the FILE stream protocol (a frame out of place, a body of the wrong size)."""


class ChunkRequestError(ValueError):
    """A chunk request the source refuses (the reason goes back to the receiver)."""


def _frame(**body: object) -> bytes:
    return encode_frame(wire_pb2.WireFrame(**body))  # type: ignore[arg-type]


def manifest_request(sha256: str) -> bytes:
    return _frame(file_request=wire_pb2.FileRequest(sha256=sha256, manifest=True))


def chunk_request(sha256: str, offset: int, length: int) -> bytes:
    return _frame(file_request=wire_pb2.FileRequest(sha256=sha256, offset=offset, length=length))


def path_choice(on_this_stream: bool) -> bytes:
    return _frame(file_path=wire_pb2.FilePath(on_this_stream=on_this_stream))


def manifest_reply(manifest: ChunkManifest, tls_port: int = 0, ticket: bytes = b"") -> bytes:
    reply = wire_pb2.FileReply(manifest=manifest_to_proto(manifest), tls_port=tls_port, ticket=ticket)
    return _frame(file_reply=reply)


def chunk_reply_header(length: int) -> bytes:
    """Followed on the stream by exactly `length` raw bytes."""
    return _frame(file_reply=wire_pb2.FileReply(length=length))


def error_reply(reason: str, retry_later: bool = False) -> bytes:
    return _frame(file_reply=wire_pb2.FileReply(error=reason, retry_later=retry_later))


def manifest_to_proto(manifest: ChunkManifest) -> wire_pb2.FileManifest:
    return wire_pb2.FileManifest(
        file_bytes=manifest.file_bytes, chunk_bytes=manifest.chunk_bytes, chunk_sha256=manifest.chunk_sha256
    )


def manifest_from_proto(message: wire_pb2.FileManifest) -> ChunkManifest:
    try:
        return ChunkManifest(message.file_bytes, message.chunk_bytes, tuple(message.chunk_sha256))
    except ManifestError as exc:
        raise FileWireError(f"bad manifest: {exc}") from exc


def check_chunk_request(request: wire_pb2.FileRequest, sha256: str, manifest: ChunkManifest) -> int:
    """The index of the chunk a request names exactly, for the file this stream serves."""
    if request.sha256 != sha256:
        raise ChunkRequestError("one stream serves one file")
    chunk = manifest.chunk_bytes
    index = request.offset // chunk if request.offset >= 0 else -1
    if request.offset % chunk or not 0 <= index < manifest.chunk_count:
        raise ChunkRequestError(f"offset {request.offset} is not the start of a chunk")
    if request.length != manifest.span(index)[1]:
        raise ChunkRequestError(f"length {request.length} is not chunk {index}'s")
    return index


@dataclass
class Reply:
    """One FileReply and, for a chunk reply, its bytes."""

    frame: wire_pb2.FileReply
    body: bytearray = field(default_factory=bytearray)


class ReplyParser:
    """The receiver's side of a FILE stream: FileReply frames, a chunk reply's raw bytes after it.

    `max_body_bytes` is the largest chunk the receiver asked for (0 before the manifest): a source
    that announces more is broken, and nothing that large is ever allocated.
    """

    def __init__(self, max_body_bytes: int = 0) -> None:
        self.max_body_bytes = max_body_bytes
        self._prefix = bytearray(LENGTH_PREFIX.size)
        self._target = self._prefix
        self._filled = 0
        self._pending: wire_pb2.FileReply | None = None
        self.bytes_received = 0

    def get_buffer(self) -> memoryview:
        """Where the next bytes go: never past the current prefix, frame or body."""
        return memoryview(self._target)[self._filled :]

    def buffer_updated(self, count: int) -> Reply | None:
        """`count` bytes were written into the last get_buffer(); a reply once one is complete."""
        self._filled += count
        self.bytes_received += count
        if self._filled < len(self._target):
            return None
        if self._target is self._prefix:
            (length,) = LENGTH_PREFIX.unpack(self._prefix)
            if length > MAX_FRAME_BYTES or length == 0:
                raise FileWireError(f"reply frame of {length} bytes")
            self._expect(bytearray(length))
            return None
        if self._pending is None:
            return self._on_frame(bytes(self._target))
        reply = Reply(self._pending, self._target)
        self._pending = None
        self._expect(self._prefix)
        return reply

    def _expect(self, target: bytearray) -> None:
        self._target, self._filled = target, 0

    def _on_frame(self, body: bytes) -> Reply | None:
        frame = decode_frame(body)
        if frame.WhichOneof("body") != "file_reply":
            raise FileWireError(f"a {frame.WhichOneof('body')} frame where a file reply belongs")
        reply = frame.file_reply
        if reply.length < 0 or reply.length > self.max_body_bytes:
            raise FileWireError(f"a reply of {reply.length} bytes (at most {self.max_body_bytes} asked)")
        if reply.length == 0:
            self._expect(self._prefix)
            return Reply(reply)
        self._pending = reply
        self._expect(bytearray(reply.length))
        return None

    def feed(self, data: bytes) -> list[Reply]:
        replies = []
        view = memoryview(data)
        while view:
            target = self.get_buffer()
            count = min(len(target), len(view))
            target[:count] = view[:count]
            view = view[count:]
            reply = self.buffer_updated(count)
            if reply is not None:
                replies.append(reply)
        return replies

    @property
    def mid_reply(self) -> bool:
        """Part of a reply has arrived (a stream ending now was cut off)."""
        return self._filled > 0 or self._target is not self._prefix
