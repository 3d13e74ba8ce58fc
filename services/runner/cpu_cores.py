"""How many physical CPU cores this process may use: the llama.cpp thread count.

llama.cpp decodes fastest with one thread per physical core: a second thread on an SMT sibling
shares the core's units and memory port, and more threads than cores only wait on each other.
`os.cpu_count()` counts logical CPUs, so halving it guessed SMT everywhere; on a machine without
SMT (most cloud VMs' vCPUs as the guest sees them, Apple Silicon) that left half the cores idle
(measured on a 2-core VM: -t 2 decodes 1.8x the tokens/s of -t 1, bench/RESULTS.md).

`count_physical_cores` is pure; `physical_cores` reads the topology (Linux sysfs restricted to
this process's CPU affinity, so a container's cpuset counts; macOS sysctl, performance cores
first) and falls back to llama.cpp's own guess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

SYSFS_CPUS = Path("/sys/devices/system/cpu")
MACOS_SYSCTLS = ("hw.perflevel0.physicalcpu", "hw.physicalcpu")


def count_physical_cores(siblings_by_cpu: Mapping[int, str], usable: Iterable[int]) -> int:
    """Distinct cores among the `usable` CPUs; `siblings_by_cpu`: each CPU's thread_siblings_list
    ("0,4" or "0-1"), the CPUs sharing its core. A usable CPU without an entry counts as a core."""
    cores: set[str] = set()
    for cpu in usable:
        cores.add(siblings_by_cpu.get(cpu, "").strip() or f"cpu{cpu}")
    return len(cores)


def fallback_cores(logical: int) -> int:
    """llama.cpp's guess when the topology is unknown (common.cpp cpu_get_num_physical_cores)."""
    if logical <= 0:
        return 4
    return logical if logical <= 4 else logical // 2


def physical_cores() -> int:
    """Physical cores this process may run on (at least 1)."""
    if sys.platform == "darwin":
        return _macos_cores() or fallback_cores(os.cpu_count() or 0)
    usable = _usable_cpus()
    siblings = _linux_siblings(usable)
    if not siblings:
        return fallback_cores(len(usable))
    return max(1, count_physical_cores(siblings, usable))


def _usable_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _linux_siblings(cpus: Iterable[int]) -> dict[int, str]:
    siblings = {}
    for cpu in cpus:
        try:
            siblings[cpu] = (SYSFS_CPUS / f"cpu{cpu}/topology/thread_siblings_list").read_text()
        except OSError:
            continue
    return siblings


def _macos_cores() -> int:
    for name in MACOS_SYSCTLS:
        try:
            out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return 0
        if out.returncode == 0 and out.stdout.strip().isdigit() and int(out.stdout) > 0:
            return int(out.stdout)
    return 0
