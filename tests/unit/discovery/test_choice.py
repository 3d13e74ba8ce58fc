"""--auto's choice: hard rules (name, full) first, then points; the explanation is one line."""

from __future__ import annotations

from services.discovery.choice import AutoWish, choose, excluded_because, nothing_found_explanation
from services.discovery.listing import MeshListing, Sighting
from services.mesh.invite import InviteToken

NOW = 1_800_000_000.0


def sighting(name: str = "", source: str = "nostr", age_s: float = 10, **changes: object) -> Sighting:
    invite = InviteToken.new_mesh(("127.0.0.1:4000",))
    fields: dict[str, object] = {
        "mesh_id": invite.mesh_id_hex,
        "name": name,
        "region": "",
        "token": invite.encode(),
        "models_served": ("tiny-x",),
        "node_count": 1,
        "vram_bytes": 4 << 30,
    }
    fields.update(changes)
    return Sighting(MeshListing(**fields), source, NOW - age_s, NOW + 100)  # type: ignore[arg-type]


def test_nothing_to_choose_from() -> None:
    assert choose([], AutoWish(), NOW) is None


def test_a_mesh_of_another_name_is_never_joined_however_good() -> None:
    other = sighting("other", source="lan", node_count=50, vram_bytes=1 << 40)
    wish = AutoWish(mesh_name="poker-night")
    assert choose([other], wish, NOW) is None
    mine = sighting("Poker-Night")
    choice = choose([other, mine], wish, NOW)
    assert choice is not None and choice.sighting is mine


def test_a_full_mesh_is_never_joined() -> None:
    full = sighting("a", client_count=2, max_clients=2)
    assert excluded_because(full, AutoWish()) == "full (2/2 clients)"
    assert choose([full], AutoWish(), NOW) is None


def test_a_client_needs_a_mesh_that_serves_something() -> None:
    empty = sighting("a", models_served=())
    assert choose([empty], AutoWish(client=True), NOW) is None
    assert choose([empty], AutoWish(), NOW) is not None


def test_lan_is_preferred_over_a_bigger_public_mesh() -> None:
    public = sighting("big", node_count=10, vram_bytes=1 << 40)
    lan = sighting("home", source="lan")
    choice = choose([public, lan], AutoWish(), NOW)
    assert choice is not None and choice.sighting is lan
    assert "on your LAN" in choice.explanation


def test_requested_models_then_region_then_capacity() -> None:
    serves = sighting("serves", models_served=("qwen",))
    bigger = sighting("bigger", models_served=("other",), vram_bytes=1 << 40, node_count=10)
    choice = choose([bigger, serves], AutoWish(models=("qwen",)), NOW)
    assert choice is not None and choice.sighting is serves
    au = sighting("au", region="AU")
    us = sighting("us", region="US-West", vram_bytes=8 << 30)
    choice = choose([us, au], AutoWish(region="au"), NOW)
    assert choice is not None and choice.sighting is au
    choice = choose([au, us], AutoWish(), NOW)
    assert choice is not None and choice.sighting is us


def test_stale_listings_lose_to_fresh_ones_and_last_mesh_wins_ties() -> None:
    stale = sighting("stale", age_s=600)
    fresh = sighting("fresh", age_s=5)
    choice = choose([stale, fresh], AutoWish(), NOW)
    assert choice is not None and choice.sighting is fresh
    last = AutoWish(last_mesh_id=stale.listing.mesh_id)
    choice = choose([stale, fresh], last, NOW)
    assert choice is not None and choice.sighting is stale
    assert "joined last time" in choice.explanation


def test_the_explanation_is_one_line_naming_the_mesh_and_why() -> None:
    a = sighting("poker-night", models_served=("tiny-x",), region="AU")
    b = sighting("other")
    choice = choose([a, b], AutoWish(models=("tiny-x",), region="AU"), NOW)
    assert choice is not None
    line = choice.explanation
    assert "\n" not in line
    assert '"poker-night"' in line and "serves tiny-x" in line and "region AU" in line
    assert "best of 2 meshes" in line


def test_nothing_found_says_where_it_looked() -> None:
    line = nothing_found_explanation([sighting("x")], AutoWish(mesh_name="poker-night"), "1 relay")
    assert line == '--auto: no joinable mesh named "poker-night" among 1 mesh on 1 relay'
