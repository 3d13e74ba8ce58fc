"""A node home the disk refuses (full, read-only) stops `mesh-llm` with one line and a non-zero exit,
and leaves no half-written file: every home file is written to a temp file and renamed whole.

The disk is a tiny tmpfs of our own (we run as root, as test_file_transfer.py does), filled up to a
chosen number of free pages, so the write that fails is the one the test names: node.toml (the
CLI's), then identity.key and mesh.toml (the mesh service's first files, created by the CLI first).
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.node import MESH_LLM, free_port

pytestmark = pytest.mark.integration

TINY_DISK_BYTES = 64 * 1024
CLI_TIMEOUT_S = 60.0
PAGE_BYTES = resource.getpagesize()  # tmpfs hands out whole pages: each small file takes one
NO_SPACE = "No space left on device"


@contextlib.contextmanager
def tmpfs(mount_point: Path, *options: str) -> Iterator[Path]:
    mount_point.mkdir()
    mounted = subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            ",".join([f"size={TINY_DISK_BYTES}", *options]),
            "tmpfs",
            str(mount_point),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs (this test needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill_leaving(disk: Path, free_pages: int) -> None:
    """Fill `disk` page by page until it refuses, then give `free_pages` pages back."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * PAGE_BYTES)
    os.truncate(filler, filler.stat().st_size // PAGE_BYTES * PAGE_BYTES - free_pages * PAGE_BYTES)


def start_client(home: Path) -> subprocess.CompletedProcess[str]:
    argv = [str(MESH_LLM), "--home", str(home), "--client", "--port", str(free_port())]
    return subprocess.run(
        [*argv, "--console", str(free_port())], capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )


def files_under(home: Path) -> set[str]:
    return {str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()} if home.exists() else set()


def assert_one_line(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"mesh-llm: {message}"]


@pytest.mark.parametrize(
    ("free_pages", "refused", "whole"),
    [
        (0, "node.toml", set()),
        (1, "identity.key", {"node.toml"}),
        (2, "mesh.toml", {"node.toml", "identity.key"}),
    ],
    ids=["node.toml", "identity.key", "mesh.toml"],
)
def test_a_full_disk_is_one_line_and_leaves_only_whole_files(
    tmp_path: Path, free_pages: int, refused: str, whole: set[str]
) -> None:
    with tmpfs(tmp_path / "disk") as disk:
        fill_leaving(disk, free_pages)
        home = disk / "home"
        result = start_client(home)
        assert_one_line(result, f"cannot write {home / refused}: {NO_SPACE}")
        assert files_under(home) == whole  # no temp file, no empty or partial file
        if "node.toml" in whole:
            assert tomllib.loads((home / "node.toml").read_text())["client"] is True


def test_a_read_only_disk_is_one_line(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "ro") as disk:
        home = disk / "home"
        assert_one_line(start_client(home), f"cannot write {home}: Read-only file system")
