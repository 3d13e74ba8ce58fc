"""Model files between real nodes (FetchFile, services/mesh/file_fetch.py): A and B advertise the same
~60 MB GGUF, C (a client) fetches it over the mesh. Every chunk and the whole file are verified; a
file nobody advertises is refused; a lying source is caught per chunk; a cancelled fetch resumes; a
full disk fails cleanly; a source killed mid-file leaves the rest to the other.

The sources send at most SEND_CAP_BYTES_PER_S each (the mesh's operator knob) so a test can act
while a transfer is under way.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from services.mesh.app import FILE_SEND_CAP_ENV
from services.mesh.file_part import part_path
from services.proto.meshllm.gossip.v1 import gossip_pb2, gossip_pb2_grpc
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc
from services.runner.binaries import BIN_DIR_ENV
from tests.support.node import RunningNode, free_port, wait_until
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
SEND_CAP_BYTES_PER_S = 24 * MIB
MODEL = "big"
VIEW_TIMEOUT_S = 30.0
FETCH_TIMEOUT_S = 60.0
DISK_FULL_TMPFS_BYTES = 8 * MIB


@dataclass
class Mesh:
    a: RunningNode
    b: RunningNode
    c: RunningNode
    ids: dict[str, str]
    files: dict[str, Path]  # a's and b's copies of the model
    sha256: str
    size: int
    out: Path


def start_node(root: Path, name: str, args: list[str]) -> RunningNode:
    return RunningNode(root / name, free_port(), free_port(), ["--name", name, *args]).start()


def advertised(node: RunningNode) -> dict[str, set[str]]:
    """node id -> the sha256s its record advertises, as `node`'s gossip sees the mesh."""
    with grpc.insecure_channel(node.node_home.grpc_target("gossip")) as channel:
        view = gossip_pb2_grpc.GossipStub(channel).GetView(gossip_pb2.GetViewRequest(), timeout=2)
    return {r.node_id: {m.sha256 for m in r.models_on_disk if m.sha256} for r in view.nodes}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, llama_bin_dir: Path) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("files")
    nodes: list[RunningNode] = []
    with pytest.MonkeyPatch.context() as env:
        # Hash caches and model stores of these nodes only (llama.cpp's build stays where it is),
        # and the sources' send cap.
        env.setenv("MESH_LLM_CACHE", str(root / "cache"))
        env.setenv(BIN_DIR_ENV, str(llama_bin_dir))
        env.setenv(FILE_SEND_CAP_ENV, str(SEND_CAP_BYTES_PER_S))
        file_a = write_tiny_llama_gguf(root / "a-models" / f"{MODEL}.gguf", n_layers=6, n_embd=512, seed=7)
        file_b = root / "b-models" / f"{MODEL}.gguf"
        file_b.parent.mkdir()
        shutil.copyfile(file_a, file_b)
        sha256 = hashlib.sha256(file_a.read_bytes()).hexdigest()
        try:
            a = start_node(root, "a", ["--model", str(file_a)])
            nodes.append(a)
            a.wait_ready([MODEL])
            token = a.invite()
            b = start_node(root, "b", ["--join", token, "--model", str(file_b)])
            c = start_node(root, "c", ["--join", token, "--client"])
            nodes += [b, c]
            b.wait_ready([MODEL])
            c.wait_ready([])
            ids = {"a": a.status().node_id, "b": b.status().node_id, "c": c.status().node_id}
            wait_until(
                lambda: all(sha256 in advertised(c).get(ids[n], set()) for n in "ab"),
                VIEW_TIMEOUT_S,
                "C to see A and B advertise the file",
            )
            out = root / "out"
            out.mkdir()
            yield Mesh(a, b, c, ids, {"a": file_a, "b": file_b}, sha256, file_a.stat().st_size, out)
        finally:
            if nodes:
                with ThreadPoolExecutor(len(nodes)) as pool:
                    list(pool.map(lambda node: node.stop(), nodes))


def fetch(
    mesh: Mesh,
    dest: Path,
    sources: str = "ab",
    sha256: str = "",
    until: Callable[[mesh_pb2.FetchProgress], bool] | None = None,
) -> list[mesh_pb2.FetchProgress]:
    """FetchFile on C's mesh service; with `until`, the call is cancelled once it says so."""
    request = mesh_pb2.FetchFileRequest(
        name=MODEL,
        sha256=sha256 or mesh.sha256,
        bytes=mesh.size,
        dest_path=str(dest),
        source_node_ids=[mesh.ids[s] for s in sources],
    )
    seen = []
    with grpc.insecure_channel(mesh.c.node_home.grpc_target("mesh")) as channel:
        call = mesh_pb2_grpc.MeshStub(channel).FetchFile(request, timeout=FETCH_TIMEOUT_S)
        for progress in call:
            seen.append(progress)
            if until is not None and until(progress):
                call.cancel()
                break
    return seen


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_comes_from_both_sources_verified(mesh: Mesh) -> None:
    dest = mesh.out / "both.gguf"
    seen = fetch(mesh, dest)
    final = seen[-1]
    assert final.state == mesh_pb2.FETCH_STATE_DONE, final
    assert final.path == str(dest) and final.bytes_done == final.bytes_total == mesh.size
    assert final.bytes_resumed == 0 and not final.bad_sources
    assert sha256_of(dest) == mesh.sha256
    assert not part_path(dest).exists()
    assert {s for p in seen for s in p.sources} == {mesh.ids["a"], mesh.ids["b"]}
    assert all(p.state == mesh_pb2.FETCH_STATE_RUNNING for p in seen[:-1])
    assert any(p.bytes_per_s > 0 for p in seen), "progress never reported a rate"


