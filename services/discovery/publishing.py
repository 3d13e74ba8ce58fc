"""What this node should say about its mesh, from the gossip view (sans-IO).

Every member started with `--publish`/`--mesh-name` sets `publishing` in its gossip record; the live
one with the lowest node id publishes to Nostr. Every node computes the same answer from the same
view, so when the publisher leaves the next one takes over within a gossip round, and there is
never more than one publisher per view.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.discovery.listing import MAX_MODELS, MeshListing
from services.proto.meshllm.gossip.v1 import gossip_pb2

READY = gossip_pb2.SERVE_STATE_READY


@dataclass(frozen=True)
class MeshFacts:
    """What the listing needs that gossip does not carry: the mesh and how we describe it."""

    mesh_id: str
    token: str
    name: str
    region: str
    max_clients: int
    software_version: str


def live_members(view: gossip_pb2.MeshView) -> list[gossip_pb2.NodeRecord]:
    return [record for record in view.nodes if not record.leaving]


def elected_publisher(view: gossip_pb2.MeshView) -> str | None:
    candidates = [r.node_id for r in live_members(view) if r.publishing]
    return min(candidates) if candidates else None


def is_publisher(view: gossip_pb2.MeshView) -> bool:
    return bool(view.local_node_id) and elected_publisher(view) == view.local_node_id


def listing_from_view(view: gossip_pb2.MeshView, facts: MeshFacts) -> MeshListing:
    members = live_members(view)
    servers = [r for r in members if not r.is_client]
    served: dict[str, None] = {}
    wanted: dict[str, None] = {}
    for record in servers:
        for model in record.served:
            if model.state == READY:
                served[model.name] = None
        for name in record.models_wanted:
            wanted[name] = None
    return MeshListing(
        mesh_id=facts.mesh_id,
        name=facts.name,
        region=facts.region,
        token=facts.token,
        models_served=tuple(sorted(served))[:MAX_MODELS],
        models_wanted=tuple(sorted(set(wanted) - set(served)))[:MAX_MODELS],
        vram_bytes=sum(r.vram_bytes for r in servers),
        node_count=len(servers),
        client_count=len(members) - len(servers),
        max_clients=facts.max_clients,
        software_version=facts.software_version,
        publisher_node_id=view.local_node_id,
    )
