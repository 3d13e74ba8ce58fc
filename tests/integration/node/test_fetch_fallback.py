"""A model the pool hands a node, that no peer has a copy of, comes from the Hub (the catalog's repo).

This machine cannot reach Hugging Face: tests/support/fake_hub.py, a local HTTP server speaking the
Hub's protocol, stands in for it (HF_ENDPOINT), and the node-side code path is the real one
(ModelFetcher -> the catalog's Hub download through huggingface_hub -> the model store).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.placement.fetching import ModelFetcher
from services.placement.plan import format_gb
from tests.support.fake_hub import FakeHub

pytestmark = pytest.mark.integration

PAYLOAD = b"GGUF" + bytes(range(256)) * 2048
# huggingface_hub reads HF_ENDPOINT and HF_HOME at import: the fetcher runs in a child process,
# as it does in the placement service, with the fake Hub in its environment.
FETCH_SCRIPT = """
import asyncio, sys
from pathlib import Path
from services.node.catalog import find_entry
from services.placement.fetching import ModelFetcher
from services.placement.plan import format_gb
from services.placement.pool_messages import downloadable_models, transfer_line
from services.placement.view import DiskFile, MeshNode

async def main() -> None:
    store = Path(sys.argv[1])
    entry = find_entry("Qwen2.5-0.5B")
    failures = []
    on_failure = lambda m, e: failures.append(e)
    fetcher = ModelFetcher(None, store, downloadable_models(store), lambda: None, on_failure)
    peer = MeshNode("p", 1, False, models_on_disk={"other": DiskFile("aa" * 32, 1, "/o.gguf")})
    fetcher.follow([peer], "me", {entry.name: ""})
    for _ in range(400):
        if (store / entry.file_name).exists() or failures:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)  # the last progress report is scheduled from the download's thread
    fetcher.close()
    print("failures:", failures)
    print("progress:", transfer_line(fetcher.transfers[entry.name]))

asyncio.run(main())
"""


def test_no_peer_has_the_file_so_the_catalog_repo_is_used(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with FakeHub() as hub:
        hub.add_repo("Qwen/Qwen2.5-0.5B-Instruct-GGUF", {"qwen2.5-0.5b-instruct-q4_k_m.gguf": PAYLOAD})
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "MESH_LLM_CACHE": str(tmp_path)}
        result = subprocess.run(
            [sys.executable, "-c", FETCH_SCRIPT, str(store)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    assert "failures: []" in result.stdout
    size = format_gb(len(PAYLOAD))
    assert f"progress: fetching from the Hub: {size} of {size}" in result.stdout, result.stdout
    fetched = store / "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    assert fetched.read_bytes() == PAYLOAD
    assert fetched.resolve().name == hashlib.sha256(PAYLOAD).hexdigest()  # an HF cache blob


async def test_no_peer_and_not_in_the_catalog_is_a_clear_failure(tmp_path: Path) -> None:
    failures: list[str] = []
    fetcher = ModelFetcher(None, tmp_path, {}, lambda: None, lambda m, e: failures.append(f"{m}: {e}"))  # type: ignore[arg-type]
    fetcher.follow([], "me", {"m": ""})
    for _ in range(50):
        if failures:
            break
        await asyncio.sleep(0.05)
    fetcher.close()
    assert failures == ["m: no peer has its file and the catalog cannot download it"]
