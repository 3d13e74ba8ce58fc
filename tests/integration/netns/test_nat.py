"""A node behind a masquerading NAT (issue 12). Topology: `nat` sits on a home LAN behind router `r`,
which masquerades it onto the `wan` where the public nodes live. Without a port forward it joins by
dialing out and serves through that link (and through relays for anyone it cannot be dialed by);
with `--bind-port` and a forward on the router, others dial it directly, at the public address the
mesh learned from its peers (no --advertise)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli.node_status import mesh_view
from services.mesh.invite import InviteToken
from tests.support.netns import Host, Testbed
from tests.support.netns_mesh import (
    identity_of,
    launch,
    model_copy,
    path_to,
    token_of,
    wait_answers,
    wait_path,
)
from tests.support.node import RunningNode, wait_until

pytestmark = pytest.mark.integration

ROUTER_PUBLIC_IP = "198.51.100.1"
FORWARDED_PORT = 40123


def network(testbed: Testbed) -> tuple[Host, Host, Host, Host]:
    """(router, host behind the NAT, public host, another public host)."""
    home, wan = testbed.lan("home"), testbed.lan("wan")
    router = testbed.router("r", home, "10.77.50.1/24", wan, f"{ROUTER_PUBLIC_IP}/24")
    inside = testbed.host("nat")
    inside.attach(home, "10.77.50.2/24")
    inside.add_default_route("10.77.50.1")
    public, other = testbed.host("pub"), testbed.host("pub2")
    public.attach(wan, "198.51.100.2/24")
    other.attach(wan, "198.51.100.3/24")
    return router, inside, public, other


def test_a_node_behind_nat_joins_and_serves_without_a_port_forward(
    testbed: Testbed, nodes: list[RunningNode], tmp_path: Path, tiny_gguf: Path
) -> None:
    _, inside, public, other = network(testbed)
    first = launch(
        nodes, public, tmp_path, "pub", ["--model", str(model_copy(tiny_gguf, tmp_path, "tiny-pub"))]
    )
    behind = launch(
        nodes,
        inside,
        tmp_path,
        "nat",
        ["--join", first.invite(), "--model", str(model_copy(tiny_gguf, tmp_path, "tiny-nat"))],
    )
    wait_path(first, behind, "direct")  # the link the NATed node dialed
    wait_answers(first, "tiny-nat")
    wait_answers(behind, "tiny-pub")

    # A second public node cannot dial the NATed one, yet reaches it (it dials out, or a relay).
    late = launch(nodes, other, tmp_path, "pub2", ["--join", first.invite()])
    wait_until(lambda: path_to(late, behind) != "", 20, "the late node to reach the NATed node")
    wait_answers(late, "tiny-nat")


def test_with_a_port_forward_peers_dial_the_natd_node_at_its_learned_public_address(
    testbed: Testbed, nodes: list[RunningNode], tmp_path: Path, tiny_gguf: Path
) -> None:
    router, inside, public, other = network(testbed)
    router.forward_port(FORWARDED_PORT, "10.77.50.2", FORWARDED_PORT, "udp")
    router.forward_port(FORWARDED_PORT, "10.77.50.2", FORWARDED_PORT, "tcp")
    first = launch(
        nodes, public, tmp_path, "pub", ["--model", str(model_copy(tiny_gguf, tmp_path, "tiny-pub"))]
    )
    behind = launch(
        nodes,
        inside,
        tmp_path,
        "nat",
        [
            "--join",
            first.invite(),
            "--bind-port",
            str(FORWARDED_PORT),
            "--model",
            str(model_copy(tiny_gguf, tmp_path, "tiny-nat")),
        ],
    )
    public_address = f"{ROUTER_PUBLIC_IP}:{FORWARDED_PORT}"
    # The public node saw its packets come from the router: the NATed node now advertises that.
    wait_until(lambda: public_address in identity_of(behind).addresses, 20, "the observed public address")
    assert public_address in token_of(behind).addresses
    # ...and gossips it, so a peer that loses the link redials where the node can be reached.
    behind_id = identity_of(behind).node_id

    def gossiped_addresses() -> list[str]:
        records = {r.node_id: r for r in mesh_view(first.node_home).nodes}
        return list(records[behind_id].addresses) if behind_id in records else []

    wait_until(lambda: public_address in gossiped_addresses(), 20, "the public address in gossip")

    # A token holding nothing but that address admits a newcomer: it dialed through the forward.
    mesh = token_of(behind)
    only_public = InviteToken(mesh.mesh_id, mesh.secret, (public_address,)).encode()
    late = launch(nodes, other, tmp_path, "pub2", ["--join", only_public])
    wait_path(late, behind, "direct")
    wait_answers(late, "tiny-nat")
