"""Where the mesh endpoint binds and which addresses it tells others (DESIGN §3, README "Networking").

The mesh's QUIC socket binds every interface by default: that is how another machine joins, and
admission (TLS + proof of the mesh secret) guards it. `--bind-ip` pins it to one address. The API and
console are a separate matter (`--listen-all`, services/gateway).

What we tell peers (the invite token, Hello, gossip), best first:
1. `--advertise` entries (port forwarding, NAT, link simulators in tests);
2. addresses peers observed us at, with our listening port (the public side of a NAT that keeps
   the port: a forwarded port then works without `--advertise`);
3. every non-loopback interface address (read from the interfaces, never from the hostname, which
   /etc/hosts often maps to 127.0.0.1 or 127.0.1.1);
4. loopback, only when there is nothing else: a same-machine mesh.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

import ifaddr

ALL_INTERFACES = "0.0.0.0"
LOOPBACK = "127.0.0.1"
# The invite token must stay short enough to paste: it carries this many of our addresses at most.
MAX_OWN_ADDRESSES = 6


def split_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port); raises ValueError."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not HOST:PORT: {address!r}")
    return host.strip("[]"), int(port)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback(address: str) -> bool:
    return is_loopback_host(address.rpartition(":")[0])


def _dialable_host(host: str) -> bool:
    """An address another machine could use: not loopback, link-local, unspecified or multicast."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


def interface_hosts() -> list[str]:
    """IPv4 addresses of this machine's interfaces that others could dial (the mesh binds IPv4)."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if ip.is_IPv4 and isinstance(ip.ip, str) and _dialable_host(ip.ip) and ip.ip not in found:
                found.append(ip.ip)
    return found


def bind_host(bind_ip: str) -> str:
    return bind_ip or ALL_INTERFACES


def dial_host(bind_ip: str) -> str:
    """The address dialers bind to: the pinned one, or "" (the kernel's choice) for a wildcard."""
    return "" if bind_ip in ("", ALL_INTERFACES, "::") else bind_ip


def own_addresses(
    bind: str,
    port: int,
    advertised: Sequence[str],
    observed_hosts: Iterable[str],
    local_hosts: Sequence[str],
) -> tuple[str, ...]:
    """What to tell peers, best first (see the module doc). Pure: the caller reads the interfaces."""
    ordered: list[str] = list(advertised)
    if bind == ALL_INTERFACES:
        reachable_hosts = [*observed_hosts, *local_hosts]
    elif _dialable_host(bind):
        reachable_hosts = [bind]
    else:
        reachable_hosts = []
    for host in reachable_hosts:
        if _dialable_host(host):
            ordered.append(join_address(host, port))
    unique = list(dict.fromkeys(ordered))[:MAX_OWN_ADDRESSES]
    if not unique:
        unique = [join_address(LOOPBACK if bind == ALL_INTERFACES else bind, port)]
    return tuple(unique)


def only_loopback(addresses: Iterable[str]) -> bool:
    return all(is_loopback(a) for a in addresses)


class OwnAddresses:
    """What this node advertises, kept current as interfaces change and peers report how they see us."""

    MAX_OBSERVED = 2

    def __init__(self, bind: str, port: int, advertised: Sequence[str], local_hosts: Sequence[str]) -> None:
        self._bind = bind
        self._port = port
        self._advertised = tuple(advertised)
        self._local_hosts = list(local_hosts)
        self._observed_hosts: list[str] = []
        self.current = self._compute()

    def _compute(self) -> tuple[str, ...]:
        return own_addresses(
            self._bind, self._port, self._advertised, self._observed_hosts, self._local_hosts
        )

    def observed(self, host: str) -> bool:
        """A peer saw our packets come from `host` (behind a NAT: our public side). True if that
        changed what we advertise."""
        if is_loopback_host(host) or host in self._observed_hosts or host in self._local_hosts:
            return False
        self._observed_hosts = [host, *self._observed_hosts][: self.MAX_OBSERVED]
        return self._update()

    def interfaces(self, local_hosts: Sequence[str]) -> bool:
        """The interfaces now have these addresses. True if that changed what we advertise."""
        self._local_hosts = list(local_hosts)
        return self._update()

    def _update(self) -> bool:
        fresh = self._compute()
        changed = fresh != self.current
        self.current = fresh
        return changed
