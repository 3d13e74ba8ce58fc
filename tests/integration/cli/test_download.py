"""`mesh-llm download` against a local HTTP server: this machine cannot reach Hugging Face, so a real
HTTP server on 127.0.0.1 (with Range support, like the hub's CDN) stands in for it."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from services.cli.download import DownloadError, download_file

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class RangeHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        start = 0
        if (ranged := self.headers.get("Range")) and ranged.startswith("bytes="):
            start = int(ranged[6:].split("-")[0])
            self.send_response(206)
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        type(self).served_bytes += len(body)

    served_bytes = 0

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    RangeHandler.served_bytes = 0
    yield f"http://127.0.0.1:{httpd.server_address[1]}/model.gguf"
    httpd.shutdown()


def test_download_verifies_size_and_hash(server: str, tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    assert download_file(server, target, len(PAYLOAD), digest, Console(quiet=True)) == target
    assert target.read_bytes() == PAYLOAD
    assert not target.with_name("m.gguf.part").exists()


def test_interrupted_download_resumes_where_it_stopped(server: str, tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    target.with_name("m.gguf.part").write_bytes(PAYLOAD[:300_000])
    download_file(server, target, len(PAYLOAD), "", Console(quiet=True))
    assert target.read_bytes() == PAYLOAD
    assert RangeHandler.served_bytes == len(PAYLOAD) - 300_000


def test_corrupt_download_is_rejected_and_not_installed(server: str, tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download_file(server, target, len(PAYLOAD), "0" * 64, Console(quiet=True))
    assert not target.exists()
