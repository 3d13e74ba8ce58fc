"""The gossip view as the planner sees it: plain, immutable values, no protobuf inside the rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from services.proto.meshllm.gossip.v1 import gossip_pb2

UNHASHED = ""  # sha256 of a file whose content hash is not known yet: it may run solo, never split


class DiskFile(NamedTuple):
    """A model file on one node's disk; two copies are the same file only if their sha256 match."""

    sha256: str
    bytes: int
    path: str


@dataclass(frozen=True)
class MeshNode:
    node_id: str
    vram_bytes: int  # after --max-vram
    is_client: bool
    models_on_disk: Mapping[str, DiskFile] = field(default_factory=dict)  # by model name
    models_wanted: tuple[str, ...] = ()  # in the order the node asked for them
    rtt_ms: Mapping[str, float] = field(default_factory=dict)  # by peer node id, as this node measured
    leaving: bool = False
    force_split: bool = False  # --split: never solo


def _node_from_record(record: gossip_pb2.NodeRecord) -> MeshNode:
    files: dict[str, DiskFile] = {}
    for model in record.models_on_disk:
        # Two entries under one name: keep the first, as the owner listed it.
        files.setdefault(model.name, DiskFile(model.sha256, model.bytes, model.path))
    return MeshNode(
        node_id=record.node_id,
        vram_bytes=max(record.vram_bytes, 0),
        is_client=record.is_client,
        models_on_disk=files,
        models_wanted=tuple(dict.fromkeys(record.models_wanted)),
        rtt_ms=dict(record.rtt_ms),
        leaving=record.leaving,
        force_split=record.force_split,
    )


def mesh_nodes_from_view(view: gossip_pb2.MeshView) -> list[MeshNode]:
    """One MeshNode per node id (the first record wins), sorted by node id."""
    nodes: dict[str, MeshNode] = {}
    for record in view.nodes:
        if record.node_id and record.node_id not in nodes:
            nodes[record.node_id] = _node_from_record(record)
    return [nodes[node_id] for node_id in sorted(nodes)]


def with_local_files(nodes: list[MeshNode], local_id: str, files: Mapping[str, DiskFile]) -> list[MeshNode]:
    """Fill in the files the local record does not list yet: those still being hashed.

    Gossip publishes models_on_disk only once every file is hashed (minutes for a big file the
    first time); a model that fits here can start solo before that, so the caller passes the
    configured files (sha256 UNHASHED where unknown). Files the record already lists win. An
    unhashed file never joins a split, so peers planning without it reach the same splits.
    """
    result = []
    for node in nodes:
        if node.node_id == local_id:
            node = replace(node, models_on_disk={**files, **node.models_on_disk})
        result.append(node)
    return result