def test_a_file_nobody_advertises_is_refused(mesh: Mesh) -> None:
    dest = mesh.out / "nothing.gguf"
    [*_, final] = fetch(mesh, dest, sha256="ab" * 32)
    assert final.state == mesh_pb2.FETCH_STATE_FAILED
    assert "no good source" in final.error
    reasons = {b.node_id: b.reason for b in final.bad_sources}
    assert set(reasons) == {mesh.ids["a"], mesh.ids["b"]}
    assert all("not advertised" in reason for reason in reasons.values()), reasons
    assert not dest.exists() and not part_path(dest).exists()


def test_a_bad_request_fails_with_a_reason(mesh: Mesh) -> None:
    [final] = fetch(mesh, Path("relative.gguf"))
    assert final.state == mesh_pb2.FETCH_STATE_FAILED and "dest_path" in final.error


def test_a_lying_source_is_caught_per_chunk_and_the_other_sends_its_chunks(mesh: Mesh) -> None:
    liar = mesh.files["b"]
    original = liar.read_bytes()
    stat = liar.stat()
    try:
        with liar.open("r+b") as handle:  # one flipped byte in every chunk, same size and mtime
            for offset in range(0, mesh.size, MIB):
                handle.seek(offset)
                handle.write(bytes([original[offset] ^ 0xFF]))
        os.utime(liar, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        dest = mesh.out / "lied.gguf"
        [*_, final] = fetch(mesh, dest)
        assert final.state == mesh_pb2.FETCH_STATE_DONE, final
        assert sha256_of(dest) == mesh.sha256
        [bad] = final.bad_sources
        assert bad.node_id == mesh.ids["b"] and "did not match its hash" in bad.reason
        assert mesh.c.log_contains("mesh", "bad file source")
    finally:
        liar.write_bytes(original)
        os.utime(liar, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_cancelled_fetch_resumes_from_its_part_file(mesh: Mesh) -> None:
    dest = mesh.out / "resumed.gguf"
    first = fetch(mesh, dest, until=lambda p: p.bytes_done >= mesh.size // 3)
    assert first[-1].state == mesh_pb2.FETCH_STATE_RUNNING
    wait_until(part_path(dest).exists, 5, "the .part to stay after the cancel")
    assert not dest.exists()
    [*_, final] = fetch(mesh, dest)
    assert final.state == mesh_pb2.FETCH_STATE_DONE, final
    assert final.bytes_resumed >= mesh.size // 3
    assert final.bytes_done == mesh.size
    assert sha256_of(dest) == mesh.sha256


@pytest.fixture
def tiny_disk(mesh: Mesh) -> Iterator[Path]:
    mount_point = mesh.out / "tiny-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_FULL_TMPFS_BYTES}", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_fails_the_fetch_and_removes_the_part_file(mesh: Mesh, tiny_disk: Path) -> None:
    dest = tiny_disk / "too-big.gguf"
    [*_, final] = fetch(mesh, dest)
    assert final.state == mesh_pb2.FETCH_STATE_FAILED
    assert "disk full" in final.error
    assert not part_path(dest).exists() and not dest.exists()


def test_a_source_killed_mid_file_leaves_the_rest_to_the_other(mesh: Mesh) -> None:
    """Last: A does not come back."""
    dest = mesh.out / "survived.gguf"
    killed_at: list[int] = []

    def kill_a_a_fifth_in(progress: mesh_pb2.FetchProgress) -> bool:
        if not killed_at and progress.bytes_done >= mesh.size // 5:
            assert mesh.ids["a"] in progress.sources
            mesh.a.kill_hard()
            killed_at.append(progress.bytes_done)
        return False

    [*_, final] = fetch(mesh, dest, until=kill_a_a_fifth_in)
    assert killed_at and killed_at[0] < mesh.size
    assert final.state == mesh_pb2.FETCH_STATE_DONE, final
    assert final.bytes_resumed == 0 and not final.bad_sources  # lost is not bad: it may come back
    assert sha256_of(dest) == mesh.sha256
    assert mesh.c.log_contains("mesh", "file source lost")
