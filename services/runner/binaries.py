"""Where the pinned llama.cpp binaries are: config, then $MESH_LLM_LLAMA_BIN, then the build cache."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

from services.node.devices import DeviceError, list_devices
from services.runner.commands import BINARIES

BIN_DIR_ENV = "MESH_LLM_LLAMA_BIN"
REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "llama.cpp" / "build.py"
# build.py writes this next to bin/ only after every binary was copied in.
BUILD_COMPLETE_STAMP = "complete"
PRINT_DIR_TIMEOUT_S = 30
NOT_BUILT_HINT = "llama.cpp is not built: run `make llama`"


class LlamaNotBuilt(Exception):
    """No usable llama-server / ggml-rpc-server binaries."""


def _missing(bin_dir: Path) -> list[str]:
    return [name for name in BINARIES if not (bin_dir / name).is_file()]


def _checked(bin_dir: Path, origin: str) -> Path:
    missing = _missing(bin_dir)
    if missing:
        raise LlamaNotBuilt(f"{origin} {bin_dir} lacks {', '.join(missing)}: point it at a llama.cpp build")
    return bin_dir


def build_cache_bin_dir() -> Path:
    """The bin dir `llama.cpp/build.py` builds into (it alone knows the pin/patches/backend key)."""
    if not BUILD_SCRIPT.is_file():
        raise LlamaNotBuilt(f"{NOT_BUILT_HINT} ({BUILD_SCRIPT} is missing)")
    try:
        probe = subprocess.run(
            [sys.executable, str(BUILD_SCRIPT), "--print-dir"],
            capture_output=True,
            text=True,
            timeout=PRINT_DIR_TIMEOUT_S,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise LlamaNotBuilt(f"{NOT_BUILT_HINT} (build.py --print-dir failed: {exc})") from exc
    lines = probe.stdout.strip().splitlines()
    if not lines:
        raise LlamaNotBuilt(f"{NOT_BUILT_HINT} (build.py --print-dir printed nothing)")
    return Path(lines[-1])


def find_llama_bin_dir(configured: str = "") -> Path:
    """The directory holding llama-server and ggml-rpc-server; raises LlamaNotBuilt otherwise."""
    if configured:
        return _checked(Path(configured).expanduser(), "llama_bin_dir")
    from_env = os.environ.get(BIN_DIR_ENV)
    if from_env:
        return _checked(Path(from_env).expanduser(), f"${BIN_DIR_ENV}")
    bin_dir = build_cache_bin_dir()
    if not (bin_dir.parent / BUILD_COMPLETE_STAMP).exists() or _missing(bin_dir):
        raise LlamaNotBuilt(f"{NOT_BUILT_HINT} (nothing complete at {bin_dir})")
    return bin_dir


@functools.cache
def has_offload_device(bin_dir: Path) -> bool:
    """Whether this build's llama-server sees a local GPU (CUDA, Metal, Vulkan) to put layers on.

    Decides how a split host is told its own share: a GPU is a device in --tensor-split, while a
    CPU-only host keeps the layers -ngl leaves behind (see commands.split_args). Blocking, once per
    build (services/node/devices.py runs and parses `--list-devices`).
    """
    try:
        return bool(list_devices(bin_dir))
    except DeviceError:
        return False
