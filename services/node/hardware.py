"""How much memory this node can give to model weights ("VRAM"), before --max-vram."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess

BYTES_PER_GIB = 1 << 30
NVIDIA_SMI_TIMEOUT_S = 5


def _nvidia_vram_bytes() -> int:
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        probe = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if probe.returncode != 0:
        return 0
    total_mib = sum(int(line) for line in probe.stdout.split() if line.strip().isdigit())
    return total_mib * (1 << 20)


def system_memory_bytes() -> int:
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return 0


def detect_vram_bytes() -> int:
    """GPU memory; on Apple silicon and CPU-only machines, system RAM is the budget."""
    if platform.system() == "Darwin":
        return system_memory_bytes()
    return _nvidia_vram_bytes() or system_memory_bytes()


def effective_vram_bytes(detected: int, max_vram_gb: float | None) -> int:
    if max_vram_gb is None:
        return detected
    return min(detected, int(max_vram_gb * BYTES_PER_GIB))


def device_vram_bytes(device: str, llama_bin_dir: str = "") -> int:
    """The memory the node offers with --device (services/node/devices.py): the chosen GPUs' total,
    system RAM for CPU; without a choice, detect_vram_bytes(). Blocking (runs llama-server once)."""
    if not device:
        return detect_vram_bytes()
    from services.node.devices import DeviceError, choose_devices, device_memory_bytes, list_devices
    from services.runner.binaries import LlamaNotBuilt, find_llama_bin_dir

    try:
        devices = list_devices(find_llama_bin_dir(llama_bin_dir))
        chosen = choose_devices(device, devices)
    except (DeviceError, LlamaNotBuilt):
        # The CLI checked the name at start; a build gone since is the runner's error to report.
        return detect_vram_bytes()
    return device_memory_bytes(chosen, devices, system_memory_bytes())
