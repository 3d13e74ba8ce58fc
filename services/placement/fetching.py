"""Getting the file of a model this node adopted: from peers over the mesh, else from the Hub (catalog).

The mesh service does the transfer (FetchFile: chunked, several sources, verified, resumable);
this module picks the file and the sources, runs one transfer per model, keeps the latest progress
for gossip and the plan, and retries with backoff while the adoption stands. The finished file is
renamed into the model store by the mesh; gossip's store rescan advertises it and the plan then
starts it like any other model on disk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import NamedTuple

import grpc

from services.placement.view import UNHASHED, MeshNode
from services.proto.meshllm.gossip.v1 import gossip_pb2
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc

logger = logging.getLogger("placement.fetch")

FETCH_RETRY_S = 3.0
FETCH_RETRY_MAX_S = 30.0
# A Hub download reports every read chunk (10 MiB); the plan and gossip hear at most this often.
DOWNLOAD_REPORT_EVERY_S = 1.0

# (bytes done, bytes total) of a Hub download's current file, from the thread that downloads.
ByteProgress = Callable[[int, int], None]


class FileChoice(NamedTuple):
    file_name: str
    sha256: str
    bytes: int
    sources: tuple[str, ...]  # node ids, in id order


def choose_file(
    nodes: Sequence[MeshNode], local_id: str, model: str, preferred_sha256: str = ""
) -> FileChoice | None:
    """The copy most peers hold (the one seen served wins a tie), and every peer that holds it."""
    holders: dict[str, list[MeshNode]] = {}
    for node in sorted(nodes, key=lambda n: n.node_id):
        file = node.models_on_disk.get(model)
        if node.node_id == local_id or node.leaving or file is None or file.sha256 == UNHASHED:
            continue
        holders.setdefault(file.sha256, []).append(node)
    if not holders:
        return None
    counts = Counter({sha: len(group) for sha, group in holders.items()})
    sha = max(counts, key=lambda s: (counts[s], s == preferred_sha256, s))
    first = holders[sha][0].models_on_disk[model]
    return FileChoice(PurePath(first.path).name, sha, first.bytes, tuple(n.node_id for n in holders[sha]))


def _progress_record(
    model: str, choice: FileChoice, progress: mesh_pb2.FetchProgress
) -> gossip_pb2.FileTransfer:
    return gossip_pb2.FileTransfer(
        name=model,
        sha256=choice.sha256,
        bytes_total=progress.bytes_total or choice.bytes,
        bytes_done=progress.bytes_done,
        bytes_per_s=max(progress.bytes_per_s, 0.0),
        source_node_ids=list(progress.sources),
        error=progress.error,
    )


class ModelFetcher:
    """One transfer task per adopted model whose file this node lacks."""

    def __init__(
        self,
        mesh: mesh_pb2_grpc.MeshStub,
        store: Path,
        downloadable: Mapping[str, Callable[[ByteProgress], Path]],
        on_change: Callable[[], None],
        on_failure: Callable[[str, str], None],
    ) -> None:
        self._mesh = mesh
        self._store = store
        self._downloadable = downloadable
        self._on_change = on_change
        self._on_failure = on_failure
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._fetched: dict[str, Path] = {}  # model -> the file a finished fetch wrote
        self.transfers: dict[str, gossip_pb2.FileTransfer] = {}
        self._nodes: Sequence[MeshNode] = ()
        self._local_id = ""

    def follow(self, nodes: Sequence[MeshNode], local_id: str, needed: Mapping[str, str]) -> None:
        """`needed`: model -> preferred sha256, for every adopted model without a local file."""
        self._nodes, self._local_id = nodes, local_id
        for model in [m for m in self._tasks if m not in needed]:
            self._tasks.pop(model).cancel()  # retired (or the file arrived): the .part stays
            self.transfers.pop(model, None)
            self._fetched.pop(model, None)
        for model, sha in needed.items():
            task = self._tasks.get(model)
            # Fetched: gossip's store rescan lists the file within seconds; until then it still
            # looks missing, and must not be fetched again.
            done = self._fetched.get(model)
            if done is not None and done.exists():
                continue
            if task is None or task.done():
                self._tasks[model] = asyncio.ensure_future(self._keep_fetching(model, sha))

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()

    async def _keep_fetching(self, model: str, sha: str) -> None:
        delay = FETCH_RETRY_S
        while True:
            error = await self._fetch_once(model, sha)
            if error is None:
                return
            self._on_failure(model, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, FETCH_RETRY_MAX_S)

    async def _fetch_once(self, model: str, sha: str) -> str | None:
        choice = choose_file(self._nodes, self._local_id, model, sha)
        if choice is None:
            if model in self._downloadable:
                return await self._download(model)
            return "no peer has its file and the catalog cannot download it"
        request = mesh_pb2.FetchFileRequest(
            name=model,
            sha256=choice.sha256,
            bytes=choice.bytes,
            dest_path=str(self._store / choice.file_name),
            source_node_ids=list(choice.sources),
        )
        self._store.mkdir(parents=True, exist_ok=True)
        logger.info(
            "fetching %s from peers", model, extra={"sources": len(choice.sources), "bytes": choice.bytes}
        )
        try:
            async for progress in self._mesh.FetchFile(request):
                self.transfers[model] = _progress_record(model, choice, progress)
                self._on_change()
                if progress.state == mesh_pb2.FETCH_STATE_DONE:
                    logger.info("fetched %s", model, extra={"path": progress.path})
                    self._fetched[model] = Path(progress.path or request.dest_path)
                    return None
                if progress.state == mesh_pb2.FETCH_STATE_FAILED:
                    return progress.error or "the transfer failed"
        except grpc.aio.AioRpcError as error:
            return f"mesh service: {error.details() or error.code().name}"
        return "the transfer ended without a result"

    async def _download(self, model: str) -> str | None:
        started = time.monotonic()
        self.transfers[model] = gossip_pb2.FileTransfer(name=model)
        self._on_change()
        loop = asyncio.get_running_loop()
        reported = [0.0]

        def progress(done: int, total: int) -> None:  # on the download's thread
            now = time.monotonic()
            if now - reported[0] >= DOWNLOAD_REPORT_EVERY_S or (total and done >= total):
                reported[0] = now
                loop.call_soon_threadsafe(self._download_moved, model, done, total, now - started)

        try:
            path = await asyncio.to_thread(self._downloadable[model], progress)
        except Exception as exc:
            return f"download failed: {exc}"
        logger.info(
            "downloaded %s", model, extra={"path": str(path), "s": round(time.monotonic() - started, 1)}
        )
        return None

    def _download_moved(self, model: str, done: int, total: int, elapsed_s: float) -> None:
        if model not in self.transfers:
            return  # retired while the thread was still reading
        # No sha256 and no source nodes: that is how the plan tells a Hub download from a mesh fetch.
        rate = done / elapsed_s if elapsed_s > 0 else 0.0
        self.transfers[model] = gossip_pb2.FileTransfer(
            name=model, bytes_total=total, bytes_done=done, bytes_per_s=rate
        )
        self._on_change()
