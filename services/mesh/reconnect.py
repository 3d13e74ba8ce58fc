"""Keeping this node linked: join through bootstrap addresses while alone, redial lost peers while they
may live (the RedialSchedule decides when), and remember peers' addresses across restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path

from services.mesh.admission import AdmissionRefused
from services.mesh.dial_race import AllAttemptsFailed
from services.mesh.endpoint import MeshEndpoint
from services.mesh.redial import RedialAttempt, RedialSchedule
from services.node.home_files import HomeWriteError, write_home_file
from services.proto.meshllm.gossip.v1 import gossip_pb2

logger = logging.getLogger("mesh")

BOOTSTRAP_RETRY_S = 2.0
REDIAL_TICK_S = 0.25
MAX_REMEMBERED_ADDRESSES = 32


class PeerKeeper:
    """The endpoint's dialing policy. Fed by the endpoint (links, learned peers) and gossip (the view)."""

    def __init__(self, endpoint: MeshEndpoint, bootstrap: Sequence[str], known_peers_file: Path) -> None:
        self._endpoint = endpoint
        self._bootstrap = list(bootstrap)
        self._known_peers_file = known_peers_file
        self.schedule = RedialSchedule(endpoint.node_id, random.Random())
        self._tasks: set[asyncio.Task[None]] = set()
        endpoint.on_learned = self.schedule.learn
        endpoint.on_broke_protocol = lambda node_id: self.schedule.broke_protocol(node_id, time.monotonic())

    def links_changed(self) -> None:
        for link in self._endpoint.links.values():
            self.schedule.learn(link.node_id, link.peer.addresses)
        self.schedule.set_links(self._link_paths(), time.monotonic())
        addresses = [a for link in self._endpoint.direct_links() for a in link.peer.addresses]
        try:
            text = json.dumps(addresses[:MAX_REMEMBERED_ADDRESSES])
            write_home_file(self._known_peers_file, text.encode(), durable=False)
        except HomeWriteError as exc:  # a hint for the next start: without it, the join tokens remain
            logger.warning("known peers not saved: %s", exc)

    async def on_view(self, view: gossip_pb2.MeshView) -> None:
        """Who is alive in the mesh as gossip tells it: the peers worth redialing when unlinked."""
        self.schedule.set_view({r.node_id: list(r.addresses) for r in view.nodes if not r.leaving})

    async def keep_redialing(self) -> None:
        """Lost links come back: redial peers that may be alive, directly and through relays."""
        while True:
            for attempt in self.schedule.due(time.monotonic()):
                task = asyncio.ensure_future(self._redial(attempt))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(REDIAL_TICK_S)

    async def _redial(self, attempt: RedialAttempt) -> None:
        linked = False
        try:
            relays = [] if attempt.direct_only else self._endpoint.direct_links()
            linked = await self._endpoint.connect_peer(
                attempt.node_id, attempt.addresses, relays, direct_only=attempt.direct_only
            )
        finally:
            self.schedule.set_links(self._link_paths(), time.monotonic())
            self.schedule.finished(attempt.node_id, linked, time.monotonic())

    def _link_paths(self) -> dict[str, bool]:
        paths = {node_id: link.is_relayed for node_id, link in self._endpoint.links.items()}
        for node_id, link in self._endpoint.recovering.items():
            paths.setdefault(node_id, link.is_relayed)
        return paths

    async def keep_joined(self) -> None:
        """While alone, keep dialing bootstrap addresses and peers we knew (after a restart)."""
        logged: set[str] = set()  # each (address, problem) once while it lasts, not every retry
        while True:
            if not self._endpoint.links and not self._endpoint.recovering:
                own = self._endpoint.credentials.addresses
                addresses = [*self._bootstrap, *self._remembered_addresses()]
                candidates = [a for a in dict.fromkeys(addresses) if a not in own]
                try:
                    # All at once: a token lists addresses that do not answer from everywhere.
                    await self._endpoint.dial_any(candidates)
                    logged.clear()
                except AllAttemptsFailed as failed:
                    for address, exc in zip(candidates, failed.errors, strict=False):
                        problem = f"{address} {type(exc).__name__}: {exc}"
                        if problem not in logged:
                            logged.add(problem)
                            # A wrong token must be visible to the user, once, not retried silently.
                            level = logging.WARNING if isinstance(exc, AdmissionRefused) else logging.INFO
                            logger.log(level, "cannot join via %s: %s", address, exc)
            await asyncio.sleep(BOOTSTRAP_RETRY_S)

    def _remembered_addresses(self) -> list[str]:
        with contextlib.suppress(OSError, ValueError):
            return list(json.loads(self._known_peers_file.read_text()))
        return []

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
