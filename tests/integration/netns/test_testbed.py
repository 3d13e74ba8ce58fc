"""The network-namespace test bed itself: LANs, cuts, NAT and port forwards, and a clean teardown."""

from __future__ import annotations

import select
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.netns import NETNS_DIR, NS_PREFIX, Host, Testbed, netns_unavailable_reason
from tests.support.node import wait_until

pytestmark = pytest.mark.integration


SERVER_READY_TIMEOUT_S = 5.0
REPLY_TIMEOUT_S = 3.0  # a path that should work: resend until a reply comes, at most this long
SILENCE_S = 1.0  # a path that should be cut: no reply for this long counts as cut
RESEND_S = 0.2
ECHO_PORT = 7000
PEER_PORT = 7001
HTTP_PORT = 8000

UDP_ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data + b" from " + peer[0].encode(), peer)
"""

UDP_CLIENT = f"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout({RESEND_S})
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    try:
        s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
        print(s.recvfrom(2048)[0].decode())
        sys.exit(0)
    except OSError:  # a timeout, or EPERM from a drop rule on output
        time.sleep({RESEND_S})
sys.exit(1)
"""

# Tells each TCP client the address it came from, as this side sees it.
TCP_PEER_SERVER = """
import socket, sys
s = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    conn, peer = s.accept()
    with conn:
        conn.sendall(peer[0].encode())
"""

TCP_CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as s:
    print(s.recv(256).decode())
