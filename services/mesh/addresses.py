"""Where the mesh endpoint binds and what addresses it tells others (DESIGN §3, README "Networking").

Default: bind 127.0.0.1 — nothing is reachable from the network unless asked. `--listen-all`, or
joining a mesh whose bootstrap address is not loopback, binds all interfaces (the other nodes
must reach us). `--advertise HOST:PORT` overrides what we tell peers (port forwarding, NAT).
"""

from __future__ import annotations

import ipaddress
import socket

from services.node.config import NodeConfig


def _is_loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_host(config: NodeConfig, bootstrap: list[str]) -> str:
    if config.listen_all or any(not _is_loopback(a) for a in bootstrap):
        return "0.0.0.0"
    return "127.0.0.1"


def _interface_addresses() -> list[str]:
    found: list[str] = []
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except socket.gaierror:
        infos = []
    for info in infos:
        host = str(info[4][0])
        if host not in found and not ipaddress.ip_address(host).is_loopback:
            found.append(host)
    return found


def advertised_addresses(config: NodeConfig, host: str, port: int) -> tuple[str, ...]:
    if config.advertise:
        return tuple(config.advertise)
    if host == "0.0.0.0":
        return (*(f"{ip}:{port}" for ip in _interface_addresses()), f"127.0.0.1:{port}")
    return (f"{host}:{port}",)
