"""Look for meshes everywhere asked (Nostr relays and the LAN, at the same time), one sighting per mesh."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from services.discovery.lan import BROWSE_S, browse_sightings
from services.discovery.listing import Sighting, newest_per_mesh
from services.discovery.nostr import FETCH_TIMEOUT_S, fetch_sightings


@dataclass(frozen=True)
class SearchScope:
    relays: tuple[str, ...]
    lan: bool

    def describe(self) -> str:
        places = []
        if self.relays:
            places.append(f"{len(self.relays)} relay{'s' if len(self.relays) != 1 else ''}")
        if self.lan:
            places.append("the LAN")
        return " and ".join(places) or "nowhere"


async def find_meshes(
    scope: SearchScope, lan_browse_s: float = BROWSE_S, fetch_timeout_s: float = FETCH_TIMEOUT_S
) -> list[Sighting]:
    now = time.time()
    lookups = [fetch_sightings(scope.relays, now, fetch_timeout_s)]
    if scope.lan:
        lookups.append(browse_sightings(now, lan_browse_s))
    results = await asyncio.gather(*lookups)
    return newest_per_mesh([s for found in results for s in found])
