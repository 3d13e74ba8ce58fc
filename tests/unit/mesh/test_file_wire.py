"""The FILE stream's frames (services/mesh/file_wire.py), byte by byte and without sockets: the
receiver's reply parser, the source's check of chunk requests, manifests from the wire."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.gossip.model_hashes import MAX_CHUNKS, ChunkManifest
from services.mesh.file_wire import (
    ChunkRequestError,
    FileWireError,
    ReplyParser,
    check_chunk_request,
    chunk_reply_header,
    chunk_request,
    error_reply,
    manifest_from_proto,
    manifest_reply,
    manifest_request,
    path_choice,
)
from services.mesh.frames import LENGTH_PREFIX, MAX_FRAME_BYTES, FrameDecoder, FrameError, encode_frame
from services.proto.meshllm.mesh.v1 import wire_pb2

MIB = 1024 * 1024
SHA = "ab" * 32


def manifest(chunks: int = 3, chunk_bytes: int = MIB, short_by: int = 100) -> ChunkManifest:
    hashes = tuple(hashlib.sha256(bytes([i])).digest() for i in range(chunks))
    return ChunkManifest(chunks * chunk_bytes - short_by, chunk_bytes, hashes)


def conversation(body: bytes) -> bytes:
    """What a source sends: the manifest reply, two chunk replies, an error."""
    return (
        manifest_reply(manifest(), tls_port=4242, ticket=b"t" * 32)
        + chunk_reply_header(len(body))
        + body
        + chunk_reply_header(3)
        + b"xyz"
        + error_reply("the file changed on disk")
    )


def test_a_whole_conversation_parses_in_one_feed() -> None:
    body = bytes(range(256)) * 40
    parser = ReplyParser(max_body_bytes=MIB)
    first, second, third, last = parser.feed(conversation(body))
    assert manifest_from_proto(first.frame.manifest) == manifest()
    assert first.frame.tls_port == 4242 and first.frame.ticket == b"t" * 32 and first.body == b""
    assert second.frame.length == len(body) and second.body == body
    assert third.body == b"xyz"
    assert last.frame.error == "the file changed on disk" and not last.frame.retry_later
    assert not parser.mid_reply


def test_byte_by_byte_gives_the_same_replies() -> None:
    body = b"\x00\x01" * 5000
    parser = ReplyParser(max_body_bytes=MIB)
    replies = [r for byte in conversation(body) for r in parser.feed(bytes([byte]))]
    assert [r.body for r in replies] == [b"", body, b"xyz", b""]


@given(cuts=st.lists(st.integers(1, 4096), max_size=40))
def test_any_split_of_the_bytes_gives_the_same_replies(cuts: list[int]) -> None:
    data = conversation(b"q" * 10_000)
    parser = ReplyParser(max_body_bytes=MIB)
    replies, at = [], 0
    for cut in cuts:
        replies += parser.feed(data[at : at + cut])
        at += cut
    replies += parser.feed(data[at:])
    assert [len(r.body) for r in replies] == [0, 10_000, 3, 0]


def test_get_buffer_never_reaches_past_the_chunk_body() -> None:
    """A BufferedProtocol transport fills exactly the chunk's own buffer: no copy, no over-read."""
    parser = ReplyParser(max_body_bytes=MIB)
    header = chunk_reply_header(10)
    for byte in header:
        view = parser.get_buffer()
        assert len(view) >= 1
        view[0] = byte
        assert parser.buffer_updated(1) is None
    body_view = parser.get_buffer()
    assert len(body_view) == 10
    body_view[:] = b"0123456789"
    reply = parser.buffer_updated(10)
    assert reply is not None and reply.body == b"0123456789"
    assert len(parser.get_buffer()) == LENGTH_PREFIX.size  # the next reply's prefix


def test_a_body_larger_than_asked_for_is_refused_before_allocating_it() -> None:
    parser = ReplyParser(max_body_bytes=MIB)
    with pytest.raises(FileWireError, match="at most"):
        parser.feed(chunk_reply_header(MIB + 1))


def test_before_the_manifest_no_body_at_all_is_accepted() -> None:
    with pytest.raises(FileWireError):
        ReplyParser().feed(chunk_reply_header(1))


