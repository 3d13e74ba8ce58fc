"""Listings from relays and mDNS are untrusted: only small, well-formed, unexpired ones are accepted."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.discovery.listing import (
    MAX_CONTENT_BYTES,
    MAX_MODELS,
    MAX_TTL_S,
    InvalidListing,
    MeshListing,
    content_from_txt,
    delisted_content,
    newest_per_mesh,
    read_sighting,
    txt_properties,
)
from services.mesh.invite import InviteToken

NOW = 1_800_000_000.0
INVITE = InviteToken.new_mesh(("127.0.0.1:4000",))


def listing(**changes: object) -> MeshListing:
    fields: dict[str, object] = {
        "mesh_id": INVITE.mesh_id_hex,
        "name": "poker-night",
        "region": "AU",
        "token": INVITE.encode(),
        "models_served": ("tiny-x",),
        "models_wanted": ("tiny-y",),
        "vram_bytes": 8 << 30,
        "node_count": 2,
        "client_count": 1,
        "max_clients": 4,
        "software_version": "0.1.0",
        "publisher_node_id": "ab" * 16,
    }
    fields.update(changes)
    return MeshListing(**fields)  # type: ignore[arg-type]


def read(content: str | bytes, published: float = NOW - 10, expires: float | None = NOW + 100, **kw: object):  # type: ignore[no-untyped-def]
    return read_sighting(
        content, source="nostr", published_unix_s=published, expires_unix_s=expires, now=NOW, **kw
    )  # type: ignore[arg-type]


def test_a_listing_round_trips() -> None:
    original = listing()
    sighting = read(original.content(), mesh_tag=original.mesh_id)
    assert sighting.listing == original
    assert sighting.age_s(NOW) == 10


@pytest.mark.parametrize(
    ("published", "expires", "reason"),
    [
        (NOW - 200, NOW - 1, "expired"),
        (NOW - 200, None, "no valid publish time"),
        (NOW + 3600, NOW + 3700, "future"),
        (NOW, NOW + 10 * MAX_TTL_S, "too long"),
        (float("nan"), NOW + 10, "no valid publish time"),
    ],
)
def test_times_that_are_refused(published: float, expires: float | None, reason: str) -> None:
    with pytest.raises(InvalidListing, match=reason):
        read(listing().content(), published=published, expires=expires)


def test_oversized_content_is_refused_before_parsing() -> None:
    padded = json.loads(listing().content())
    padded["name"] = "x" * MAX_CONTENT_BYTES
    with pytest.raises(InvalidListing, match="over"):
        read(json.dumps(padded))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"token": "mesh1-garbage"}, "invite token"),
        ({"token": InviteToken.new_mesh(("127.0.0.1:1",)).encode()}, "another mesh"),
        ({"token": InviteToken(INVITE.mesh_id, INVITE.secret, ()).encode()}, "no address"),
        ({"name": "evil\x1b[2J"}, "control characters"),
        ({"served": ["m"] * (MAX_MODELS + 1)}, "at most"),
        ({"nodes": -1}, "count"),
        ({"vram": True}, "count"),
        ({"v": 99}, "schema"),
        ({"mesh_id": "zz"}, "32 hex"),
        ({"publisher": "not hex!"}, "node id"),
    ],
)
def test_fields_that_are_refused(change: dict[str, object], reason: str) -> None:
    body = json.loads(listing().content())
    body.update(change)
    with pytest.raises(InvalidListing, match=reason):
        read(json.dumps(body))


def test_envelope_and_content_must_name_the_same_mesh() -> None:
    with pytest.raises(InvalidListing, match="different meshes"):
        read(listing().content(), mesh_tag="0" * 32)


def test_a_delisted_stub_is_not_a_listing_and_carries_no_token() -> None:
    stub = delisted_content(INVITE.mesh_id_hex)
    assert INVITE.encode() not in stub
    with pytest.raises(InvalidListing, match="delisted"):
        read(stub)


def test_full_means_clients_reached_the_limit() -> None:
    assert listing(client_count=4, max_clients=4).full
    assert not listing(client_count=3, max_clients=4).full
    assert not listing(client_count=100, max_clients=0).full


def test_lan_sightings_win_then_the_newest() -> None:
    old = read(listing().content(), published=NOW - 50)
    new = read(listing(node_count=3).content(), published=NOW - 5)
    [best] = newest_per_mesh([old, new])
    assert best.listing.node_count == 3
    lan = read_sighting(
        listing().content(), source="lan", published_unix_s=NOW - 90, expires_unix_s=NOW + 90, now=NOW
    )
    [best] = newest_per_mesh([old, lan, new])
    assert best.source == "lan"


def test_txt_chunks_round_trip_a_long_listing() -> None:
    content = listing(models_served=tuple(f"model-{i}-é" for i in range(20))).content()
    props = {k.encode(): v for k, v in txt_properties(content, NOW - 1, NOW + 60).items()}
    raw, published, expires = content_from_txt(props)
    assert raw.decode() == content and (published, expires) == (NOW - 1, NOW + 60)
    assert all(len(v) <= 255 for v in props.values())
    del props[b"j1"]
    with pytest.raises(InvalidListing, match="missing a chunk"):
        content_from_txt(props)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=MAX_CONTENT_BYTES + 100))
def test_arbitrary_bytes_never_crash_the_reader(data: bytes) -> None:
    try:
        read(data)
    except InvalidListing:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(list(json.loads(listing().content()))), json_values, max_size=13))
def test_mangled_fields_are_refused_or_yield_a_sane_listing(changes: dict[str, object]) -> None:
    body = json.loads(listing().content())
    body.update(changes)
    try:
        sighting = read(json.dumps(body))
    except InvalidListing:
        return
    accepted = sighting.listing
    assert InviteToken.decode(accepted.token).mesh_id_hex == accepted.mesh_id
    for text in (accepted.name, accepted.region, *accepted.models_served, *accepted.models_wanted):
        assert text.isprintable()
    assert len(accepted.models_served) <= MAX_MODELS
    assert accepted.node_count >= 0 and accepted.vram_bytes >= 0


@settings(max_examples=100, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True))
def test_only_live_listings_within_the_ttl_are_accepted(published: float, expires: float) -> None:
    try:
        read(listing().content(), published=published, expires=expires)
    except InvalidListing:
        return
    assert expires > NOW
    assert published <= NOW + 300
