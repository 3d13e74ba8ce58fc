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


class Adopted(NamedTuple):
    """A model a node took up itself (pool rules or `mesh-llm load`), beyond what it was started with."""

    model: str
    since_unix_s: float
    by_hand: bool = False
    for_loss: bool = False
    reason: str = ""


class Seen(NamedTuple):
    """A model a node saw served in the mesh, and when last."""

    sha256: str
    bytes: int
    last_served_unix_s: float
    dropped_unix_s: float = 0.0  # dropped from the mesh by hand at this time (0: never)


class Served(NamedTuple):
    model: str
    ready: bool  # READY (routable); otherwise loading


@dataclass(frozen=True)
class MeshNode:
    node_id: str
    vram_bytes: int  # after --max-vram
    is_client: bool
    models_on_disk: Mapping[str, DiskFile] = field(default_factory=dict)  # by model name
    # What the node serves by choice, in order: the models it was started with (or loaded), then
    # those it adopted. The planner places exactly these.
    models_wanted: tuple[str, ...] = ()
    rtt_ms: Mapping[str, float] = field(default_factory=dict)  # by peer node id, as this node measured
    leaving: bool = False
    force_split: bool = False  # --split: never solo
    adopted: Mapping[str, Adopted] = field(default_factory=dict)  # by model; also in models_wanted
    models_seen: Mapping[str, Seen] = field(default_factory=dict)
    request_rate_per_min: Mapping[str, float] = field(default_factory=dict)  # requests entering here
    serving: tuple[Served, ...] = ()  # solo servers and split hosts: what the API can route to

    @property
    def models_configured(self) -> tuple[str, ...]:
        return tuple(m for m in self.models_wanted if m not in self.adopted)


_SERVING_ROLES = (gossip_pb2.MODEL_ROLE_SOLO, gossip_pb2.MODEL_ROLE_SPLIT_HOST)
_SERVING_STATES = (gossip_pb2.SERVE_STATE_LOADING, gossip_pb2.SERVE_STATE_READY)


def _node_from_record(record: gossip_pb2.NodeRecord) -> MeshNode:
    files: dict[str, DiskFile] = {}
    for model in record.models_on_disk:
        # Two entries under one name: keep the first, as the owner listed it.
        files.setdefault(model.name, DiskFile(model.sha256, model.bytes, model.path))
    adopted: dict[str, Adopted] = {}
    for a in record.adopted:
        adopted.setdefault(a.model, Adopted(a.model, a.since_unix_s, a.by_hand, a.for_loss, a.reason))
    seen: dict[str, Seen] = {}
    for s in record.models_seen:
        seen.setdefault(s.name, Seen(s.sha256, s.bytes, s.last_served_unix_s, s.dropped_unix_s))
    serving = tuple(
        Served(s.name, s.state == gossip_pb2.SERVE_STATE_READY)
        for s in record.served
        if s.role in _SERVING_ROLES and s.state in _SERVING_STATES
    )
    return MeshNode(
        node_id=record.node_id,
        vram_bytes=max(record.vram_bytes, 0),
        is_client=record.is_client,
        models_on_disk=files,
        models_wanted=tuple(dict.fromkeys([*record.models_wanted, *adopted])),
        rtt_ms=dict(record.rtt_ms),
        leaving=record.leaving,
        force_split=record.force_split,
        adopted=adopted,
        models_seen=seen,
        request_rate_per_min=dict(record.request_rate_per_min),
        serving=serving,
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
