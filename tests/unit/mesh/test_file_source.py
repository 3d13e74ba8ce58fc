"""FileSource's lookup of what it shares: a file this node's gossip has just started advertising
is served even when the view has not reached the mesh service yet; anything else is refused, and
junk requests do not hammer gossip."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.gossip.model_hashes import hash_file
from services.mesh.file_pacing import TunnelActivity
from services.mesh.file_source import FileSource
from services.mesh.file_wire import ChunkRequestError
from services.proto.meshllm.gossip.v1 import gossip_pb2


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_LLM_CACHE", str(tmp_path / "cache"))


async def test_a_file_advertised_a_moment_ago_is_served_after_asking_gossip(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(bytes(range(256)) * 4096)
    sha256 = hash_file(path).sha256
    source = FileSource(None, TunnelActivity())
    asked = 0

    async def refresh() -> None:
        nonlocal asked
        asked += 1
        source.share([gossip_pb2.ModelFile(path=str(path), sha256=sha256, bytes=path.stat().st_size)])

    source.refresh_shared = refresh
    shared, manifest = await source._lookup(sha256)
    assert shared.path == path and manifest.file_bytes == path.stat().st_size
    assert asked == 1


async def test_an_unadvertised_file_is_refused_and_gossip_is_asked_at_most_once_a_second() -> None:
    source = FileSource(None, TunnelActivity())
    asked = 0

    async def refresh() -> None:
        nonlocal asked
        asked += 1

    source.refresh_shared = refresh
    for _ in range(5):
        with pytest.raises(ChunkRequestError, match="not advertised"):
            await source._lookup("ab" * 32)
    assert asked == 1