@pytest.mark.parametrize(
    "data",
    [
        LENGTH_PREFIX.pack(0),
        LENGTH_PREFIX.pack(MAX_FRAME_BYTES + 1),
        encode_frame(wire_pb2.WireFrame(ping=wire_pb2.Ping(seq=1))),
        encode_frame(wire_pb2.WireFrame(file_request=wire_pb2.FileRequest(sha256=SHA))),
        LENGTH_PREFIX.pack(4) + b"\xff\xff\xff\xff",
    ],
    ids=["empty frame", "oversized frame", "not a file frame", "a request, not a reply", "garbage"],
)
def test_what_is_not_a_file_reply_breaks_the_protocol(data: bytes) -> None:
    with pytest.raises(FrameError):
        ReplyParser(max_body_bytes=MIB).feed(data)


def test_a_stream_cut_mid_reply_is_visible() -> None:
    parser = ReplyParser(max_body_bytes=MIB)
    parser.feed(chunk_reply_header(100) + b"x" * 50)
    assert parser.mid_reply


def test_the_largest_manifest_fits_one_frame() -> None:
    biggest = ChunkManifest(MAX_CHUNKS * MIB, MIB, tuple(bytes(32) for _ in range(MAX_CHUNKS)))
    [reply] = ReplyParser().feed(manifest_reply(biggest, 65535, b"t" * 32))
    assert manifest_from_proto(reply.frame.manifest) == biggest


def test_requests_decode_as_the_source_reads_them() -> None:
    frames = FrameDecoder().feed(manifest_request(SHA) + path_choice(True) + chunk_request(SHA, MIB, MIB))
    first, path, chunk = frames
    assert first.file_request.manifest and first.file_request.sha256 == SHA
    assert path.file_path.on_this_stream
    assert (chunk.file_request.offset, chunk.file_request.length) == (MIB, MIB)


@pytest.mark.parametrize(
    ("chunk_bytes", "short_by", "error"),
    [
        (3 * MIB, 0, "power of two"),
        (1024, 0, "power of two"),
        (MIB, -MIB, "chunk hashes"),
    ],
)
def test_a_broken_manifest_from_the_wire_is_a_protocol_error(
    chunk_bytes: int, short_by: int, error: str
) -> None:
    message = wire_pb2.FileManifest(
        file_bytes=3 * chunk_bytes - short_by,
        chunk_bytes=chunk_bytes,
        chunk_sha256=[bytes(32)] * 3,
    )
    with pytest.raises(FileWireError, match=error):
        manifest_from_proto(message)


def test_a_manifest_with_a_short_hash_is_a_protocol_error() -> None:
    message = wire_pb2.FileManifest(file_bytes=MIB, chunk_bytes=MIB, chunk_sha256=[bytes(31)])
    with pytest.raises(FileWireError, match="32 bytes"):
        manifest_from_proto(message)


# ---- the source's check of chunk requests


def request(offset: int, length: int, sha256: str = SHA) -> wire_pb2.FileRequest:
    return wire_pb2.FileRequest(sha256=sha256, offset=offset, length=length)


def test_whole_chunks_are_served_including_the_short_last_one() -> None:
    m = manifest()
    assert check_chunk_request(request(0, MIB), SHA, m) == 0
    assert check_chunk_request(request(2 * MIB, MIB - 100), SHA, m) == 2


@pytest.mark.parametrize(
    ("offset", "length", "sha256"),
    [
        (1, MIB, SHA),  # unaligned
        (-MIB, MIB, SHA),  # before the file
        (3 * MIB, MIB, SHA),  # past the last chunk
        (0, MIB - 1, SHA),  # part of a chunk
        (0, 2 * MIB, SHA),  # two chunks at once
        (2 * MIB, MIB, SHA),  # past the end of the file
        (0, MIB, "cd" * 32),  # another file on this stream
    ],
)
def test_anything_but_exactly_one_chunk_of_this_file_is_refused(
    offset: int, length: int, sha256: str
) -> None:
    with pytest.raises(ChunkRequestError):
        check_chunk_request(request(offset, length, sha256), SHA, manifest())
