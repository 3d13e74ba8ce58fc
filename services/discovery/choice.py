"""`--auto`: which of the meshes we can see to join, and why, in one line (sans-IO, deterministic).

Hard rules first: a mesh that is full is never joined, and with `--mesh-name` only a mesh of exactly
that name is (case-insensitive), so `--auto --mesh-name poker-night` never lands in another mesh.
Then points, highest wins (ties: newest, then mesh id):
  LAN (no relay or internet in the way)   +100
  each model the user asked for, served   +40   (wanted but not yet served: +10)
  region matches --region                 +20
  the mesh we joined last time            +15
  capacity: total VRAM                    up to +20 (log-scaled, 5 per doubling from 1 GB)
  nodes                                   +1 each, up to +10
  freshness                               -1 per minute since the listing was refreshed, up to -10
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.discovery.listing import Sighting

LAN_POINTS = 100.0
SERVED_MODEL_POINTS = 40.0
WANTED_MODEL_POINTS = 10.0
REGION_POINTS = 20.0
LAST_MESH_POINTS = 15.0
VRAM_POINTS_PER_DOUBLING = 5.0
VRAM_POINTS_MAX = 20.0
NODE_POINTS_MAX = 10.0
STALE_POINTS_PER_MIN = 1.0
STALE_POINTS_MAX = 10.0
GIB = 1 << 30


@dataclass(frozen=True)
class AutoWish:
    """What the user asked `--auto` for."""

    models: tuple[str, ...] = ()
    region: str = ""
    mesh_name: str = ""
    client: bool = False
    last_mesh_id: str = ""


@dataclass(frozen=True)
class Choice:
    sighting: Sighting
    points: float
    reasons: tuple[str, ...]
    considered: int

    @property
    def explanation(self) -> str:
        listing = self.sighting.listing
        name = f'"{listing.name}"' if listing.name else f"mesh {listing.mesh_id[:8]}"
        why = "; ".join(self.reasons)
        others = self.considered - 1
        among = f"best of {self.considered} meshes" if others else "the only suitable mesh"
        return f"--auto: joining {name} ({self.sighting.source}) — {why} — {among}"


def same_name(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def excluded_because(sighting: Sighting, wish: AutoWish) -> str | None:
    listing = sighting.listing
    if wish.mesh_name and not same_name(listing.name, wish.mesh_name):
        return f'named "{listing.name}", not "{wish.mesh_name}"'
    if listing.full:
        return f"full ({listing.client_count}/{listing.max_clients} clients)"
    if wish.client and not listing.models_served:
        return "serves no model yet"
    return None


def score(sighting: Sighting, wish: AutoWish, now: float) -> tuple[float, tuple[str, ...]]:
    listing = sighting.listing
    points = 0.0
    reasons: list[str] = []
    if sighting.source == "lan":
        points += LAN_POINTS
        reasons.append("on your LAN")
    served = [m for m in wish.models if m in listing.models_served]
    wanted = [m for m in wish.models if m not in served and m in listing.models_wanted]
    points += SERVED_MODEL_POINTS * len(served) + WANTED_MODEL_POINTS * len(wanted)
    if served:
        reasons.append(f"serves {', '.join(served)}")
    elif listing.models_served:
        reasons.append(f"serves {', '.join(listing.models_served[:3])}")
    if wanted:
        reasons.append(f"wants {', '.join(wanted)}")
    if wish.region and same_name(listing.region, wish.region):
        points += REGION_POINTS
        reasons.append(f"region {listing.region}")
    if wish.last_mesh_id and wish.last_mesh_id == listing.mesh_id:
        points += LAST_MESH_POINTS
        reasons.append("joined last time")
    gib = listing.vram_bytes / GIB
    points += min(VRAM_POINTS_MAX, VRAM_POINTS_PER_DOUBLING * math.log2(1 + gib))
    points += min(NODE_POINTS_MAX, float(listing.node_count))
    points -= min(STALE_POINTS_MAX, STALE_POINTS_PER_MIN * sighting.age_s(now) / 60)
    reasons.append(f"{listing.node_count} node{'s' if listing.node_count != 1 else ''}, {gib:.1f} GB")
    return points, tuple(reasons)


def choose(sightings: list[Sighting], wish: AutoWish, now: float) -> Choice | None:
    scored = []
    for sighting in sightings:
        if excluded_because(sighting, wish) is None:
            points, reasons = score(sighting, wish, now)
            scored.append((points, sighting.published_unix_s, sighting.listing.mesh_id, sighting, reasons))
    if not scored:
        return None
    scored.sort(key=lambda item: (item[0], item[1], item[2]), reverse=True)
    points, _, _, best, reasons = scored[0]
    return Choice(best, points, reasons, len(scored))


def nothing_found_explanation(sightings: list[Sighting], wish: AutoWish, where: str) -> str:
    """Why `--auto` found nothing to join, in one line (the caller says what it does instead)."""
    looked = f"{len(sightings)} mesh{'es' if len(sightings) != 1 else ''} on {where}"
    if wish.mesh_name:
        return f'--auto: no joinable mesh named "{wish.mesh_name}" among {looked}'
    return f"--auto: no joinable mesh among {looked}"
