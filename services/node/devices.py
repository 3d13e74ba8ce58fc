"""--device: the llama.cpp devices a node may use, as `llama-server --list-devices` names them.

Pure parsing and choosing, plus one probe at the edge (`list_devices`). llama-server lists only the
devices it can offload to (CUDA0, MTL0, Vulkan0, …) and "(none)" on a CPU-only build; the CPU is
always there but never listed, and llama-server refuses `--device CPU` (its word for "no offload"
is `none`) while ggml-rpc-server takes `-d CPU`. So `CPU` is a name here too, translated per binary.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CPU_DEVICE = "CPU"
# llama-server's --device value for "offload nothing": everything stays on the CPU.
LLAMA_SERVER_NO_OFFLOAD = "none"
LIST_DEVICES_TIMEOUT_S = 20.0
BYTES_PER_MIB = 1 << 20
_LIST_HEADER = "Available devices:"
# "  CUDA0: NVIDIA H200 (143167 MiB, 142522 MiB free)"
_DEVICE_LINE = re.compile(
    r"^\s*(?P<name>[^\s:]+):\s*(?P<desc>.*?)\s*\((?P<total>\d+) MiB, (?P<free>\d+) MiB free\)"
)


class DeviceError(Exception):
    """The devices could not be listed, or a --device names one this machine lacks."""


class UnknownDevice(DeviceError):
    """--device names a device llama.cpp does not see here."""


@dataclass(frozen=True)
class LlamaDevice:
    name: str
    description: str
    total_bytes: int
    free_bytes: int


def parse_list_devices(stdout: str) -> tuple[LlamaDevice, ...]:
    """The offload devices in `llama-server --list-devices` output (empty for "(none)")."""
    _, marker, listed = stdout.partition(_LIST_HEADER)
    if not marker:
        raise DeviceError("llama-server --list-devices printed no device list")
    devices = []
    for line in listed.splitlines():
        match = _DEVICE_LINE.match(line)
        if match:
            devices.append(
                LlamaDevice(
                    name=match["name"],
                    description=match["desc"],
                    total_bytes=int(match["total"]) * BYTES_PER_MIB,
                    free_bytes=int(match["free"]) * BYTES_PER_MIB,
                )
            )
    return tuple(devices)


def device_names(devices: Sequence[LlamaDevice]) -> tuple[str, ...]:
    """Every name --device takes here: the offload devices, then CPU."""
    return (*(d.name for d in devices), CPU_DEVICE)


def choose_devices(text: str, devices: Sequence[LlamaDevice]) -> tuple[str, ...]:
    """--device DEV[,DEV…] checked against what llama.cpp sees; raises UnknownDevice (one line)."""
    wanted = tuple(part.strip() for part in text.split(","))
    if not all(wanted):
        raise UnknownDevice(f"--device {text!r}: empty device name")
    known = device_names(devices)
    for name in wanted:
        if name not in known:
            raise UnknownDevice(f"--device {name}: no such device here; llama.cpp sees {', '.join(known)}")
    if CPU_DEVICE in wanted and len(wanted) > 1:
        raise UnknownDevice(f"--device {text}: CPU means no offload; give it alone or only GPUs")
    return wanted


def device_memory_bytes(chosen: Sequence[str], devices: Sequence[LlamaDevice], system_bytes: int) -> int:
    """The memory the chosen devices offer model weights: their total, or system RAM for CPU."""
    if CPU_DEVICE in chosen:
        return system_bytes
    by_name = {d.name: d for d in devices}
    return sum(by_name[name].total_bytes for name in chosen if name in by_name)


def is_cpu_only(device: str) -> bool:
    return device.strip() == CPU_DEVICE


def llama_server_device_args(device: str) -> list[str]:
    """`--device` for llama-server ([] when the node did not choose: llama.cpp uses every GPU)."""
    if not device:
        return []
    return ["--device", LLAMA_SERVER_NO_OFFLOAD if is_cpu_only(device) else device]


def rpc_server_device_args(device: str) -> list[str]:
    """`-d` for ggml-rpc-server, which names the CPU as CPU."""
    return ["-d", device] if device else []


def list_devices(bin_dir: Path) -> tuple[LlamaDevice, ...]:
    """Run `llama-server --list-devices` from `bin_dir` (blocking); raises DeviceError."""
    try:
        result = subprocess.run(
            [str(bin_dir / "llama-server"), "--list-devices"],
            capture_output=True,
            text=True,
            timeout=LIST_DEVICES_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeviceError(f"llama-server --list-devices failed: {exc}") from exc
    return parse_list_devices(result.stdout)
