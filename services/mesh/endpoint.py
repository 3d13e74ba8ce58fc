"""The node's QUIC endpoint: listen, dial, admit, keep one link per peer, and replace lost links.

Streams peers open to us are served by IncomingStreams (services/mesh/incoming.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from aioquic.asyncio import serve
from aioquic.asyncio.server import QuicServer

from services.mesh.addresses import dial_host, split_address
from services.mesh.admission import AdmissionRefused
from services.mesh.dial_race import first_success
from services.mesh.frames import stream_open_frame
from services.mesh.handshake import ControlReader, Credentials, admit_as_dialer
from services.mesh.incoming import IncomingStreams, StreamHandler
from services.mesh.link import LinkEvents, PeerLink
from services.mesh.quic import MeshQuicProtocol, peer_certificate_key, quic_configuration, quic_connect
from services.mesh.redial import BROKE_PROTOCOL_COOLDOWN_S
from services.proto.meshllm.mesh.v1 import wire_pb2

logger = logging.getLogger("mesh.endpoint")

DIAL_TIMEOUT_S = 2.0
# A lost direct link is first replaced through a relay (a peer that still hears the lost one) before
# the peer is reported gone; a dead peer's relays refuse at once, so this bounds only slow relays.
RECOVERY_TIMEOUT_S = 1.5
# How long the higher-id end of a lost link waits for the lower-id end's relayed link before it
# dials one itself (the other end may not have noticed the loss, or may have no relay).
RECOVERY_HEAD_START_S = 0.75
# A direct link this quiet (two missed pings) loses to a relayed link the peer opens.
STALE_DIRECT_LINK_S = 2.0


class MeshEndpoint(IncomingStreams):
    def __init__(
        self,
        credentials: Credentials,
        stream_handlers: dict[int, StreamHandler],
        on_frame: Callable[[PeerLink, wire_pb2.WireFrame], Awaitable[None]],
        on_peers_changed: Callable[[], None],
        on_observed: Callable[[str], None] = lambda host: None,
    ) -> None:
        self.credentials = credentials
        self.links: dict[str, PeerLink] = {}
        # Peers whose link was just lost and is being replaced through a relay: still listed as
        # peers (for at most RECOVERY_TIMEOUT_S) so a lost path is not mistaken for a lost node.
        self.recovering: dict[str, PeerLink] = {}
        self._link_added: dict[str, asyncio.Event] = {}
        # Peers dropped for breaking the protocol: refused (dialing in, or through a relay) for a while.
        self._banned_until: dict[str, float] = {}
        self.closing = False
        self.refused_count = 0
        self.dropped_streams = 0
        self._stream_handlers = stream_handlers
        self._on_frame = on_frame
        self._on_peers_changed = on_peers_changed
        self._on_observed = on_observed
        self._link_of: dict[MeshQuicProtocol, PeerLink] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._dialing: set[str] = set()
        self._server: QuicServer | None = None
        # Dialers bind the address the endpoint listens on when it is pinned to one (--bind-ip), so
        # peers see this node's packets come from it; "" while listening on every interface.
        self._dial_from = ""
        # Told of every peer (id, addresses) we hear of, so the redial schedule knows where to look.
        self.on_learned: Callable[[str, list[str]], None] | None = None
        # Told of a peer dropped for breaking the protocol, so it is not redialed at once.
        self.on_broke_protocol: Callable[[str], None] | None = None

    @property
    def node_id(self) -> str:
        return self.credentials.identity.node_id

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _protocol_factory(self, *args, **kwargs) -> MeshQuicProtocol:  # type: ignore[no-untyped-def]
        return MeshQuicProtocol(*args, on_stream=self._on_stream, on_lost=self._on_connection_lost, **kwargs)

    async def listen(self, host: str, port: int) -> int:
        self._dial_from = dial_host(host)
        self._server = await serve(
            host,
            port,
            configuration=quic_configuration(self.credentials.identity, is_client=False),
            create_protocol=self._protocol_factory,
        )
        return int(self._server._transport.get_extra_info("sockname")[1])  # type: ignore[union-attr]

    async def close(self) -> None:
        self.closing = True
        for link in list(self.links.values()):
            link.goodbye("shutting down")
        await asyncio.sleep(0.05)  # let the goodbyes leave before the connections close
        for link in list(self.links.values()):
            link.close("shutting down")
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()

    # ---- dialing

    async def dial(self, address: str) -> PeerLink:
        """Connect to `address` and pass admission; raises AdmissionRefused or OSError."""
        try:
            host, port = split_address(address)
        except ValueError as exc:
            # Addresses come from peers (Admitted, announces): untrusted input.
            raise ConnectionError(f"unusable address {address!r}") from exc
        ready: asyncio.Future[PeerLink] = asyncio.get_running_loop().create_future()
        holder = asyncio.ensure_future(self._hold_connection(host, port, address, ready))
        self._tasks.add(holder)
        holder.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(ready)
        except asyncio.CancelledError:
            if not ready.done():  # a losing attempt of a dial race: stop connecting
                holder.cancel()
            raise

    async def dial_any(self, addresses: Sequence[str]) -> PeerLink:
        """The first of `addresses` to admit us (tried staggered, in order); raises ConnectionError."""
        candidates = [a for a in dict.fromkeys(addresses) if a not in self.credentials.addresses]
        return await first_success(
            [lambda address=address: self.dial(address) for address in candidates],  # type: ignore[misc]
            expected=(ConnectionError, AdmissionRefused, OSError, TimeoutError),
        )

    async def _hold_connection(
        self, host: str, port: int, address: str, ready: asyncio.Future[PeerLink]
    ) -> None:
        configuration = quic_configuration(self.credentials.identity, is_client=True)
        try:
            async with asyncio.timeout(DIAL_TIMEOUT_S):
                connection = quic_connect(host, port, configuration, self._protocol_factory, self._dial_from)
                protocol = await connection.__aenter__()
        except (TimeoutError, OSError, ConnectionError) as exc:
            if not ready.done():
                ready.set_exception(ConnectionError(f"cannot reach {address}: {exc or 'timeout'}"))
            return
        try:
            reader, writer = await protocol.create_stream()
            writer.write(stream_open_frame(wire_pb2.STREAM_KIND_CONTROL, self.node_id))
            control = ControlReader(reader)
            peer, admitted = await admit_as_dialer(
                self.credentials, control, writer, peer_certificate_key(protocol)
            )
            link = PeerLink(
                peer,
                self.node_id,
                control,
                writer,
                protocol.create_stream,
                dialed_by=self.node_id,
                address=address,
            )
            self._add_link(link, protocol)  # type: ignore[arg-type]  # built by _protocol_factory
            ready.set_result(link)
            if admitted.observed_address:
                with contextlib.suppress(ValueError):
                    self._on_observed(split_address(admitted.observed_address)[0])
            self._learn_peers(admitted.peers, via=link)
            await link.closed.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            if not isinstance(exc, AdmissionRefused | ConnectionError):
                raise
        finally:
            protocol.close()
            with contextlib.suppress(Exception):
                await connection.__aexit__(None, None, None)

    async def dial_relayed(self, peer_id: str, via: PeerLink) -> PeerLink:
        reader, writer = await via.open_raw()
        writer.write(
            stream_open_frame(wire_pb2.STREAM_KIND_RELAY, self.node_id, peer_id, wire_pb2.STREAM_KIND_CONTROL)
        )
        control = ControlReader(reader)
        try:
            peer, _ = await admit_as_dialer(self.credentials, control, writer, None)
        except BaseException:  # refused, or a losing attempt of a relay race: free the relay's stream
            writer.close()
            raise
        link = PeerLink(peer, self.node_id, control, writer, None, via=via, dialed_by=self.node_id)
        self._add_link(link, None)
        return link

    async def connect_peer(
        self, node_id: str, addresses: Sequence[str], relays: Sequence[PeerLink], direct_only: bool = False
    ) -> bool:
        """Direct if any address answers, else through one of `relays` (peers that may reach it).
        True when a link to `node_id` exists afterwards (direct, when `direct_only`)."""
        if node_id == self.node_id or node_id in self._dialing:
            return False
        current = self.links.get(node_id)
        if current is not None and (not current.is_relayed or not direct_only):
            return True
        self._dialing.add(node_id)
        try:
            with contextlib.suppress(ConnectionError, AdmissionRefused, OSError):
                link = await self.dial_any(addresses)
                if link.node_id == node_id:
                    return True
            if direct_only or node_id in self.links:
                return node_id in self.links and not (direct_only and self.links[node_id].is_relayed)
            return await self._reach_through_relays(node_id, relays)
        finally:
            self._dialing.discard(node_id)

    async def _reach_through_relays(self, node_id: str, relays: Sequence[PeerLink]) -> bool:
        usable = [r for r in relays if not r.is_relayed and not r.closed.is_set() and r.node_id != node_id]
        if not usable:
            return False
        try:
            async with asyncio.timeout(RECOVERY_TIMEOUT_S):
                link = await first_success(
                    [lambda via=via: self.dial_relayed(node_id, via) for via in usable],  # type: ignore[misc]
                    expected=(ConnectionError, AdmissionRefused, OSError, TimeoutError),
                )
        except (ConnectionError, TimeoutError):
            return False
        if self.links.get(node_id) is not link:
            return node_id in self.links  # the peer kept another link (a tie-break), or it closed
        logger.info("peer reached through relay", extra={"peer": node_id[:8], "via": link.via.node_id[:8]})  # type: ignore[union-attr]
        return True

    def direct_links(self) -> list[PeerLink]:
        return [link for link in self.links.values() if not link.is_relayed and not link.closed.is_set()]

    def _learn_peers(self, peers: list[wire_pb2.PeerAddress], via: PeerLink) -> None:
        for peer in peers:
            if peer.node_id != self.node_id and peer.node_id not in self.links:
                self._spawn(self._join_peer(peer.node_id, list(peer.addresses), via))

    async def _join_peer(self, node_id: str, addresses: list[str], via: PeerLink) -> None:
        if self.on_learned is not None:
            self.on_learned(node_id, addresses)
        await self.connect_peer(node_id, addresses, [via])

    # ---- the link registry

    def is_banned(self, node_id: str) -> bool:
        until = self._banned_until.get(node_id)
        if until is None:
            return False
        if time.monotonic() >= until:
            del self._banned_until[node_id]
            return False
        return True

    def _add_link(self, link: PeerLink, protocol: MeshQuicProtocol | None) -> None:
        if self.is_banned(link.node_id):
            link.start(LinkEvents(self._on_frame, self._on_link_closed), protocol.close if protocol else None)
            link.close("dropped a while ago for breaking the protocol")
            return
        existing = self.links.get(link.node_id)
        if existing is not None and not existing.closed.is_set():
            if self._keep_existing(existing, link):
                link.start(
                    LinkEvents(self._on_frame, self._on_link_closed), protocol.close if protocol else None
                )
                link.close("duplicate connection")
                return
        # Registered before the old one closes: a replaced link is not a lost peer.
        self.links[link.node_id] = link
        added = self._link_added.pop(link.node_id, None)
        if added is not None:
            added.set()
        if existing is not None:
            existing.close("replaced by a better connection")
        if protocol is not None:
            self._link_of[protocol] = link
        link.start(LinkEvents(self._on_frame, self._on_link_closed), protocol.close if protocol else None)
        logger.info(
            "peer joined",
            extra={
                "peer": link.node_id[:8],
                "peer_name": link.peer.name,
                "path": "relayed" if link.is_relayed else "direct",
            },
        )
        self._announce(link)
        self._on_peers_changed()

    def _keep_existing(self, existing: PeerLink, new: PeerLink) -> bool:
        """Both ends must pick the same connection: direct beats relayed, then the lower dialer id."""
        if existing.is_relayed != new.is_relayed:
            if not existing.is_relayed and time.monotonic() - existing.last_heard > STALE_DIRECT_LINK_S:
                # The peer came through a relay while our direct link to it has gone quiet: it saw
                # that link die first (its silence deadline passed before ours). Take the relay.
                return False
            return not existing.is_relayed
        return existing.dialed_by <= new.dialed_by

    def _announce(self, link: PeerLink) -> None:
        if link.is_relayed:
            return
        announce = wire_pb2.WireFrame(
            peer_announce=wire_pb2.PeerAddress(node_id=link.node_id, addresses=list(link.peer.addresses))
        )
        for other in self.links.values():
            if other is not link and not other.is_relayed:
                other.send(announce)

    def admitted_frame(self, observed_address: str = "") -> wire_pb2.Admitted:
        return wire_pb2.Admitted(
            observed_address=observed_address,
            peers=[
                wire_pb2.PeerAddress(node_id=link.node_id, addresses=list(link.peer.addresses))
                for link in self.links.values()
                if not link.is_relayed and not link.closed.is_set()
            ],
        )

    def _on_link_closed(self, link: PeerLink, reason: str) -> None:
        for protocol, known in list(self._link_of.items()):
            if known is link:
                del self._link_of[protocol]
        if self.links.get(link.node_id) is not link:
            return
        del self.links[link.node_id]
        for relayed in [other for other in self.links.values() if other.via is link]:
            relayed.close(f"relay {link.node_id[:8]} gone")
        # Left, or dropped for breaking the protocol (DESIGN §3): gone, nothing to recover.
        if link.broke_protocol:
            self._banned_until[link.node_id] = time.monotonic() + BROKE_PROTOCOL_COOLDOWN_S
            if self.on_broke_protocol is not None:
                self.on_broke_protocol(link.node_id)
        if self.closing or link.said_goodbye or link.broke_protocol:
            self._report_gone(link, reason)
            return
        # Lost, not left: the node may well be alive on the other side of a broken path.
        logger.info("lost the link; trying relays", extra={"peer": link.node_id[:8], "reason": reason})
        already = link.node_id in self.recovering
        self.recovering[link.node_id] = link
        if not already:  # one recovery per peer at a time; a later loss joins the running one
            self._spawn(self._recover(link.node_id, reason))

    async def _recover(self, node_id: str, reason: str) -> None:
        try:
            if self.node_id > node_id:
                # Both ends lose the link together; if both dialed a relay, the tie-break would
                # close one of the two new links and the peer would blink out. The lower id dials.
                await self._wait_for_link(node_id, RECOVERY_HEAD_START_S)
            if node_id not in self.links:
                relays = [r for r in self.direct_links() if r.node_id != node_id]
                await self._reach_through_relays(node_id, relays)
        finally:
            lost = self.recovering.pop(node_id, None)
        if node_id not in self.links and lost is not None:
            self._report_gone(lost, reason)

    async def current_link(self, node_id: str) -> PeerLink | None:
        """The link to `node_id`; while a lost one is being replaced through a relay, the new one
        (a tunnel opened in that second waits for it rather than failing)."""
        if node_id not in self.links and node_id in self.recovering:
            await self._wait_for_link(node_id, RECOVERY_HEAD_START_S + RECOVERY_TIMEOUT_S)
        return self.links.get(node_id)

    async def _wait_for_link(self, node_id: str, timeout_s: float) -> None:
        if node_id in self.links:
            return
        added = self._link_added.setdefault(node_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(added.wait(), timeout_s)

    def _report_gone(self, link: PeerLink, reason: str) -> None:
        logger.info("peer gone", extra={"peer": link.node_id[:8], "reason": reason})
        self._on_peers_changed()

    def _on_connection_lost(self, protocol: MeshQuicProtocol) -> None:
        link = self._link_of.get(protocol)
        if link is not None:
            link.close("connection lost")

    def learn_from_announce(self, link: PeerLink, announce: wire_pb2.PeerAddress) -> None:
        self._learn_peers([announce], via=link)
