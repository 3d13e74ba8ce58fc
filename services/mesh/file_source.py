"""The source side of FILE streams: this node's advertised model files, chunk by chunk, to peers.

Only files in this node's own gossip record (models_on_disk) are shared, named by sha256; a request
for anything else is refused with the reason. The manifest served is the cached one computed when
the file was hashed (services/gossip/model_hashes.py), never one made from the bytes now on disk,
so a file damaged since is caught by the receiver chunk by chunk. Disk reads run in threads.
Bytes take the TLS fast path when the receiver can reach it, and are paced while the link to that
peer carries inference (file_pacing.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from services.gossip.model_hashes import ChunkManifest, cached_manifest, file_hashes
from services.mesh.fast_path import FastPathListener
from services.mesh.file_pacing import SendPacer, TunnelActivity
from services.mesh.file_wire import (
    ChunkRequestError,
    check_chunk_request,
    chunk_reply_header,
    error_reply,
    manifest_reply,
)
from services.mesh.frames import FrameDecoder, FrameError
from services.mesh.incoming import reset_stream
from services.proto.meshllm.gossip.v1 import gossip_pb2
from services.proto.meshllm.mesh.v1 import wire_pb2

logger = logging.getLogger("mesh.files")

HANDSHAKE_TIMEOUT_S = 10.0
# A receiver keeps its stream while it waits for chunks to come free (another source is slow).
SESSION_IDLE_TIMEOUT_S = 60.0
MAX_SERVING_STREAMS = 32
# How long a request for an unknown file waits for gossip's word on this node's own record.
REFRESH_TIMEOUT_S = 2.0
# Requests for unknown files ask gossip at most this often (a peer asking for junk costs nothing).
REFRESH_MIN_INTERVAL_S = 1.0
REQUEST_READ_BYTES = 64 * 1024
# Chunk bytes the source lets the transport buffer before it waits: a chunk and more, so the
# next one is read from disk while this one is still going out.
SEND_BUFFER_BYTES = 4 * 1024 * 1024

StreamPair = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True)
class SharedFile:
    path: Path
    bytes: int


class _Frames:
    """The frames a receiver sends on one byte stream (requests only: it never sends raw bytes)."""

    def __init__(self, reader: asyncio.StreamReader, initial: bytes = b"") -> None:
        self._reader = reader
        self._decoder = FrameDecoder()
        self._pending: deque[wire_pb2.WireFrame] = deque(self._decoder.feed(initial))

    async def next(self, timeout_s: float) -> wire_pb2.WireFrame | None:
        """The next frame; None when the receiver ended the stream."""
        async with asyncio.timeout(timeout_s):
            while not self._pending:
                data = await self._reader.read(REQUEST_READ_BYTES)
                if not data:
                    return None
                self._pending.extend(self._decoder.feed(data))
        return self._pending.popleft()

    def ready(self) -> wire_pb2.WireFrame | None:
        """A frame already here, without waiting (for reading ahead)."""
        return self._pending[0] if self._pending else None


class FileSource:
    def __init__(
        self, fast_path: FastPathListener | None, activity: TunnelActivity, cap_bytes_per_s: float = 0.0
    ) -> None:
        self.fast_path = fast_path
        self.activity = activity
        self.cap_bytes_per_s = cap_bytes_per_s
        self.shared: dict[str, SharedFile] = {}
        # Asks gossip for this node's own record again: a file hashed a moment ago may be in the
        # record peers see before the view reaches this service.
        self.refresh_shared: Callable[[], Awaitable[None]] | None = None
        self._last_refresh = -REFRESH_MIN_INTERVAL_S
        self._manifests: dict[str, ChunkManifest] = {}
        self._pacers: dict[str, SendPacer] = {}
        self.serving = 0
        self.refused = 0
        self.dropped = 0
        self.bytes_sent = 0

    def share(self, files: Iterable[gossip_pb2.ModelFile]) -> None:
        """What this node's own gossip record advertises: all it will ever serve."""
        self.shared = {f.sha256: SharedFile(Path(f.path), f.bytes) for f in files if f.sha256}

    async def serve_stream(
        self, peer: str, initial: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.serving += 1
        try:
            await self._serve(peer, _Frames(reader, initial), writer)
        except FrameError as exc:
            self._drop(peer, writer, str(exc))
        except (ConnectionError, TimeoutError):
            reset_stream(writer)
        except Exception:  # a bug of ours costs this stream only, and says so
            logger.exception("file stream failed", extra={"peer": peer[:8]})
            reset_stream(writer)
        finally:
            self.serving -= 1

    async def _serve(self, peer: str, frames: _Frames, writer: asyncio.StreamWriter) -> None:
        first = await frames.next(HANDSHAKE_TIMEOUT_S)
        if first is None:
            return
        if first.WhichOneof("body") != "file_request" or not first.file_request.manifest:
            raise FrameError("a file stream must start with a manifest request")
        sha256 = first.file_request.sha256
        try:
            shared, manifest = await self._lookup(sha256)
        except ChunkRequestError as exc:
            self._refuse(peer, writer, sha256, str(exc))
            return
        if self.serving > MAX_SERVING_STREAMS:
            writer.write(error_reply("busy: too many file streams", retry_later=True))
            await _finish(writer)
            return
        path = await self._choose_path(frames, writer, manifest)
        if path is None:
            return
        chosen_frames, chosen_writer = path
        try:
            await self._serve_chunks(peer, sha256, shared, manifest, chosen_frames, chosen_writer)
        except OSError as exc:
            if isinstance(exc, ConnectionError):
                raise
            self._refuse(peer, chosen_writer, sha256, f"cannot read the file: {exc.strerror or exc}")
        finally:
            if chosen_writer is not writer:
                chosen_writer.close()
            else:
                await _finish(writer)

    def _may_refresh(self) -> bool:
        now = time.monotonic()
        if now - self._last_refresh < REFRESH_MIN_INTERVAL_S:
            return False
        self._last_refresh = now
        return True

    async def _lookup(self, sha256: str) -> tuple[SharedFile, ChunkManifest]:
        shared = self.shared.get(sha256)
        if shared is None and self.refresh_shared is not None and self._may_refresh():
            with contextlib.suppress(Exception):  # gossip away: refuse as if it said no
                await asyncio.wait_for(self.refresh_shared(), REFRESH_TIMEOUT_S)
            shared = self.shared.get(sha256)
        if shared is None:
            raise ChunkRequestError(f"not advertised: this node shares no file with sha256 {sha256[:16]}")
        manifest = self._manifests.get(sha256)
        if manifest is None:
            manifest = await asyncio.to_thread(cached_manifest, sha256)
        if manifest is None:
            # Hashed before manifests were cached: hash it again (its sha256 must still match).
            try:
                hashes = await asyncio.to_thread(file_hashes, shared.path)
            except OSError as exc:
                raise ChunkRequestError(f"cannot read the file: {exc.strerror or exc}") from exc
            if hashes.sha256 != sha256:
                raise ChunkRequestError("the file changed on disk since it was advertised")
            manifest = hashes.manifest
        self._manifests[sha256] = manifest
        return shared, manifest

    async def _choose_path(
        self, frames: _Frames, writer: asyncio.StreamWriter, manifest: ChunkManifest
    ) -> tuple[_Frames, asyncio.StreamWriter] | None:
        """Offer the fast path with the manifest; the receiver says where the chunk bytes go."""
        ticket, accepted, port = b"", None, 0
        if self.fast_path is not None:
            with contextlib.suppress(ConnectionError):
                ticket, accepted = self.fast_path.offer()
                port = self.fast_path.port
        writer.write(manifest_reply(manifest, port, ticket))
        try:
            chosen = await frames.next(HANDSHAKE_TIMEOUT_S)
        except BaseException:
            self._withdraw(ticket)
            raise
        if chosen is None or chosen.WhichOneof("body") != "file_path":
            self._withdraw(ticket)
            if chosen is None:
                return None
            raise FrameError("expected the receiver's path choice after the manifest")
        if chosen.file_path.on_this_stream or accepted is None:
            self._withdraw(ticket)
            return frames, writer
        try:
            reader, fast_writer = await asyncio.wait_for(accepted, HANDSHAKE_TIMEOUT_S)
        except (TimeoutError, asyncio.CancelledError):
            self._withdraw(ticket)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this stream is being shut down, not left waiting by the receiver
            raise TimeoutError("the receiver never came on the fast path") from None
        await _finish(writer)
        return _Frames(reader), fast_writer

    def _withdraw(self, ticket: bytes) -> None:
        if self.fast_path is not None and ticket:
            self.fast_path.withdraw(ticket)

    async def _serve_chunks(
        self,
        peer: str,
        sha256: str,
        shared: SharedFile,
        manifest: ChunkManifest,
        frames: _Frames,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Requests in order; the next chunk is read from disk while this one is sent."""
        with contextlib.suppress(AttributeError, NotImplementedError):  # QUIC's adapter has no limits
            writer.transport.set_write_buffer_limits(high=SEND_BUFFER_BYTES)
        ahead: tuple[int, asyncio.Future[bytes]] | None = None
        try:
            while True:
                frame = await frames.next(SESSION_IDLE_TIMEOUT_S)
                if frame is None:
                    return
                if frame.WhichOneof("body") != "file_request":
                    raise FrameError(f"a {frame.WhichOneof('body')} frame where a chunk request belongs")
                try:
                    index = check_chunk_request(frame.file_request, sha256, manifest)
                except ChunkRequestError as exc:
                    self._refuse(peer, writer, sha256, str(exc))
                    return
                if ahead is not None and ahead[0] == index:
                    data = await ahead[1]
                else:
                    data = await _read_span(shared.path, *manifest.span(index))
                ahead = self._read_ahead(frames, sha256, manifest, shared)
                if len(data) != manifest.span(index)[1]:
                    self._refuse(peer, writer, sha256, "the file changed on disk since it was advertised")
                    return
                writer.write(chunk_reply_header(len(data)))
                await self._send(peer, data, writer)
        finally:
            if ahead is not None:
                ahead[1].cancel()

    def _read_ahead(
        self, frames: _Frames, sha256: str, manifest: ChunkManifest, shared: SharedFile
    ) -> tuple[int, asyncio.Future[bytes]] | None:
        upcoming = frames.ready()
        if upcoming is None or upcoming.WhichOneof("body") != "file_request":
            return None
        try:
            index = check_chunk_request(upcoming.file_request, sha256, manifest)
        except ChunkRequestError:
            return None  # refused when its turn comes
        read = asyncio.ensure_future(_read_span(shared.path, *manifest.span(index)))
        # Its error (if any) is raised where it is awaited; a cancelled one is never awaited.
        read.add_done_callback(lambda done: done.cancelled() or done.exception())
        return index, read

    async def _send(self, peer: str, data: bytes, writer: asyncio.StreamWriter) -> None:
        pacer = self._pacers.setdefault(peer, SendPacer(self.cap_bytes_per_s))
        view = memoryview(data)
        while view:
            busy = self.activity.busy(peer)
            count = pacer.slice_bytes(busy, len(view))
            delay = pacer.delay_s(count, time.monotonic(), busy)
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(view[:count])
            view = view[count:]
            self.bytes_sent += count
            await writer.drain()

    def _refuse(self, peer: str, writer: asyncio.StreamWriter, sha256: str, reason: str) -> None:
        self.refused += 1
        logger.info(
            "refused a file request", extra={"peer": peer[:8], "sha256": sha256[:16], "reason": reason}
        )
        writer.write(error_reply(reason))
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()

    def _drop(self, peer: str, writer: asyncio.StreamWriter, reason: str) -> None:
        self.dropped += 1
        logger.warning(
            "dropped a file stream",
            extra={"peer": peer[:8], "reason": reason, "file_streams_dropped": self.dropped},
        )
        reset_stream(writer)


async def _read_span(path: Path, offset: int, length: int) -> bytes:
    return await asyncio.to_thread(_pread, path, offset, length)


def _pread(path: Path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


async def _finish(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        if writer.can_write_eof():
            writer.write_eof()
        await writer.drain()
