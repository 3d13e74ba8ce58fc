"""`mesh-llm doctor`: from what the probes found (doctor.py) to a verdict per check and how to fix it.

Pure: every function takes plain facts and returns a Check, so each verdict is unit-tested without
the machine that would produce it (a CPU-only build on a CUDA box, a full disk, a low hard limit).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from services.node.devices import LlamaDevice

BYTES_PER_GB = 1e9
# Below this much memory for weights only the tiniest models fit: worth saying, not an error.
LOW_MEMORY_BYTES = 2 * 10**9
# A model cache with less free space than this cannot take one more mid-size model.
LOW_DISK_FREE_BYTES = 10 * 10**9
# Every peer link, tunnelled stream and API client is a descriptor; 1024 ran out in practice
# (services/node/fd_limit.py), and services raise their soft limit to the hard one.
MIN_OPEN_FILES_HARD = 8192
# Peers' gossip records stamped this far in our future: their clock (or ours) is off by that much.
CLOCK_SKEW_WARN_S = 5.0


class Verdict(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        return data


def exit_code(checks: Sequence[Check]) -> int:
    """Non-zero when anything is wrong (a warning is worth reading, not a failure)."""
    return 1 if any(c.verdict is Verdict.FAIL for c in checks) else 0


def _gb(value: float) -> str:
    return f"{value / BYTES_PER_GB:.1f} GB"


def check_llama_build(bin_dir: str, error: str) -> Check:
    if error:
        return Check("llama.cpp", Verdict.FAIL, error, "run `make llama` (builds the pinned llama.cpp)")
    return Check("llama.cpp", Verdict.OK, f"pinned build at {bin_dir}")


def check_accelerators(
    devices: Sequence[LlamaDevice] | None,
    error: str,
    nvidia_gpus: int,
    device_flag: str,
    device_error: str = "",
) -> Check:
    """What llama.cpp sees; a GPU the machine has but the build does not see is the common trap.
    `device_error`: why --device names no device here (devices.UnknownDevice)."""
    if devices is None:
        return Check("accelerators", Verdict.SKIP, error or "no llama.cpp build to ask")
    if device_error:
        return Check("accelerators", Verdict.FAIL, device_error, "give --device one of the names listed")
    listed = ", ".join(f"{d.name} ({d.description}, {_gb(d.total_bytes)})" for d in devices)
    chosen = f"; --device {device_flag}" if device_flag else ""
    if not devices and nvidia_gpus:
        return Check(
            "accelerators",
            Verdict.FAIL,
            f"nvidia-smi sees {nvidia_gpus} GPU(s) but this llama.cpp build sees none (a CPU build)",
            "install the CUDA toolkit (nvcc) and rebuild with `make llama`",
        )
    if not devices:
        return Check("accelerators", Verdict.OK, f"no GPU: llama.cpp runs on the CPU{chosen}")
    return Check("accelerators", Verdict.OK, f"{listed}{chosen}")


def check_memory(offered_bytes: int, max_vram_gb: float | None, source: str) -> Check:
    capped = f", capped by --max-vram {max_vram_gb:g}" if max_vram_gb is not None else ""
    detail = f"{_gb(offered_bytes)} for model weights ({source}{capped})"
    if offered_bytes <= 0:
        return Check(
            "memory", Verdict.FAIL, "no memory found to offer models", "check --device and --max-vram"
        )
    if offered_bytes < LOW_MEMORY_BYTES:
        return Check("memory", Verdict.WARN, detail, "only small models fit; drop --max-vram or add a GPU")
    return Check("memory", Verdict.OK, detail)


def check_port(label: str, port: int, free: bool, node_running: bool, flag: str) -> Check:
    """A TCP or UDP port the node would bind; in use is fine when it is this node holding it."""
    name = f"{label} port {port}"
    if free:
        return Check(name, Verdict.OK, "free")
    if node_running:
        return Check(name, Verdict.OK, "in use by the running node")
    return Check(
        name, Verdict.FAIL, "already in use by another program", f"stop it, or pick another with {flag}"
    )


def check_udp_loopback(port: int, reached: Sequence[str], missed: Sequence[str], node_running: bool) -> Check:
    """A datagram to our own UDP port through each interface address: a local firewall shows here."""
    name = "mesh UDP reachable"
    if node_running:
        return Check(
            name, Verdict.SKIP, "the running node holds the port (its peers list says it is reached)"
        )
    if missed:
        return Check(
            name,
            Verdict.FAIL,
            f"UDP {port} on {', '.join(missed)} did not reach this machine itself",
            "allow inbound UDP for mesh-llm in the firewall (ufw/nftables/macOS firewall)",
        )
    if not reached:
        return Check(
            name, Verdict.WARN, "no network address but loopback", "connect to a network to join peers"
        )
    return Check(name, Verdict.OK, f"a datagram to {', '.join(reached)} arrived")


def check_model_cache(path: str, writable: bool, free_bytes: int, error: str) -> Check:
    name = "model cache"
    if not writable:
        return Check(
            name, Verdict.FAIL, f"{path} is not writable: {error}", "fix its permissions or use --models-dir"
        )
    detail = f"{path}, {_gb(free_bytes)} free"
    if free_bytes < LOW_DISK_FREE_BYTES:
        return Check(name, Verdict.WARN, detail, "free some space or point --models-dir at a bigger disk")
    return Check(name, Verdict.OK, detail)


def check_clock_skew(node_running: bool, peer_ahead_s: dict[str, float]) -> Check:
    """`peer_ahead_s`: by peer name, how far its gossip record's stamp is in our future (seconds;
    negative: in our past, which a record not updated lately looks like too, so only ahead counts)."""
    name = "clock skew"
    if not node_running:
        return Check(name, Verdict.SKIP, "no node running in this home: no peers to compare with")
    if not peer_ahead_s:
        return Check(name, Verdict.SKIP, "the running node has no peers")
    off = {peer: ahead for peer, ahead in peer_ahead_s.items() if ahead > CLOCK_SKEW_WARN_S}
    if off:
        listed = ", ".join(f"{peer} +{ahead:.0f}s" for peer, ahead in sorted(off.items()))
        return Check(
            name,
            Verdict.WARN,
            f"peers' clocks ahead of ours: {listed}",
            "enable NTP (timedatectl set-ntp true)",
        )
    return Check(
        name,
        Verdict.OK,
        f"within {CLOCK_SKEW_WARN_S:g}s of {len(peer_ahead_s)} peer(s) (as far as gossip shows)",
    )


def check_open_files(soft: int, hard: int) -> Check:
    """Services raise their soft limit to the hard one at start: the hard one is what counts."""
    name = "open files limit"
    detail = f"soft {soft}, hard {hard}"
    if hard < MIN_OPEN_FILES_HARD:
        return Check(
            name,
            Verdict.WARN,
            f"{detail}: under {MIN_OPEN_FILES_HARD} a busy node runs out of descriptors",
            "raise the hard limit (limits.conf nofile, or LimitNOFILE= in the service)",
        )
    return Check(name, Verdict.OK, detail)
