"""A model the pool hands a node, that no peer has a copy of, comes from the catalog's URL instead.

This machine cannot reach Hugging Face: a real HTTP server on 127.0.0.1 stands in for it, and the
node-side code path is the real one (ModelFetcher → the catalog download → the model store).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from services.cli.download import download_file
from services.placement.fetching import ModelFetcher
from services.placement.view import DiskFile, MeshNode

pytestmark = pytest.mark.integration

PAYLOAD = b"GGUF" + bytes(range(256)) * 2048


class FileHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hub() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FileHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/model.gguf"
    server.shutdown()


async def test_no_peer_has_the_file_so_the_catalog_url_is_used(hub: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    download = functools.partial(download_file, hub, store / "m.gguf", len(PAYLOAD), sha, Console(quiet=True))
    failures: list[str] = []
    fetcher = ModelFetcher(None, store, {"m": download}, lambda: None, lambda m, e: failures.append(e))  # type: ignore[arg-type]
    # A peer has a file under another name only: nothing to fetch over the mesh for "m".
    peer = MeshNode("p", 1, False, models_on_disk={"other": DiskFile("aa" * 32, 1, "/o.gguf")})
    fetcher.follow([peer], "me", {"m": ""})
    for _ in range(100):
        if (store / "m.gguf").exists():
            break
        await asyncio.sleep(0.05)
    fetcher.close()
    assert (store / "m.gguf").read_bytes() == PAYLOAD
    assert not (store / "m.gguf.part").exists()
    assert failures == []


async def test_no_peer_and_no_url_is_a_clear_failure(tmp_path: Path) -> None:
    failures: list[str] = []
    fetcher = ModelFetcher(None, tmp_path, {}, lambda: None, lambda m, e: failures.append(f"{m}: {e}"))  # type: ignore[arg-type]
    fetcher.follow([], "me", {"m": ""})
    for _ in range(50):
        if failures:
            break
        await asyncio.sleep(0.05)
    fetcher.close()
    assert failures == ["m: no peer has its file and the catalog has no URL for it"]
