"""FetchFile: a model file from the peers that advertise it, run by the plan in file_fetch_plan.py.

One task per source keeps a session to it (file_session.py) and pipelines the chunks the plan
gives it; each chunk is verified and written in a thread (file_part.py) while the next arrives.
The RPC's own task chooses the manifest's .part, finishes the file and streams progress. When the
RPC is cancelled every task is cancelled and the .part stays, for the next call to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path

from services.gossip.model_hashes import FileHashes, remember
from services.mesh.file_fetch_plan import Complete, Failed, FetchPlan, Running, SourceState
from services.mesh.file_part import DiskFull, PartFile
from services.mesh.file_session import SourceRefused, SourceSession, open_session
from services.mesh.frames import FrameError
from services.mesh.link import PeerLink
from services.mesh.transfer_rate import ReportGate, TransferRate
from services.proto.meshllm.mesh.v1 import mesh_pb2

logger = logging.getLogger("mesh.files")

# A lost source is tried again this often while the fetch runs (a busy one a little later).
SOURCE_RETRY_S = 1.0
SOURCE_BUSY_RETRY_S = 2.0
# Chunks of one source being verified and written at once, while more arrive.
WRITES_IN_FLIGHT_PER_SOURCE = 2
# With nothing to report, the RPC's task still looks at the plan this often (deadlines, rate).
IDLE_CHECK_S = 1.0
# A fetch for a destination whose previous fetch still runs waits this long for that one to start
# stopping (its RPC's cancel may not have arrived yet) before it is refused as a duplicate...
PREVIOUS_FETCH_WAIT_S = 5.0
# ...and once it stops, however long its last chunk writes take (a loaded disk throttles them),
# up to this: more is a fault of ours, reported as such.
PREVIOUS_FETCH_STOP_S = 60.0
# A stop slower than this is logged (what it waited on is then in the log next to it).
SLOW_STOP_S = 1.0
SHA256_HEX_CHARS = 64

FindLink = Callable[[str], PeerLink | None]


class FetchRefused(ValueError):
    """The request itself cannot be served (bad sha256, dest_path, no sources)."""


class FileFetcher:
    """This node's fetches, at most one per destination."""

    def __init__(
        self, find_link: FindLink, local_node_id: str, fast_path: bool = True, dial_from: str = ""
    ) -> None:
        self._find_link = find_link
        self._dial_from = dial_from  # the mesh's --bind-ip: fast-path connections leave from it
        self._local_node_id = local_node_id
        # False: chunk bytes stay on the QUIC streams (what a relayed link or a blocked TCP port
        # gets anyway; tests choose it to exercise that path on a direct link).
        self._fast_path = fast_path
        self._running: dict[Path, _FetchRun] = {}  # destination -> its fetch, until it has stopped

    async def fetch(self, request: mesh_pb2.FetchFileRequest) -> AsyncIterator[mesh_pb2.FetchProgress]:
        try:
            dest, sources = self._check(request)
            await self._previous_ended(dest)
        except FetchRefused as exc:
            yield mesh_pb2.FetchProgress(state=mesh_pb2.FETCH_STATE_FAILED, error=str(exc))
            return
        run = _FetchRun(request, dest, sources, self._find_link, self._fast_path, self._dial_from)
        self._running[dest] = run
        try:
            # Closed here, not whenever the garbage collector finds it: the run's tasks and writes
            # are over before the next fetch of `dest` may start.
            async with contextlib.aclosing(run.progress()) as reports:
                async for progress in reports:
                    yield progress
        finally:
            run.stopping.set()  # already, unless it was closed before it started
            run.ended.set()
            if self._running.get(dest) is run:
                del self._running[dest]

    async def _previous_ended(self, dest: Path) -> None:
        """Returns when no fetch of `dest` runs (the caller registers its own before any await)."""
        while (previous := self._running.get(dest)) is not None:
            try:
                await asyncio.wait_for(previous.stopping.wait(), PREVIOUS_FETCH_WAIT_S)
            except TimeoutError:
                raise FetchRefused(f"{dest} is already being fetched") from None
            try:
                await asyncio.wait_for(previous.ended.wait(), PREVIOUS_FETCH_STOP_S)
            except TimeoutError:
                raise FetchRefused(
                    f"the previous fetch of {dest} did not stop in {PREVIOUS_FETCH_STOP_S:.0f}s"
                ) from None

    def _check(self, request: mesh_pb2.FetchFileRequest) -> tuple[Path, list[str]]:
        sha = request.sha256
        if len(sha) != SHA256_HEX_CHARS or any(c not in "0123456789abcdef" for c in sha):
            raise FetchRefused("sha256 must be 64 lowercase hex digits")
        if request.bytes < 0:
            raise FetchRefused("bytes must not be negative")
        dest = Path(request.dest_path)
        if not dest.is_absolute() or not dest.parent.is_dir() or dest.is_dir():
            raise FetchRefused(
                f"dest_path {request.dest_path!r} must be an absolute file path in an existing dir"
            )
        sources = [s for s in dict.fromkeys(request.source_node_ids) if s and s != self._local_node_id]
        if not sources:
            raise FetchRefused("no source peers given")
        return dest, sources


