"""What a node tells others to dial (services/mesh/addresses.py)."""

from __future__ import annotations

import pytest

from services.mesh.addresses import (
    ALL_INTERFACES,
    MAX_OWN_ADDRESSES,
    OwnAddresses,
    interface_hosts,
    is_loopback,
    join_address,
    only_loopback,
    own_addresses,
    split_address,
)


def test_every_interface_address_with_the_listening_port_and_no_loopback() -> None:
    got = own_addresses(ALL_INTERFACES, 4000, (), (), ["10.77.1.2", "192.168.5.9"])
    assert got == ("10.77.1.2:4000", "192.168.5.9:4000")


def test_loopback_only_when_nothing_else_exists() -> None:
    assert own_addresses(ALL_INTERFACES, 4000, (), (), []) == ("127.0.0.1:4000",)


def test_advertise_comes_first_then_observed_then_interfaces() -> None:
    got = own_addresses(ALL_INTERFACES, 4000, ("203.0.113.7:9000",), ["198.51.100.4"], ["10.0.0.2"])
    assert got == ("203.0.113.7:9000", "198.51.100.4:4000", "10.0.0.2:4000")


def test_an_observed_address_equal_to_an_interface_is_listed_once() -> None:
    got = own_addresses(ALL_INTERFACES, 4000, (), ["10.0.0.2"], ["10.0.0.2"])
    assert got == ("10.0.0.2:4000",)


def test_link_local_loopback_and_unspecified_hosts_are_never_advertised() -> None:
    got = own_addresses(ALL_INTERFACES, 4000, (), ["127.0.0.1", "0.0.0.0"], ["169.254.3.3", "10.1.1.1"])
    assert got == ("10.1.1.1:4000",)


def test_bind_ip_pins_the_address() -> None:
    assert own_addresses("10.5.5.5", 4000, (), ["198.51.100.4"], ["10.5.5.5", "10.6.6.6"]) == (
        "10.5.5.5:4000",
    )
    # Pinned to loopback: a same-machine mesh; --advertise (a link simulator) replaces it.
    assert own_addresses("127.0.0.1", 4000, (), (), ["10.6.6.6"]) == ("127.0.0.1:4000",)
    assert own_addresses("127.0.0.1", 4000, ("127.0.0.2:5000",), (), []) == ("127.0.0.2:5000",)


def test_the_list_stays_short_enough_for_a_token() -> None:
    hosts = [f"10.0.0.{i}" for i in range(1, 20)]
    assert len(own_addresses(ALL_INTERFACES, 1, (), (), hosts)) == MAX_OWN_ADDRESSES


def test_interfaces_are_read_from_the_machine_not_the_hostname() -> None:
    # /etc/hosts here maps the hostname to 127.0.0.1; the interfaces still give real addresses.
    for host in interface_hosts():
        assert not is_loopback(join_address(host, 1))


@pytest.mark.parametrize(
    ("address", "parts"),
    [("10.0.0.1:5", ("10.0.0.1", 5)), ("[fd00::2]:7", ("fd00::2", 7)), ("name.lan:9", ("name.lan", 9))],
)
def test_split_and_join_round_trip(address: str, parts: tuple[str, int]) -> None:
    assert split_address(address) == parts
    assert join_address(*parts) == address


@pytest.mark.parametrize("bad", ["nohost", ":5", "host:", "host:x"])
def test_split_refuses_what_is_not_host_port(bad: str) -> None:
    with pytest.raises(ValueError):
        split_address(bad)


def test_only_loopback() -> None:
    assert only_loopback(["127.0.0.1:1", "localhost:2", "[::1]:3"])
    assert not only_loopback(["127.0.0.1:1", "10.0.0.1:2"])


def test_own_addresses_follow_what_peers_observe_and_the_interfaces() -> None:
    own = OwnAddresses(ALL_INTERFACES, 4000, (), ["10.0.0.2"])
    assert own.current == ("10.0.0.2:4000",)
    assert own.observed("203.0.113.9")  # a NAT's public side, with our port
    assert own.current == ("203.0.113.9:4000", "10.0.0.2:4000")
    assert not own.observed("203.0.113.9") and not own.observed("10.0.0.2") and not own.observed("127.0.0.1")
    assert own.interfaces(["10.0.0.3"])  # DHCP gave us another address
    assert own.current == ("203.0.113.9:4000", "10.0.0.3:4000")
    assert not own.interfaces(["10.0.0.3"])
