"""Listings on the local network: mDNS/DNS-SD (zeroconf), no relay and no internet needed.

Each announcing node registers one `_mesh-llm._udp.local.` instance named after the mesh and its
own node id; its TXT record carries the same listing content as on Nostr, in chunks (TXT strings
hold 255 bytes). Only public meshes and meshes started with `--lan` are announced: the listing
carries the invite token, which admits whoever reads it.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from zeroconf import IPVersion, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from services.discovery.listing import (
    InvalidListing,
    Sighting,
    content_from_txt,
    read_sighting,
    txt_properties,
)

logger = logging.getLogger("discovery")

SERVICE_TYPE = "_mesh-llm._udp.local."
BROWSE_S = 2.0
INFO_TIMEOUT_MS = 1500
MAX_LAN_SERVICES = 200


def instance_name(mesh_id: str, node_id: str) -> str:
    return f"mesh-{mesh_id[:16]}-{node_id[:12]}.{SERVICE_TYPE}"


class LanAnnouncer:
    """Registers, updates and withdraws this node's mDNS announcement."""

    def __init__(self) -> None:
        self._zeroconf: AsyncZeroconf | None = None
        self._info: ServiceInfo | None = None

    async def announce(
        self, mesh_id: str, node_id: str, port: int, content: str, published: float, expires: float
    ) -> None:
        if self._zeroconf is None:
            self._zeroconf = AsyncZeroconf(ip_version=IPVersion.V4Only)
        info = ServiceInfo(
            SERVICE_TYPE,
            instance_name(mesh_id, node_id),
            port=port,
            properties=txt_properties(content, published, expires),
            server=f"mesh-{node_id[:12]}.local.",
            addresses=[socket.inet_aton("127.0.0.1")],
        )
        if self._info is None:
            await self._zeroconf.async_register_service(info, allow_name_change=True)
        elif self._info.name != info.name:
            await self._zeroconf.async_unregister_service(self._info)
            await self._zeroconf.async_register_service(info, allow_name_change=True)
        else:
            await self._zeroconf.async_update_service(info)
        self._info = info

    async def withdraw(self) -> None:
        if self._zeroconf is not None and self._info is not None:
            await self._zeroconf.async_unregister_service(self._info)
        self._info = None

    async def close(self) -> None:
        await self.withdraw()
        if self._zeroconf is not None:
            await self._zeroconf.async_close()
            self._zeroconf = None

    @property
    def announced(self) -> bool:
        return self._info is not None


async def browse_sightings(now: float, browse_s: float = BROWSE_S) -> list[Sighting]:
    """Listen for announcements for `browse_s`, then read each one's TXT record; invalid ones are skipped."""
    found: list[str] = []

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if (
            state_change is not ServiceStateChange.Removed
            and name not in found
            and len(found) < MAX_LAN_SERVICES
        ):
            found.append(name)

    aiozc = AsyncZeroconf(ip_version=IPVersion.V4Only)
    browser = AsyncServiceBrowser(aiozc.zeroconf, SERVICE_TYPE, handlers=[on_change])
    try:
        await asyncio.sleep(browse_s)
        infos = [AsyncServiceInfo(SERVICE_TYPE, name) for name in found]
        await asyncio.gather(*(i.async_request(aiozc.zeroconf, INFO_TIMEOUT_MS) for i in infos))
    finally:
        await browser.async_cancel()
        await aiozc.async_close()
    sightings = []
    for info in infos:
        try:
            content, published, expires = content_from_txt(dict(info.properties or {}))
            sightings.append(
                read_sighting(
                    content,
                    source="lan",
                    published_unix_s=published,
                    expires_unix_s=expires,
                    now=now,
                    publisher_key=info.name,
                )
            )
        except InvalidListing as exc:
            logger.debug("ignored a LAN listing", extra={"name": info.name, "reason": str(exc)})
    return sightings