class _FetchRun:
    def __init__(
        self,
        request: mesh_pb2.FetchFileRequest,
        dest: Path,
        sources: list[str],
        find_link: FindLink,
        fast_path: bool,
        dial_from: str,
    ) -> None:
        self.request = request
        self._fast_path = fast_path
        self._dial_from = dial_from
        self.dest = dest
        self.sources = sources
        self._find_link = find_link
        self.plan = FetchPlan(request.bytes or None, sources, time.monotonic())
        self.part: PartFile | None = None
        self._write_error = ""
        self._changed = asyncio.Event()
        self._rate = TransferRate()
        self._logged_bad: set[str] = set()
        self._lost_logged: set[str] = set()
        self._log = {"model": request.name, "sha256": request.sha256[:16]}
        self.stopping = asyncio.Event()  # set once the run starts to stop (done, failed or cancelled)
        self.ended = asyncio.Event()  # set by the fetcher once it has stopped

    def _notify(self) -> None:
        """The plan changed: wake whoever waits on it (every waiter holds the event it saw)."""
        self._changed.set()
        self._changed = asyncio.Event()
        for node_id, reason in self.plan.bad_sources():
            if node_id not in self._logged_bad:
                self._logged_bad.add(node_id)
                logger.warning("bad file source", extra={**self._log, "peer": node_id[:8], "reason": reason})

    async def _wait_change(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    async def progress(self) -> AsyncGenerator[mesh_pb2.FetchProgress, None]:
        logger.info(
            "fetching a file", extra={**self._log, "sources": len(self.sources), "dest": str(self.dest)}
        )
        tasks = [asyncio.ensure_future(self._follow(node_id)) for node_id in self.sources]
        gate = ReportGate()
        try:
            while True:
                final = await self._step()
                if final is not None:
                    yield final
                    return
                report = self._report(mesh_pb2.FETCH_STATE_RUNNING)
                key = (report.bytes_done, tuple(report.sources), len(report.bad_sources))
                wait = gate.wait_s(time.monotonic(), key)
                if wait == 0:
                    gate.sent(time.monotonic(), key)
                    yield report
                deadline = self.plan.next_deadline()
                timeout = min(IDLE_CHECK_S, wait or IDLE_CHECK_S)
                if deadline is not None:
                    timeout = max(0.0, min(timeout, deadline - time.monotonic()))
                await self._wait_change(timeout)
        finally:
            self.stopping.set()
            stop_began = time.monotonic()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.part is not None:
                self.part.close()
            if (stop_s := time.monotonic() - stop_began) > SLOW_STOP_S:
                logger.info("a fetch was slow to stop", extra={**self._log, "stop_s": round(stop_s, 1)})

    async def _step(self) -> mesh_pb2.FetchProgress | None:
        """Advance what only this task does; the final report once the fetch is over."""
        now = time.monotonic()
        if self.plan.needs_resume_check:
            await self._open_part()
        if self._write_error:
            return await self._fail(self._write_error)
        outcome = self.plan.outcome(now)
        if isinstance(outcome, Failed):
            return await self._fail(outcome.reason)
        if isinstance(outcome, Complete):
            return await self._finish()
        return None

    async def _open_part(self) -> None:
        assert self.plan.manifest is not None
        self.part = PartFile(self.dest, self.plan.manifest)
        try:
            found = await asyncio.to_thread(self.part.open)
        except OSError as exc:
            self._write_error = _write_failure(exc, self.part.path)
            return
        self.plan.resume_checked(found, time.monotonic())
        if found:
            logger.info("resuming a fetch", extra={**self._log, "bytes_resumed": self.plan.bytes_resumed})
        self._notify()

    async def _finish(self) -> mesh_pb2.FetchProgress:
        assert self.part is not None and self.plan.manifest is not None
        try:
            matches = await asyncio.to_thread(self.part.finish, self.request.sha256)
        except OSError as exc:
            return await self._fail(_write_failure(exc, self.part.path))
        if not matches:
            self.plan.whole_file_mismatch(time.monotonic())
            self._notify()
            return await self._fail(self.plan.outcome(time.monotonic()).reason)  # type: ignore[union-attr]
        hashes = FileHashes(self.request.sha256, self.plan.manifest)
        try:  # gossip advertises the new file without reading it all again to hash it
            await asyncio.to_thread(remember, self.dest, hashes)
        except OSError as exc:
            logger.warning("cannot cache the fetched file's hashes", extra={**self._log, "reason": str(exc)})
        logger.info(
            "fetched a file", extra={**self._log, "dest": str(self.dest), "bytes": self.plan.bytes_done}
        )
        return self._report(mesh_pb2.FETCH_STATE_DONE, path=str(self.dest))

    async def _fail(self, reason: str) -> mesh_pb2.FetchProgress:
        if self.part is not None and self._write_error.startswith("disk full"):
            await asyncio.to_thread(self.part.discard)
        logger.warning("file fetch failed", extra={**self._log, "reason": reason})
        return self._report(mesh_pb2.FETCH_STATE_FAILED, error=reason)

    def _report(self, state: int, error: str = "", path: str = "") -> mesh_pb2.FetchProgress:
        total = self.plan.manifest.file_bytes if self.plan.manifest else self.request.bytes
        done = self.plan.bytes_done
        self._rate.record(time.monotonic(), done - self.plan.bytes_resumed)
        return mesh_pb2.FetchProgress(
            state=state,  # type: ignore[arg-type]
            bytes_total=total,
            bytes_done=done,
            bytes_resumed=self.plan.bytes_resumed,
            bytes_per_s=round(self._rate.bytes_per_s(), 1),
            eta_s=round(self._rate.eta_s(total - done), 1),
            sources=self.plan.sending(),
            bad_sources=[mesh_pb2.BadSource(node_id=n, reason=r) for n, r in self.plan.bad_sources()],
            error=error,
            path=path,
        )

    # ---- one task per source -----------------------------------------------------------------

    async def _follow(self, node_id: str) -> None:
        try:
            await self._keep_session(node_id)
        except Exception as exc:  # a bug of ours: that source is lost to this fetch, not the node
            logger.exception("file source task failed", extra={**self._log, "peer": node_id[:8]})
            self._lost(node_id, f"internal error: {exc!r}")

    async def _keep_session(self, node_id: str) -> None:
        """Keep a session to `node_id` while it may help: reconnect when lost, stop when bad."""
        retry_s = 0.0
        while self.plan.state_of(node_id) is not SourceState.BAD and not self._over():
            if retry_s:
                await asyncio.sleep(retry_s)
                self.plan.retrying(node_id, time.monotonic())
            retry_s = SOURCE_RETRY_S
            link = self._find_link(node_id)
            if link is None:
                self._lost(node_id, "not linked")
                continue
            try:
                session = await open_session(link, self.request.sha256, self._fast_path, self._dial_from)
            except SourceRefused as exc:
                if not exc.retry_later:
                    self.plan.refused(node_id, str(exc), time.monotonic())
                    self._notify()
                    return
                self._lost(node_id, str(exc))
                retry_s = SOURCE_BUSY_RETRY_S
                continue
            except FrameError as exc:
                self.plan.broke_protocol(node_id, str(exc), time.monotonic())
                self._notify()
                return
            except (ConnectionError, TimeoutError, OSError) as exc:
                self._lost(node_id, str(exc) or type(exc).__name__)
                continue
            await self._use(node_id, session)

    async def _use(self, node_id: str, session: SourceSession) -> None:
        self._lost_logged.discard(node_id)
        self.plan.manifest_from(node_id, session.manifest, time.monotonic())
        self._notify()
        try:
            await self._pump(node_id, session)
        except SourceRefused as exc:
            self.plan.refused(node_id, str(exc), time.monotonic())
        except FrameError as exc:
            self.plan.broke_protocol(node_id, str(exc), time.monotonic())
        except (ConnectionError, TimeoutError, OSError) as exc:
            if isinstance(exc, DiskFull) or not isinstance(exc, ConnectionError | TimeoutError):
                self._write_error = _write_failure(exc, self.part.path if self.part else self.dest)
            else:
                self._lost(node_id, str(exc) or type(exc).__name__)
        finally:
            session.close()
            self._notify()

    def _lost(self, node_id: str, reason: str) -> None:
        if node_id not in self._lost_logged:  # once per loss, not per retry
            self._lost_logged.add(node_id)
            logger.info("file source lost", extra={**self._log, "peer": node_id[:8], "reason": reason})
        self.plan.lost(node_id, reason, time.monotonic())
        self._notify()

    async def _pump(self, node_id: str, session: SourceSession) -> None:
        """Chunk requests kept in flight; each reply is verified and written in a thread while the
        next ones arrive. Returns when the source is no use any more or the fetch is over."""
        requested: deque[int] = deque()
        writing: deque[tuple[int, asyncio.Future[bool]]] = deque()
        try:
            while self.plan.state_of(node_id) is SourceState.READY and not self._write_error:
                for index in self.plan.assign(node_id):
                    session.request(self.request.sha256, index)
                    requested.append(index)
                if len(writing) >= WRITES_IN_FLIGHT_PER_SOURCE or (writing and not requested):
                    index, write = writing[0]
                    matched = await write  # left in `writing` until done: a cancel waits for it
                    writing.popleft()
                    self._wrote(node_id, index, matched)
                    continue
                if not requested:
                    if self._over():
                        return
                    await self._wait_change(IDLE_CHECK_S)
                    continue
                reply = await session.next_reply()
                index = requested.popleft()
                if reply.frame.error:
                    raise SourceRefused(reply.frame.error)
                assert self.part is not None
                write = asyncio.ensure_future(asyncio.to_thread(self.part.write_chunk, index, reply.body))
                writing.append((index, write))
        finally:
            await self._settle(node_id, writing)

    async def _settle(self, node_id: str, writing: deque[tuple[int, asyncio.Future[bool]]]) -> None:
        """A thread cannot be cancelled: wait for every write still running, so the plan knows
        those chunks and nothing writes the .part once the fetch is over; then raise the first
        write's error, if any."""
        error: BaseException | None = None
        for index, write in writing:
            try:
                self._wrote(node_id, index, await asyncio.shield(write))
            except asyncio.CancelledError:
                await asyncio.wait([write])  # cancelled again: still never leave a write behind
                error = error or asyncio.CancelledError()
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error

    def _wrote(self, node_id: str, index: int, matched: bool) -> None:
        now = time.monotonic()
        if matched:
            self.plan.chunk_verified(node_id, index, now)
        else:
            self.plan.chunk_corrupt(node_id, index, now)
        self._notify()

    def _over(self) -> bool:
        return bool(self._write_error) or not isinstance(self.plan.outcome(time.monotonic()), Running)


def _write_failure(exc: OSError, path: Path) -> str:
    if isinstance(exc, DiskFull):
        return f"disk full writing {path}"
    return f"cannot write {path}: {exc.strerror or exc}"
