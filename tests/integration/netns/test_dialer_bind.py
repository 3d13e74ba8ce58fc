"""A mesh pinned to one address (--bind-ip) dials from it too: a machine with two addresses on its
LAN, pinned to the second, reaches its peer from the second, not from whatever source address the
kernel would pick (the first: aioquic's own dialer binds `::`).

The peer's namespace counts, in nftables, the packets that reach its mesh port from each of the two
addresses: what arrives there from the pinned node is the pinned node's dialing (its listener only
ever answers the peer's own dialer, on another port).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.mesh.addresses import split_address
from tests.support.netns import Host, Testbed
from tests.support.netns_mesh import PEER_TIMEOUT_S, identity_of, launch, node_id, peers_of
from tests.support.node import RunningNode, wait_until

pytestmark = pytest.mark.integration

COUNT_TABLE = "dial_sources"


def count_packets_from(host: Host, sources: list[str], port: int) -> None:
    """An nftables counter in `host` per source address, of the UDP packets that reach `port`."""
    rules = "".join(
        f'add rule ip {COUNT_TABLE} input ip saddr {source} udp dport {port} counter comment "{source}"\n'
        for source in sources
    )
    host.run(
        ["nft", "-f", "-"],
        input=f"add table ip {COUNT_TABLE}\n"
        f"add chain ip {COUNT_TABLE} input {{ type filter hook input priority 0; }}\n{rules}",
    )


def packets_from(host: Host) -> dict[str, int]:
    """By source address: the packets count_packets_from counted."""
    listing = json.loads(host.run(["nft", "-j", "list", "table", "ip", COUNT_TABLE]).stdout)
    rules = [item["rule"] for item in listing["nftables"] if "rule" in item]
    return {
        rule["comment"]: next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
        for rule in rules
    }


def test_a_pinned_mesh_dials_from_its_pinned_address(
    testbed: Testbed, nodes: list[RunningNode], tmp_path: Path
) -> None:
    lan = testbed.lan("lan")
    pinned_host, peer_host = testbed.host("pinned"), testbed.host("peer")
    primary = pinned_host.attach(lan, "10.77.51.2/24")
    pinned_ip = "10.77.51.12"
    # A second address on the same interface: the kernel's source for the LAN is still the first.
    pinned_host.run(["ip", "addr", "add", f"{pinned_ip}/24", "dev", "eth0"])
    peer_host.attach(lan, "10.77.51.3/24")

    peer = launch(nodes, peer_host, tmp_path, "peer", ["--client"])
    peer_port = int((peer.home / "run" / "mesh-port").read_text())
    count_packets_from(peer_host, [primary, pinned_ip], peer_port)
    pinned = launch(
        nodes, pinned_host, tmp_path, "pinned", ["--client", "--join", peer.invite(), "--bind-ip", pinned_ip]
    )
    assert {split_address(a)[0] for a in identity_of(pinned).addresses} == {pinned_ip}
    pinned_id = node_id(pinned)
    wait_until(lambda: pinned_id in peers_of(peer), PEER_TIMEOUT_S, "the peer to admit the pinned node")

    counts = packets_from(peer_host)
    assert counts[pinned_ip] > 0 and counts[primary] == 0, counts
