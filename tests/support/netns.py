"""A test bed of Linux network namespaces: test nodes get real, separate IPv4 addresses.

Every `Host` and every `Lan` is a network namespace of its own, so the host's root namespace is
never touched. A `Lan` is a bridge (`br0`) in its namespace; `Host.attach` plugs a veth pair into it.
A `router` is a host on two LANs with IP forwarding and nftables NAT (masquerade out, DNAT port
forwards in). `Testbed.cut`/`heal` add/remove nftables drop rules between two hosts.

    with Testbed() as bed:
        lan = bed.lan("lan")
        a, b = bed.host("a"), bed.host("b")
        a.attach(lan, "10.77.1.2/24")
        b.attach(lan, "10.77.1.3/24")
        server = b.popen([sys.executable, "-m", "http.server", "8000", "--bind", "10.77.1.3"])
        a.http("GET", "http://10.77.1.3:8000/")   # in-process, from inside a's namespace

Namespace names are `mltb<pid>-<testbed>-<name>` (interface names never carry them: each namespace
has its own `eth0`, `br0`...), so parallel runs never clash and leftovers of dead runs are found.
Hosts are IPv4 only (IPv6 is off on their veths, so a cut leaves no IPv6 path open). The NAT is
conntrack based: forward a port before traffic for it arrives (a flow seen first keeps its mapping).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import httpx

NS_PREFIX = "mltb"
NETNS_DIR = Path("/var/run/netns")
CLONE_NEWNET = 0x40000000
COMMAND_TIMEOUT_S = 10.0
PROCESS_EXIT_TIMEOUT_S = 5.0
HTTP_TIMEOUT_S = 10.0
BRIDGE = "br0"
NAT_TABLE = "testbed_nat"
MAX_IFNAME_CHARS = 15

_LEFTOVER = re.compile(rf"^{NS_PREFIX}(\d+)-")  # then the test bed number (or "probe")
_thread_state = threading.local()
_testbed_counter = iter(range(sys.maxsize))


def _ip(*args: str, stdin: str | None = None) -> str:
    """Run `ip ARGS...` (or anything after "netns exec NS") from the root namespace; fail loudly."""
    done = subprocess.run(
        ["ip", *args], input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _sysctl(ns: str, setting: str) -> None:
    _ip("netns", "exec", ns, "sysctl", "-qw", setting)


def _nft(ns: str, script: str) -> None:
    _ip("netns", "exec", ns, "nft", "-f", "-", stdin=script)


def _delete_namespace(ns: str) -> None:
    """Kill whatever still runs in `ns` (it would keep the namespace alive), then remove it."""
    with contextlib.suppress(RuntimeError):
        for pid in _ip("netns", "pids", ns).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    with contextlib.suppress(RuntimeError):
        _ip("netns", "delete", ns)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        pass
    return True


def _delete_leftovers() -> None:
    """Namespaces of test beds whose process died without cleaning up (a SIGKILLed pytest)."""
    for entry in NETNS_DIR.glob(f"{NS_PREFIX}*") if NETNS_DIR.is_dir() else []:
        match = _LEFTOVER.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            _delete_namespace(entry.name)


@functools.cache
def netns_unavailable_reason() -> str | None:
    """None when namespaces, veth pairs, bridges and nftables all work here; else why not."""
    if sys.platform != "linux":
        return f"network namespaces need Linux (this is {sys.platform})"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"`{tool}` not found: install {package} (`make netns-tools`)"
    probe = f"{NS_PREFIX}{os.getpid()}-probe"
    try:
        _ip("netns", "add", probe)
        _ip("-n", probe, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        _nft(probe, "table ip probe {\n chain input { type filter hook input priority 0; }\n}\n")
        with ThreadPoolExecutor(max_workers=1) as probe_thread:  # setns moves the calling thread
            probe_thread.submit(enter_namespace, probe).result()
        return None
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot build a network namespace test bed here (root needed?): {exc}"
    finally:
        if (NETNS_DIR / probe).exists():
            _delete_namespace(probe)


def enter_namespace(ns: str) -> None:
    """Move the calling thread (only it: netns membership is per thread) into namespace `ns`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({ns}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def _start_http_worker(ns: str) -> None:
    enter_namespace(ns)
    _thread_state.client = httpx.Client(trust_env=False, timeout=HTTP_TIMEOUT_S)


def _http_request(method: str, url: str, kwargs: dict[str, Any]) -> httpx.Response:
    client: httpx.Client = _thread_state.client
    return client.request(method, url, **kwargs)


def _close_http_client() -> None:
    _thread_state.client.close()


class Lan:
    """An L2 segment: the bridge `br0` in a namespace of its own."""

    def __init__(self, name: str, ns: str) -> None:
        self.name = name
        self.ns = ns
        self._ports = 0

    def new_port_name(self, host_name: str) -> str:
        self._ports += 1
        return f"p{self._ports}-{host_name}"[:MAX_IFNAME_CHARS]

    def __repr__(self) -> str:
        return f"Lan({self.name!r}, ns={self.ns!r})"


class Host:
    """A network namespace with `lo` up and one `ethN` per attached LAN."""

    def __init__(self, name: str, ns: str) -> None:
        self.name = name
        self.ns = ns
        self.ips: list[str] = []
        self.interfaces: dict[str, ipaddress.IPv4Interface] = {}  # "eth0" -> 10.77.1.2/24
        self.outside_interface: str | None = None  # set on routers: where NAT faces the world
        self.processes: list[subprocess.Popen[Any]] = []
        # Its one thread starts (and enters the namespace) on the first request.
        self._http_worker = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"netns-{name}", initializer=_start_http_worker, initargs=(ns,)
        )
        self._http_started = False

    def __repr__(self) -> str:
        return f"Host({self.name!r}, ns={self.ns!r}, ips={self.ips})"

    def attach(self, lan: Lan, cidr: str) -> str:
        """Plug a new `ethN` into `lan` with address `cidr` ("10.77.1.2/24"); returns the IP."""
        address = ipaddress.IPv4Interface(cidr)
        interface, port = f"eth{len(self.interfaces)}", lan.new_port_name(self.name)
        _ip("link", "add", interface, "netns", self.ns, "type", "veth", "peer", "name", port, "netns", lan.ns)
        _ip("-n", lan.ns, "link", "set", port, "master", BRIDGE, "up")
        _ip("-n", self.ns, "addr", "add", str(address), "dev", interface)
        _ip("-n", self.ns, "link", "set", interface, "up")
        self.interfaces[interface] = address
        self.ips.append(str(address.ip))
        return str(address.ip)

    def add_default_route(self, via_ip: str) -> None:
        _ip("-n", self.ns, "route", "replace", "default", "via", via_ip)

    def forward_port(
        self, router_outside_port: int, inside_ip: str, inside_port: int, proto: Literal["udp", "tcp"] = "udp"
    ) -> None:
        """On a router: what arrives on the outside interface for the port goes to inside_ip:inside_port."""
        if self.outside_interface is None:
            raise ValueError(f"{self.name} is not a router (made by Testbed.router)")
        rule = (
            f'add rule ip {NAT_TABLE} prerouting iifname "{self.outside_interface}" '
            f"{proto} dport {router_outside_port} dnat to {inside_ip}:{inside_port}\n"
        )
        _nft(self.ns, rule)

    def popen(self, argv: list[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start argv inside the namespace in a session of its own (killed as a group on close).
        `ip netns exec` execs the command, so the Popen's pid is the command's own."""
        popen_kwargs["start_new_session"] = True
        process = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], **popen_kwargs)
        self.processes.append(process)
        return process

    def run(
        self, argv: list[str], check: bool = True, timeout_s: float = COMMAND_TIMEOUT_S, **run_kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the namespace to completion; output captured as text."""
        run_kwargs.setdefault("capture_output", True)
        return subprocess.run(
            ["ip", "netns", "exec", self.ns, *argv], check=check, timeout=timeout_s, text=True, **run_kwargs
        )

    def http(self, method: str, url: str, **httpx_kwargs: Any) -> httpx.Response:
        """An HTTP request made from inside the namespace, in-process (one worker thread per host)."""
        self._http_started = True
        return self._http_worker.submit(_http_request, method, url, httpx_kwargs).result()

    def http_json(self, method: str, url: str, **httpx_kwargs: Any) -> Any:
        response = self.http(method, url, **httpx_kwargs)
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        """Kill every process started here (whole process groups) and stop the HTTP worker."""
        for process in self.processes:
            if process.poll() is None:  # not reaped yet, so its pid (= its group id) is still ours
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(PROCESS_EXIT_TIMEOUT_S)
        if self._http_started:
            with contextlib.suppress(Exception):  # a broken worker (setns failed) has no client
                self._http_worker.submit(_close_http_client).result()
        self._http_worker.shutdown(wait=True, cancel_futures=True)


class Testbed:
    """Namespaces for LANs, hosts and routers; `close()` (or leaving the `with`) removes them all."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self) -> None:
        self.prefix = f"{NS_PREFIX}{os.getpid()}-{next(_testbed_counter)}"
        self.hosts: list[Host] = []
        self.lans: list[Lan] = []
        self._namespaces: list[str] = []
        self._cuts: set[tuple[str, str]] = set()

    def __enter__(self) -> Testbed:
        _delete_leftovers()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _namespace(self, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
            raise ValueError(f"name {name!r}: letters, digits, '_' and '-' only, starting with a letter")
        ns = f"{self.prefix}-{name}"
        if ns in self._namespaces:
            raise ValueError(f"{name!r} already exists in this test bed")
        _ip("netns", "add", ns)
        self._namespaces.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _sysctl(ns, "net.ipv6.conf.default.disable_ipv6=1")  # veths made later: IPv4 only
        return ns

    def lan(self, name: str) -> Lan:
        lan = Lan(name, self._namespace(name))
        _ip("-n", lan.ns, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", lan.ns, "link", "set", BRIDGE, "up")
        # With br_netfilter loaded, bridged frames would go through this namespace's netfilter too.
        with contextlib.suppress(RuntimeError):
            _sysctl(lan.ns, "net.bridge.bridge-nf-call-iptables=0")
        self.lans.append(lan)
        return lan

    def host(self, name: str) -> Host:
        host = Host(name, self._namespace(name))
        self.hosts.append(host)
        return host

    def router(
        self,
        name: str,
        inside: Lan,
        inside_cidr: str,
        outside: Lan,
        outside_cidr: str,
        masquerade: bool = True,
    ) -> Host:
        """A host on two LANs (eth0 inside, eth1 outside) forwarding between them, NAT in nftables.
        Inside hosts still need `add_default_route(<router's inside IP>)`."""
        router = self.host(name)
        router.attach(inside, inside_cidr)
        router.attach(outside, outside_cidr)
        router.outside_interface = "eth1"
        _sysctl(router.ns, "net.ipv4.ip_forward=1")
        inside_subnet = ipaddress.IPv4Interface(inside_cidr).network
        snat = f'ip saddr {inside_subnet} oifname "eth1" masquerade;' if masquerade else ""
        _nft(
            router.ns,
            f"table ip {NAT_TABLE} {{\n"
            "  chain prerouting { type nat hook prerouting priority dstnat; policy accept; }\n"
            f"  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; {snat} }}\n"
            "}\n",
        )
        return router

    @staticmethod
    def _cut_table(peer: Host) -> str:
        return "testbed_cut_" + re.sub(r"\W", "_", peer.name)

    def cut(self, a: Host, b: Host) -> None:
        """Drop all IPv4 between a and b (every address each has now), in both namespaces, both ways."""
        for here, peer in ((a, b), (b, a)):
            if not peer.ips:
                raise ValueError(f"{peer.name} has no address to cut")
            table, addresses = self._cut_table(peer), "{ " + ", ".join(peer.ips) + " }"
            _nft(  # add + delete first: replacing the table in one transaction makes a second cut a no-op
                here.ns,
                f"add table ip {table}\ndelete table ip {table}\ntable ip {table} {{\n"
                f"  chain input {{ type filter hook input priority filter; ip saddr {addresses} drop; }}\n"
                f"  chain output {{ type filter hook output priority filter; ip daddr {addresses} drop; }}\n"
                "}\n",
            )
        self._cuts.add((a.ns, b.ns))

    def heal(self, a: Host, b: Host) -> None:
        """Remove exactly the rules `cut(a, b)` added (nothing to do when they were never cut)."""
        for here, peer in ((a, b), (b, a)):
            table = self._cut_table(peer)
            _nft(here.ns, f"add table ip {table}\ndelete table ip {table}\n")
        self._cuts.discard((a.ns, b.ns))
        self._cuts.discard((b.ns, a.ns))

    def is_cut(self, a: Host, b: Host) -> bool:
        return (a.ns, b.ns) in self._cuts or (b.ns, a.ns) in self._cuts

    def close(self) -> None:
        """Kill every process, stop every HTTP worker, delete every namespace: even after a failure."""
        try:
            for host in self.hosts:
                with contextlib.suppress(Exception):
                    host.close()
        finally:
            for ns in reversed(self._namespaces):
                _delete_namespace(ns)
            self._namespaces.clear()


def netns_testbed() -> Iterator[Testbed]:
    """Body of a pytest fixture: `testbed = pytest.fixture(netns_testbed, name="testbed")`."""
    import pytest

    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with Testbed() as bed:
        yield bed
