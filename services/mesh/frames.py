"""The mesh frame codec, sans-IO: bytes in, typed WireFrames out (h11-style; no sockets here).

A frame is a u32 big-endian length and one protobuf WireFrame. Anything malformed or larger
than MAX_FRAME_BYTES raises FrameError, and the caller closes that stream with the reason.
"""

from __future__ import annotations

import struct

from google.protobuf.message import DecodeError

from services.proto.meshllm.mesh.v1 import wire_pb2

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 256 * 1024
LENGTH_PREFIX = struct.Struct(">I")


class FrameError(Exception):
    """The peer broke the framing protocol (oversized, undecodable or empty frame)."""


def encode_frame(frame: wire_pb2.WireFrame) -> bytes:
    body = frame.SerializeToString()
    if len(body) > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {len(body)} bytes exceeds MAX_FRAME_BYTES")
    return LENGTH_PREFIX.pack(len(body)) + body


class FrameDecoder:
    """Feed it stream bytes as they arrive; it returns each complete frame once."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_frame_bytes

    def feed(self, data: bytes) -> list[wire_pb2.WireFrame]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= LENGTH_PREFIX.size:
            (length,) = LENGTH_PREFIX.unpack_from(self._buffer)
            if length > self._max:
                raise FrameError(f"frame of {length} bytes exceeds the {self._max}-byte cap")
            end = LENGTH_PREFIX.size + length
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[LENGTH_PREFIX.size : end])
            del self._buffer[:end]
            frames.append(decode_frame(body))
        return frames


def decode_frame(body: bytes) -> wire_pb2.WireFrame:
    frame = wire_pb2.WireFrame()
    try:
        frame.ParseFromString(body)
    except DecodeError as exc:
        raise FrameError(f"undecodable frame: {exc}") from exc
    if frame.WhichOneof("body") is None:
        raise FrameError("frame has no known body (newer protocol or garbage)")
    return frame


class OneFrameReader:
    """Reads one frame off a stream whose bytes after it are raw payload (a handshake step)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> tuple[wire_pb2.WireFrame, bytes] | None:
        """The frame and the bytes after it, once the frame is complete; None until then."""
        self._buffer += data
        if len(self._buffer) < LENGTH_PREFIX.size:
            return None
        (length,) = LENGTH_PREFIX.unpack_from(self._buffer)
        if length > MAX_FRAME_BYTES:
            raise FrameError(f"frame of {length} bytes exceeds the {MAX_FRAME_BYTES}-byte cap")
        end = LENGTH_PREFIX.size + length
        if len(self._buffer) < end:
            return None
        return decode_frame(bytes(self._buffer[LENGTH_PREFIX.size : end])), bytes(self._buffer[end:])


class StreamOpenReader:
    """Reads the one StreamOpen frame a data stream starts with; what follows is raw payload."""

    def __init__(self) -> None:
        self._reader = OneFrameReader()

    def feed(self, data: bytes) -> tuple[wire_pb2.StreamOpen, bytes] | None:
        read = self._reader.feed(data)
        if read is None:
            return None
        frame, rest = read
        if frame.WhichOneof("body") != "stream_open":
            raise FrameError("data stream did not start with StreamOpen")
        if frame.stream_open.protocol_version != PROTOCOL_VERSION:
            raise FrameError(f"protocol version {frame.stream_open.protocol_version} is not supported")
        return frame.stream_open, rest


def stream_open_frame(
    kind: int, source_node_id: str, target_node_id: str = "", relayed_kind: int = 0
) -> bytes:
    return encode_frame(
        wire_pb2.WireFrame(
            stream_open=wire_pb2.StreamOpen(
                protocol_version=PROTOCOL_VERSION,
                kind=kind,  # type: ignore[arg-type]
                source_node_id=source_node_id,
                target_node_id=target_node_id,
                relayed_kind=relayed_kind,  # type: ignore[arg-type]
            )
        )
    )
