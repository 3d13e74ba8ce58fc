"""ControlReader: frames that arrived with the StreamOpen are decoded lazily, so errors surface in next()."""

from __future__ import annotations

import asyncio

import pytest

from services.mesh.frames import LENGTH_PREFIX, MAX_FRAME_BYTES, FrameError, encode_frame
from services.mesh.handshake import ControlReader
from services.proto.meshllm.mesh.v1 import wire_pb2


async def test_a_malformed_initial_frame_raises_from_next_not_the_constructor() -> None:
    reader = asyncio.StreamReader()
    control = ControlReader(reader, LENGTH_PREFIX.pack(MAX_FRAME_BYTES + 1))
    with pytest.raises(FrameError):
        await control.next()


async def test_initial_frames_come_first_then_the_stream() -> None:
    reader = asyncio.StreamReader()
    ping = wire_pb2.WireFrame(ping=wire_pb2.Ping(seq=1))
    reader.feed_data(encode_frame(wire_pb2.WireFrame(ping=wire_pb2.Ping(seq=2))))
    control = ControlReader(reader, encode_frame(ping))
    assert (await control.next()).ping.seq == 1
    assert (await control.next()).ping.seq == 2
