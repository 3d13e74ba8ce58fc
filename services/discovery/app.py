"""The discovery service process: keeps this mesh's listing on Nostr relays and on the LAN current.

It follows the gossip view; whenever the listing would change (a model becomes ready, a node or
client joins or leaves, the mesh fills up) it republishes within a second, and otherwise refreshes
every LISTING_REFRESH_S so the expiry (LISTING_TTL_S) never passes while the mesh lives. A full mesh
(`--max-clients`) is delisted: its listing is replaced by a stub without the invite token. On stop
the node withdraws what it published; another publishing member takes over (publishing.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import replace

import grpc
import nostr_sdk

from services import __version__
from services.discovery.lan import LanAnnouncer
from services.discovery.listing import delisted_content
from services.discovery.nostr import NostrPublisher, load_or_create_keys
from services.discovery.publishing import MeshFacts, is_publisher, listing_from_view
from services.node.config import NodeConfig
from services.node.grpc_link import follow_stream, open_channel
from services.proto.meshllm.gossip.v1 import gossip_pb2, gossip_pb2_grpc
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc

logger = logging.getLogger("discovery")

LISTING_REFRESH_S = 60.0
LISTING_TTL_S = 180.0
# Gossip views change in bursts (a join touches several records): publish once the burst settles.
CHANGE_SETTLE_S = 0.5
PUBLISH_RETRY_S = 10.0
MESH_RETRY_S = 0.2
MESH_CALL_TIMEOUT_S = 2.0
NOSTR_KEY_FILE = "nostr.key"


def announces_on_lan(config: NodeConfig) -> bool:
    return (config.publish or config.lan) and not config.no_lan


def publishes_to_nostr(config: NodeConfig) -> bool:
    return config.publish and bool(config.relays)


async def fetch_facts(config: NodeConfig, mesh: mesh_pb2_grpc.MeshStub) -> MeshFacts:
    while True:
        try:
            invite = await mesh.GetInvite(mesh_pb2.GetInviteRequest(), wait_for_ready=True, timeout=5)
            return MeshFacts(
                mesh_id=invite.mesh_id,
                token=invite.token,
                name=config.mesh_name or invite.mesh_name,
                region=config.region,
                max_clients=config.max_clients,
                software_version=__version__,
            )
        except grpc.aio.AioRpcError:
            await asyncio.sleep(MESH_RETRY_S)


class ListingKeeper:
    """Decides, from each gossip view, what to publish where, and does it."""

    def __init__(self, config: NodeConfig, facts: MeshFacts, mesh: mesh_pb2_grpc.MeshStub) -> None:
        self.config = config
        self.facts = facts
        self.mesh = mesh
        self.view: gossip_pb2.MeshView | None = None
        self.changed = asyncio.Event()
        self.nostr: NostrPublisher | None = None
        if publishes_to_nostr(config):
            keys = load_or_create_keys(config.home / NOSTR_KEY_FILE)
            self.nostr = NostrPublisher(keys, config.relays)
        self.lan = LanAnnouncer() if announces_on_lan(config) else None
        self.nostr_sent: str | None = None  # content last accepted by a relay (a listing or the stub)
        self.lan_sent: str | None = None
        self.refresh_due = 0.0

    async def on_view(self, view: gossip_pb2.MeshView) -> None:
        self.view = view
        self.changed.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), max(0.0, self.refresh_due - time.time()))
                await asyncio.sleep(CHANGE_SETTLE_S)
            self.changed.clear()
            if self.view is None:
                self.refresh_due = time.time() + MESH_RETRY_S
                continue
            refresh = time.time() >= self.refresh_due
            ok = await self.sync(self.view, refresh)
            wait = LISTING_REFRESH_S if ok else PUBLISH_RETRY_S
            if refresh or not ok:
                self.refresh_due = time.time() + wait

    async def _current_token(self) -> None:
        """The invite changes (peers' addresses join it, rotate-key replaces the secret): list today's."""
        try:
            invite = await self.mesh.GetInvite(mesh_pb2.GetInviteRequest(), timeout=MESH_CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            logger.info("mesh not answering; listing the last token", extra={"code": error.code().name})
            return
        self.facts = replace(self.facts, token=invite.token, mesh_id=invite.mesh_id)

    async def sync(self, view: gossip_pb2.MeshView, refresh: bool) -> bool:
        await self._current_token()
        listing = listing_from_view(view, self.facts)
        try:
            content: str | None = None if listing.full else listing.content()
        except ValueError as exc:
            logger.warning("cannot list this mesh", extra={"reason": str(exc)})
            content = None
        ok = True
        if self.nostr is not None:
            wanted = content if content is not None and is_publisher(view) else None
            ok = await self._sync_nostr(wanted, refresh) and ok
        if self.lan is not None:
            ok = await self._sync_lan(content, view.local_node_id, refresh) and ok
        return ok

    async def _sync_nostr(self, content: str | None, refresh: bool) -> bool:
        assert self.nostr is not None
        if content is None:
            # Not (or no longer) ours to list, or full: replace what we published with the stub.
            if self.nostr_sent is None or self.nostr_sent == delisted_content(self.facts.mesh_id):
                return True
            content = delisted_content(self.facts.mesh_id)
            reason = "full" if is_publisher(self.view) else "not the publisher"  # type: ignore[arg-type]
            logger.info("delisting the mesh", extra={"reason": reason})
        elif content == self.nostr_sent and not refresh:
            return True
        now = int(time.time())
        try:
            accepted = await self.nostr.publish(self.facts.mesh_id, content, now, now + int(LISTING_TTL_S))
        except nostr_sdk.NostrSdkError as exc:
            logger.warning("publishing failed", extra={"error": str(exc)})
            return False
        if accepted:
            if content != self.nostr_sent:
                logger.info("listing published", extra={"relays": accepted, "mesh": self.facts.name})
            self.nostr_sent = content
        return accepted > 0

    async def _sync_lan(self, content: str | None, node_id: str, refresh: bool) -> bool:
        assert self.lan is not None
        if content is None:
            if self.lan.announced:
                await self.lan.withdraw()
                logger.info("withdrew the LAN announcement")
            self.lan_sent = None
            return True
        if content == self.lan_sent and not refresh:
            return True
        now = time.time()
        try:
            port = self.config.bind_port or 0
            await self.lan.announce(self.facts.mesh_id, node_id, port, content, now, now + LISTING_TTL_S)
        except OSError as exc:
            logger.warning("mDNS announcement failed", extra={"error": str(exc)})
            return False
        if content != self.lan_sent:
            logger.info("announced on the LAN", extra={"mesh": self.facts.name})
        self.lan_sent = content
        return True

    async def withdraw(self) -> None:
        """On stop: take our listing down now rather than leave it to expire."""
        if self.nostr is not None:
            if self.nostr_sent is not None and self.nostr_sent != delisted_content(self.facts.mesh_id):
                now = int(time.time())
                with contextlib.suppress(nostr_sdk.NostrSdkError):
                    stub = delisted_content(self.facts.mesh_id)
                    await self.nostr.publish(self.facts.mesh_id, stub, now, now + int(LISTING_TTL_S))
            await self.nostr.close()
        if self.lan is not None:
            await self.lan.close()


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_discovery(config: NodeConfig) -> None:
    if not (publishes_to_nostr(config) or announces_on_lan(config)):
        logger.info("private mesh: nothing to publish")
        await _until_signalled()
        return
    mesh_channel = open_channel(config.node_home, "mesh")
    gossip_channel = open_channel(config.node_home, "gossip")
    facts = await fetch_facts(config, mesh_pb2_grpc.MeshStub(mesh_channel))
    keeper = ListingKeeper(config, facts, mesh_pb2_grpc.MeshStub(mesh_channel))
    gossip = gossip_pb2_grpc.GossipStub(gossip_channel)
    logger.info(
        "discovery ready",
        extra={"mesh": facts.name, "nostr": keeper.nostr is not None, "lan": keeper.lan is not None},
    )
    tasks = [
        asyncio.ensure_future(
            follow_stream(
                "gossip view", lambda: gossip.Watch(gossip_pb2.WatchRequest()), keeper.on_view, logger
            )
        ),
        asyncio.ensure_future(keeper.run()),
    ]
    stopped = asyncio.ensure_future(_until_signalled())
    try:
        done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopped:
                task.result()  # a failure stops the service; supervisord restarts it
    finally:
        for task in (*tasks, stopped):
            task.cancel()
        await asyncio.gather(*tasks, stopped, return_exceptions=True)
        await keeper.withdraw()
        await mesh_channel.close()
        await gossip_channel.close()
