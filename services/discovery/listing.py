"""A mesh listing: what a public mesh tells the world about itself, and how we read one (sans-IO).

Listings arrive from Nostr relays and from mDNS on the LAN: anyone can publish anything there, so
every field of a listing is untrusted input. `read_sighting` accepts a listing only if it is small,
well-formed, unexpired, internally consistent (the invite token's mesh id is the listing's) and made
of printable text (it is shown in a terminal table); everything else raises `InvalidListing`, and
callers skip it. Nothing here does IO, so the unit tests drive it with arbitrary bytes.

Content is compact JSON (schema `v` 1). A delisted mesh (`--max-clients` reached, or the node
stopping) replaces its listing with a stub that carries no invite token; it reads as invalid.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from services.mesh.invite import InvalidToken, InviteToken

LISTING_SCHEMA = 1
MAX_CONTENT_BYTES = 4096
MAX_NAME_CHARS = 64
MAX_REGION_CHARS = 32
MAX_MODELS = 32
MAX_MODEL_NAME_CHARS = 128
MAX_VERSION_CHARS = 32
MAX_TOKEN_CHARS = 1024
MAX_NODE_COUNT = 100_000
MAX_VRAM_BYTES = 1 << 60
# A listing claiming to be published further in the future than this is a broken (or lying) clock.
MAX_CLOCK_SKEW_S = 300.0
# Publishers refresh about every minute; nothing legitimately asks to live longer than this.
MAX_TTL_S = 3600.0
NODE_ID_PATTERN = re.compile(r"^[0-9a-f]{8,128}$")
MESH_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
SOURCES = ("nostr", "lan")


class InvalidListing(ValueError):
    """Bytes from the network that are not a listing we may show or join."""


@dataclass(frozen=True)
class MeshListing:
    mesh_id: str  # hex, equal to the invite token's
    name: str
    region: str
    token: str
    models_served: tuple[str, ...] = ()
    models_wanted: tuple[str, ...] = ()
    vram_bytes: int = 0
    node_count: int = 1
    client_count: int = 0
    max_clients: int = 0  # 0: no limit
    software_version: str = ""
    publisher_node_id: str = ""

    @property
    def full(self) -> bool:
        return self.max_clients > 0 and self.client_count >= self.max_clients

    def content(self) -> str:
        body = {
            "v": LISTING_SCHEMA,
            "mesh_id": self.mesh_id,
            "name": self.name,
            "region": self.region,
            "token": self.token,
            "served": list(self.models_served),
            "wanted": list(self.models_wanted),
            "vram": self.vram_bytes,
            "nodes": self.node_count,
            "clients": self.client_count,
            "max_clients": self.max_clients,
            "sw": self.software_version,
            "publisher": self.publisher_node_id,
        }
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode()) > MAX_CONTENT_BYTES:
            raise ValueError(f"listing is over {MAX_CONTENT_BYTES} bytes; serve fewer models")
        return text


@dataclass(frozen=True)
class Sighting:
    """A valid listing, where it was seen and when it was published."""

    listing: MeshListing
    source: str  # "nostr" or "lan"
    published_unix_s: float
    expires_unix_s: float
    publisher_key: str = ""  # the Nostr author (hex) or the mDNS instance name
    relays: tuple[str, ...] = field(default=())

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.published_unix_s)


def delisted_content(mesh_id: str) -> str:
    """What replaces a listing while the mesh is full or gone: no token, so nobody can join from it."""
    return json.dumps({"v": LISTING_SCHEMA, "mesh_id": mesh_id, "delisted": True}, separators=(",", ":"))


def check_text(value: object, what: str, max_chars: int, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise InvalidListing(f"{what} is not text")
    if len(value) > max_chars:
        raise InvalidListing(f"{what} is over {max_chars} characters")
    if not allow_empty and not value:
        raise InvalidListing(f"{what} is empty")
    # Control characters (escape sequences) would reach the user's terminal through `discover`.
    if not value.isprintable():
        raise InvalidListing(f"{what} has control characters")
    return value


def _count(value: object, what: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise InvalidListing(f"{what} is not a count in 0..{maximum}")
    return value


def _models(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_MODELS:
        raise InvalidListing(f"{what} is not a list of at most {MAX_MODELS} models")
    return tuple(dict.fromkeys(check_text(m, what, MAX_MODEL_NAME_CHARS, allow_empty=False) for m in value))


def parse_listing(content: str | bytes) -> MeshListing:
    raw = content.encode() if isinstance(content, str) else content
    if len(raw) > MAX_CONTENT_BYTES:
        raise InvalidListing(f"listing is over {MAX_CONTENT_BYTES} bytes")
    try:
        body: Any = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidListing("listing is not JSON") from exc
    if not isinstance(body, dict):
        raise InvalidListing("listing is not a JSON object")
    if body.get("v") != LISTING_SCHEMA:
        raise InvalidListing("unknown listing schema")
    if body.get("delisted") is True:
        raise InvalidListing("mesh is delisted")
    mesh_id = body.get("mesh_id")
    if not isinstance(mesh_id, str) or not MESH_ID_PATTERN.match(mesh_id):
        raise InvalidListing("mesh id is not 32 hex characters")
    token = check_text(body.get("token"), "token", MAX_TOKEN_CHARS, allow_empty=False)
    try:
        invite = InviteToken.decode(token)
    except InvalidToken as exc:
        raise InvalidListing(f"invite token: {exc}") from exc
    if invite.mesh_id_hex != mesh_id:
        raise InvalidListing("invite token is for another mesh")
    if not invite.addresses:
        raise InvalidListing("invite token has no address to dial")
    publisher = body.get("publisher", "")
    if publisher and (not isinstance(publisher, str) or not NODE_ID_PATTERN.match(publisher)):
        raise InvalidListing("publisher is not a node id")
    return MeshListing(
        mesh_id=mesh_id,
        name=check_text(body.get("name", ""), "name", MAX_NAME_CHARS),
        region=check_text(body.get("region", ""), "region", MAX_REGION_CHARS),
        token=token,
        models_served=_models(body.get("served", []), "served models"),
        models_wanted=_models(body.get("wanted", []), "wanted models"),
        vram_bytes=_count(body.get("vram", 0), "vram", MAX_VRAM_BYTES),
        node_count=_count(body.get("nodes", 1), "node count", MAX_NODE_COUNT),
        client_count=_count(body.get("clients", 0), "client count", MAX_NODE_COUNT),
        max_clients=_count(body.get("max_clients", 0), "max clients", MAX_NODE_COUNT),
        software_version=check_text(body.get("sw", ""), "software version", MAX_VERSION_CHARS),
        publisher_node_id=str(publisher),
    )


def read_sighting(
    content: str | bytes,
    *,
    source: str,
    published_unix_s: float,
    expires_unix_s: float | None,
    now: float,
    mesh_tag: str | None = None,
    publisher_key: str = "",
) -> Sighting:
    """Accept a listing seen on the network, or raise InvalidListing saying why it is ignored.

    `mesh_tag` is the mesh id the envelope claims (the Nostr `d` tag): it must agree with the content.
    A listing without an expiry is refused: a publisher that vanished would be listed forever.
    """
    if source not in SOURCES:
        raise InvalidListing(f"unknown source {source!r}")
    for stamp in (published_unix_s, expires_unix_s):
        if stamp is None or not math.isfinite(stamp):
            raise InvalidListing("listing has no valid publish time and expiry")
    assert expires_unix_s is not None
    if expires_unix_s <= now:
        raise InvalidListing("listing has expired")
    if published_unix_s > now + MAX_CLOCK_SKEW_S:
        raise InvalidListing("listing is published in the future")
    if expires_unix_s - max(published_unix_s, now - MAX_TTL_S) > MAX_TTL_S + MAX_CLOCK_SKEW_S:
        raise InvalidListing("listing asks to live too long")
    listing = parse_listing(content)
    if mesh_tag is not None and mesh_tag != listing.mesh_id:
        raise InvalidListing("envelope and content name different meshes")
    return Sighting(listing, source, published_unix_s, expires_unix_s, publisher_key)


def newest_per_mesh(sightings: list[Sighting]) -> list[Sighting]:
    """One sighting per mesh: a LAN one if there is any (reachable without the internet), else the newest."""
    best: dict[str, Sighting] = {}
    for sighting in sightings:
        current = best.get(sighting.listing.mesh_id)
        if current is None or _rank(sighting) > _rank(current):
            best[sighting.listing.mesh_id] = sighting
    return sorted(best.values(), key=lambda s: (s.listing.name, s.listing.mesh_id))


def _rank(sighting: Sighting) -> tuple[bool, float]:
    return (sighting.source == "lan", sighting.published_unix_s)


# mDNS TXT strings hold at most 255 bytes each: the listing travels in numbered chunks.
TXT_CHUNK_BYTES = 240
MAX_TXT_CHUNKS = MAX_CONTENT_BYTES // TXT_CHUNK_BYTES + 1


def txt_properties(content: str, published_unix_s: float, expires_unix_s: float) -> dict[str, bytes]:
    raw = content.encode()
    chunks = [raw[i : i + TXT_CHUNK_BYTES] for i in range(0, len(raw), TXT_CHUNK_BYTES)]
    props = {f"j{i}": chunk for i, chunk in enumerate(chunks)}
    props["n"] = str(len(chunks)).encode()
    props["p"] = f"{published_unix_s:.0f}".encode()
    props["e"] = f"{expires_unix_s:.0f}".encode()
    return props


def content_from_txt(props: dict[bytes, bytes | None]) -> tuple[bytes, float, float]:
    """Reassemble (content, published, expires) from mDNS TXT properties; InvalidListing if broken."""
    try:
        count = int(props.get(b"n") or b"")
        published = float(props.get(b"p") or b"")
        expires = float(props.get(b"e") or b"")
    except ValueError as exc:
        raise InvalidListing("TXT record lacks chunk count or times") from exc
    if not 0 < count <= MAX_TXT_CHUNKS:
        raise InvalidListing("TXT record has a bad chunk count")
    parts = []
    for i in range(count):
        part = props.get(f"j{i}".encode())
        if part is None:
            raise InvalidListing("TXT record is missing a chunk")
        parts.append(part)
    return b"".join(parts), published, expires
