"""Small builders for mesh views in placement tests."""

from __future__ import annotations

from services.placement.view import DiskFile, MeshNode

GB = 10**9
SHA_A = "a" * 64
SHA_B = "b" * 64


def disk(model: str, size: int, sha256: str = SHA_A, path: str = "") -> dict[str, DiskFile]:
    return {model: DiskFile(sha256, size, path or f"/models/{model}.gguf")}


def mesh_node(
    node_id: str,
    vram: int,
    *,
    wants: tuple[str, ...] = (),
    files: dict[str, DiskFile] | None = None,
    rtt: dict[str, float] | None = None,
    client: bool = False,
    leaving: bool = False,
    force_split: bool = False,
) -> MeshNode:
    return MeshNode(
        node_id=node_id,
        vram_bytes=vram,
        is_client=client,
        models_on_disk=files or {},
        models_wanted=wants,
        rtt_ms=rtt or {},
        leaving=leaving,
        force_split=force_split,
    )