"""


def start_server(host: Host, script: str, ip: str, port: int) -> subprocess.Popen[str]:
    server = host.popen([sys.executable, "-c", script, ip, str(port)], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    readable, _, _ = select.select([server.stdout], [], [], SERVER_READY_TIMEOUT_S)
    assert readable and server.stdout.readline().strip() == "ready", f"server on {host.name} did not start"
    return server


def udp_reply(client: Host, ip: str, port: int, timeout_s: float = REPLY_TIMEOUT_S) -> str | None:
    done = client.run([sys.executable, "-c", UDP_CLIENT, ip, str(port), str(timeout_s)], check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def tcp_peer(client: Host, ip: str, port: int) -> str:
    return client.run([sys.executable, "-c", TCP_CLIENT, ip, str(port), str(REPLY_TIMEOUT_S)]).stdout.strip()


def start_http_server(host: Host, ip: str, directory: Path) -> None:
    (directory / "hello.txt").write_text("hello")
    argv = [sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind", ip, "--directory", str(directory)]
    host.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://{ip}:{HTTP_PORT}/hello.txt"
    serving = lambda: host.http("GET", url).status_code == 200  # noqa: E731
    wait_until(serving, SERVER_READY_TIMEOUT_S, f"http.server on {ip}")


def two_hosts_on_a_lan(testbed: Testbed) -> tuple[Host, Host]:
    lan = testbed.lan("lan")
    a, b = testbed.host("a"), testbed.host("b")
    a.attach(lan, "10.77.1.2/24")
    b.attach(lan, "10.77.1.3/24")
    return a, b


def namespaces() -> list[str]:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()


def test_hosts_on_one_lan_reach_each_other(testbed: Testbed) -> None:
    a, b = two_hosts_on_a_lan(testbed)
    assert (a.ips, b.ips) == (["10.77.1.2"], ["10.77.1.3"])
    assert a.ns.startswith(testbed.prefix) and a.ns in namespaces()
    start_server(b, UDP_ECHO_SERVER, "10.77.1.3", ECHO_PORT)
    start_server(a, UDP_ECHO_SERVER, "10.77.1.2", ECHO_PORT)
    assert udp_reply(a, "10.77.1.3", ECHO_PORT) == "ping from 10.77.1.2"
    assert udp_reply(b, "10.77.1.2", ECHO_PORT) == "ping from 10.77.1.3"


def test_http_runs_inside_the_hosts_namespace(testbed: Testbed, tmp_path: Path) -> None:
    a, b = two_hosts_on_a_lan(testbed)
    start_http_server(b, "127.0.0.1", tmp_path)
    assert b.http("GET", f"http://127.0.0.1:{HTTP_PORT}/hello.txt").text == "hello"
    with pytest.raises(httpx.ConnectError):  # a's loopback is a's own: nothing listens there
        a.http("GET", f"http://127.0.0.1:{HTTP_PORT}/hello.txt")


def test_cut_stops_udp_and_tcp_and_heal_restores_them(testbed: Testbed, tmp_path: Path) -> None:
    a, b = two_hosts_on_a_lan(testbed)
    start_server(b, UDP_ECHO_SERVER, "10.77.1.3", ECHO_PORT)
    start_http_server(b, "10.77.1.3", tmp_path)
    url = f"http://10.77.1.3:{HTTP_PORT}/hello.txt"
    for _ in range(2):  # cut and heal are reversible, again and again
        testbed.cut(a, b)
        testbed.cut(b, a)  # a second cut changes nothing
        assert testbed.is_cut(a, b)
        assert udp_reply(a, "10.77.1.3", ECHO_PORT, timeout_s=SILENCE_S) is None
        with pytest.raises(httpx.TransportError):
            a.http("GET", url, timeout=SILENCE_S)
        testbed.heal(a, b)
        testbed.heal(a, b)  # healing what is not cut is fine too
        assert not testbed.is_cut(a, b)
        assert udp_reply(a, "10.77.1.3", ECHO_PORT) == "ping from 10.77.1.2"
        assert a.http("GET", url).text == "hello"


def test_cut_leaves_other_hosts_alone(testbed: Testbed) -> None:
    a, b = two_hosts_on_a_lan(testbed)
    c = testbed.host("c")
    c.attach(testbed.lans[0], "10.77.1.4/24")
    start_server(b, UDP_ECHO_SERVER, "10.77.1.3", ECHO_PORT)
    testbed.cut(a, b)
    assert udp_reply(c, "10.77.1.3", ECHO_PORT) == "ping from 10.77.1.4"
    assert udp_reply(a, "10.77.1.3", ECHO_PORT, timeout_s=SILENCE_S) is None


def nat_setup(testbed: Testbed) -> tuple[Host, Host, Host]:
    """inner (10.77.1.2) behind router (10.77.1.1 | 10.77.2.1) on the outside LAN with outer (10.77.2.2)."""
    home, internet = testbed.lan("home"), testbed.lan("internet")
    router = testbed.router("router", home, "10.77.1.1/24", internet, "10.77.2.1/24")
    inner, outer = testbed.host("inner"), testbed.host("outer")
    inner.attach(home, "10.77.1.2/24")
    inner.add_default_route("10.77.1.1")
    outer.attach(internet, "10.77.2.2/24")
    return router, inner, outer


def test_masquerade_shows_the_routers_outside_address(testbed: Testbed) -> None:
    router, inner, outer = nat_setup(testbed)
    assert router.ips == ["10.77.1.1", "10.77.2.1"]
    start_server(outer, TCP_PEER_SERVER, "10.77.2.2", PEER_PORT)
    start_server(outer, UDP_ECHO_SERVER, "10.77.2.2", ECHO_PORT)
    assert tcp_peer(inner, "10.77.2.2", PEER_PORT) == "10.77.2.1"
    assert udp_reply(inner, "10.77.2.2", ECHO_PORT) == "ping from 10.77.2.1"
    # No route back into the private subnet: outer cannot reach inner unless a port is forwarded.
    assert udp_reply(outer, "10.77.1.2", ECHO_PORT, timeout_s=SILENCE_S) is None


def test_forwarded_ports_reach_the_inside_host(testbed: Testbed) -> None:
    router, inner, outer = nat_setup(testbed)
    router.forward_port(40000, "10.77.1.2", ECHO_PORT, proto="udp")
    router.forward_port(40001, "10.77.1.2", PEER_PORT, proto="tcp")
    start_server(inner, UDP_ECHO_SERVER, "10.77.1.2", ECHO_PORT)
    start_server(inner, TCP_PEER_SERVER, "10.77.1.2", PEER_PORT)
    # The inside host sees the real outside address (DNAT only, no SNAT on the way in).
    assert udp_reply(outer, "10.77.2.1", 40000) == "ping from 10.77.2.2"
    assert tcp_peer(outer, "10.77.2.1", 40001) == "10.77.2.2"
    with pytest.raises(ValueError, match="not a router"):
        inner.forward_port(1, "10.77.1.3", 1)


def test_cut_works_through_nat(testbed: Testbed) -> None:
    _router, inner, outer = nat_setup(testbed)
    start_server(outer, UDP_ECHO_SERVER, "10.77.2.2", ECHO_PORT)
    testbed.cut(inner, outer)
    assert udp_reply(inner, "10.77.2.2", ECHO_PORT, timeout_s=SILENCE_S) is None
    testbed.heal(inner, outer)
    assert udp_reply(inner, "10.77.2.2", ECHO_PORT) == "ping from 10.77.2.1"


def test_teardown_leaves_nothing_behind(tmp_path: Path) -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with pytest.raises(RuntimeError, match="test failed mid-way"), Testbed() as bed:
        a, b = two_hosts_on_a_lan(bed)
        server = start_server(b, UDP_ECHO_SERVER, "10.77.1.3", ECHO_PORT)
        start_http_server(a, "127.0.0.1", tmp_path)
        bed.cut(a, b)
        created = [a.ns, b.ns, bed.lans[0].ns]
        assert set(created) <= set(namespaces())
        raise RuntimeError("test failed mid-way")
    assert not any(ns.startswith(bed.prefix) for ns in namespaces())
    assert server.returncode == -9
    assert all(process.returncode is not None for host in bed.hosts for process in host.processes)


def test_leftovers_of_dead_runs_are_removed() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    leftover = f"{NS_PREFIX}{int(finished.stdout)}-0-stale"
    subprocess.run(["ip", "netns", "add", leftover], check=True)
    try:
        with Testbed():
            assert not (NETNS_DIR / leftover).exists()
    finally:
        subprocess.run(["ip", "netns", "delete", leftover], capture_output=True, check=False)
