"""Listings on Nostr relays (nostr-sdk): publish as a replaceable event with an expiry, and fetch.

A listing is an addressable event (NIP-01 kind 30000-39999; 30078 is NIP-78 "application data")
with `d` = "mesh-llm/<mesh id>", so each refresh replaces the previous one on the relay, a `t` tag
"mesh-llm" to find them all, and a NIP-40 `expiration` tag: a mesh whose publisher vanished drops
out by itself. Events are signed with the node's publishing key (<home>/nostr.key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import nostr_sdk

from services.discovery.listing import InvalidListing, Sighting, read_sighting

logger = logging.getLogger("discovery")

LISTING_KIND = 30078
LISTING_TOPIC = "mesh-llm"
D_TAG_PREFIX = "mesh-llm/"
DEFAULT_RELAYS = ("wss://relay.damus.io", "wss://nos.lol", "wss://relay.nostr.band")
CONNECT_TIMEOUT_S = 3.0
FETCH_TIMEOUT_S = 4.0
SEND_TIMEOUT_S = 5.0
MAX_EVENTS_FETCHED = 500


class RelayUrlError(ValueError):
    """A --relay value that is not a ws:// or wss:// URL."""


def check_relay_url(url: str) -> str:
    if not url.startswith(("ws://", "wss://")):
        raise RelayUrlError(f"{url!r} is not a relay URL (ws://… or wss://…)")
    try:
        nostr_sdk.RelayUrl.parse(url)
    except nostr_sdk.NostrSdkError as exc:
        raise RelayUrlError(f"{url!r} is not a relay URL: {exc}") from exc
    return url


def load_or_create_keys(path: Path) -> nostr_sdk.Keys:
    """The node's publishing key pair, kept next to identity.key (not the mesh identity: a listing
    author proves nothing about a node, and a leaked listing key must not be a node key)."""
    if path.exists():
        return nostr_sdk.Keys(nostr_sdk.SecretKey.parse(path.read_text().strip()))
    keys = nostr_sdk.Keys.generate()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(keys.secret_key().to_hex())
    tmp.replace(path)
    return keys


async def _connected_client(relays: tuple[str, ...]) -> nostr_sdk.Client:
    client = nostr_sdk.Client()
    for url in relays:
        await client.add_relay(nostr_sdk.RelayUrl.parse(url))
    await client.connect(timedelta(seconds=CONNECT_TIMEOUT_S))
    return client


@dataclass
class NostrPublisher:
    """Keeps one connection to the relays and (re)publishes or delists one mesh's listing."""

    keys: nostr_sdk.Keys
    relays: tuple[str, ...]
    _client: nostr_sdk.Client | None = None

    async def _ensure_client(self) -> nostr_sdk.Client:
        if self._client is None:
            self._client = await _connected_client(self.relays)
        return self._client

    async def publish(self, mesh_id: str, content: str, published_unix_s: int, expires_unix_s: int) -> int:
        """Send the event to every relay; returns how many accepted it."""
        builder = (
            nostr_sdk.EventBuilder(nostr_sdk.Kind(LISTING_KIND), content)
            .tags(
                [
                    nostr_sdk.Tag.identifier(D_TAG_PREFIX + mesh_id),
                    nostr_sdk.Tag.hashtag(LISTING_TOPIC),
                    nostr_sdk.Tag.expiration(nostr_sdk.Timestamp.from_secs(expires_unix_s)),
                ]
            )
            .custom_created_at(nostr_sdk.Timestamp.from_secs(published_unix_s))
        )
        event = self.keys.sign_event(builder.finalize_unsigned(self.keys.public_key()))
        client = await self._ensure_client()
        output = await client.send_event(event, ok_timeout=timedelta(seconds=SEND_TIMEOUT_S))
        if output.failed:
            logger.warning("relays refused the listing", extra={"failed": str(output.failed)})
        return len(output.success)

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(nostr_sdk.NostrSdkError):
                await self._client.shutdown()
            self._client = None


def _tag_value(event: nostr_sdk.Event, name: str) -> str | None:
    for tag in event.tags():
        values = tag.to_vec()
        if len(values) >= 2 and values[0] == name:
            return values[1]
    return None


def sighting_from_event(event: nostr_sdk.Event, now: float) -> Sighting:
    d_tag = _tag_value(event, "d") or ""
    if not d_tag.startswith(D_TAG_PREFIX):
        raise InvalidListing("event is not a mesh-llm listing")
    expiration = _tag_value(event, "expiration")
    try:
        expires = float(expiration) if expiration is not None else None
    except ValueError as exc:
        raise InvalidListing("expiration tag is not a number") from exc
    return read_sighting(
        event.content(),
        source="nostr",
        published_unix_s=float(event.created_at().as_secs()),
        expires_unix_s=expires,
        now=now,
        mesh_tag=d_tag[len(D_TAG_PREFIX) :],
        publisher_key=event.author().to_hex(),
    )


async def _any_connected(client: nostr_sdk.Client) -> bool:
    relays = await client.relays()
    return any(relay.status() == nostr_sdk.RelayStatus.CONNECTED for relay in relays.values())


async def fetch_sightings(
    relays: tuple[str, ...], now: float, timeout_s: float = FETCH_TIMEOUT_S
) -> list[Sighting]:
    """Every valid listing the relays hold; invalid ones are logged and skipped, unreachable relays too."""
    if not relays:
        return []
    client = await _connected_client(relays)
    try:
        if not await _any_connected(client):
            # Said, not swallowed: "no meshes found" must not hide "no relay reachable".
            logger.warning("no Nostr relay could be reached: %s", ", ".join(relays))
            return []
        query = nostr_sdk.Filter().kind(nostr_sdk.Kind(LISTING_KIND)).hashtag(LISTING_TOPIC)
        query = query.limit(MAX_EVENTS_FETCHED)
        events = await client.fetch_events(nostr_sdk.ReqTarget.auto([query]), timedelta(seconds=timeout_s))
    except nostr_sdk.NostrSdkError as exc:  # e.g. no relay reachable
        logger.info("no listings from relays", extra={"error": str(exc)})
        return []
    finally:
        with contextlib.suppress(nostr_sdk.NostrSdkError, TimeoutError):
            await asyncio.wait_for(client.shutdown(), CONNECT_TIMEOUT_S)
    sightings = []
    for event in events[:MAX_EVENTS_FETCHED]:
        if not event.verify():
            continue
        try:
            sightings.append(sighting_from_event(event, now))
        except InvalidListing as exc:
            logger.debug("ignored a listing", extra={"reason": str(exc)})
    return sightings
