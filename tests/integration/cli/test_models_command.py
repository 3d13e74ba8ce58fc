"""`mesh-llm models installed|show|search|delete`, and `--model ORG/REPO:QUANT` on real nodes.

The Hub cannot be reached from the test machines: tests/support/fake_hub.py, a local HTTP server
speaking the Hub's API and download protocol, stands in for the internet via HF_ENDPOINT. The nodes
are real (supervisord, llama-server from the pinned build, QUIC between them).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.runner.binaries import BIN_DIR_ENV
from tests.support.fake_hub import FakeHub
from tests.support.node import RunningNode, free_port, wait_until
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.integration

MESH_LLM = Path(sys.executable).parent / "mesh-llm"
REPO = "acme/Tiny-GGUF"
MODEL = "Tiny-Q4_K_M"  # what the node calls the file: its stem
CLI_TIMEOUT_S = 120
MESH_VIEW_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("hub") / "t.gguf").read_bytes()


@pytest.fixture
def hub(
    tiny_bytes: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, llama_bin_dir: Path
) -> Iterator[FakeHub]:
    """The fake Hub, and this process's environment pointing at it (nodes inherit it). The cache
    is the test's own (its model store), so the nodes are told where the pinned build is."""
    with FakeHub() as fake:
        fake.add_repo(REPO, {f"{MODEL}.gguf": tiny_bytes, "Tiny-Q8_0.gguf": tiny_bytes + b"\0"})
        for key in [k for k in os.environ if k.startswith("HF_")]:
            monkeypatch.delenv(key)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setenv("MESH_LLM_CACHE", str(tmp_path / "cache"))
        monkeypatch.setenv(BIN_DIR_ENV, str(llama_bin_dir))
        yield fake


def models(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MESH_LLM), "models", *argv], capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )


def test_installed_show_and_delete_without_a_node(hub: FakeHub, tmp_path: Path, tiny_bytes: bytes) -> None:
    store = tmp_path / "store"
    where = ("--models-dir", str(store), "--home", str(tmp_path / "no-node"))
    fetched = subprocess.run(
        [str(MESH_LLM), "download", f"{REPO}:Q4_K_M", "--models-dir", str(store)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert fetched.returncode == 0, fetched.stderr
    listed = models("installed", "--json", *where)
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    assert report["mesh_view"] is False
    [entry] = report["models"]
    assert entry["name"] == MODEL and entry["bytes"] == len(tiny_bytes)
    assert entry["sha256"] == hashlib.sha256(tiny_bytes).hexdigest()
    assert entry["source"] == f"hf:{REPO}"
    table = models("installed", *where).stdout
    assert MODEL in table and "no node running: other nodes' copies unknown" in table
    # A GGUF in the HF cache that this store does not link (another store's, or `hf download`'s).
    elsewhere = ["download", f"hf://{REPO}/Tiny-Q8_0.gguf", "--models-dir", str(tmp_path / "other")]
    assert (
        subprocess.run([str(MESH_LLM), *elsewhere], capture_output=True, timeout=CLI_TIMEOUT_S).returncode
        == 0
    )
    both = {m["name"]: m for m in json.loads(models("installed", "--json", *where).stdout)["models"]}
    assert set(both) == {MODEL, "Tiny-Q8_0"}
    assert both["Tiny-Q8_0"]["source"].startswith(f"hf:{REPO} (HF cache only")
    assert both["Tiny-Q8_0"]["sha256"] == hashlib.sha256(tiny_bytes + b"\0").hexdigest()

    shown = models("show", MODEL, "--json", *where)
    assert shown.returncode == 0, shown.stderr
    facts = json.loads(shown.stdout)
    # From the GGUF header: the tiny model is all-F32 whatever its file name says.
    assert facts["architecture"] == "llama" and facts["layers"] == 4 and facts["context_tokens"] == 4096
    assert facts["quant"] == "F32" and facts["chat_template"] is True

    deleted = models("delete", MODEL, *where)
    assert deleted.returncode == 0, deleted.stderr
    assert not (store / f"{MODEL}.gguf").exists()
    blob = (
        tmp_path / "hf" / "hub" / "models--acme--Tiny-GGUF" / "blobs" / hashlib.sha256(tiny_bytes).hexdigest()
    )
    assert not blob.exists()  # the HF cache copy went too: the space is really freed
    again = models("show", MODEL, *where)
    assert again.returncode == 1 and "is not on disk" in again.stderr


def test_search_lists_catalog_and_hub_matches(hub: FakeHub) -> None:
    found = models("search", "tiny", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["hub"] == [REPO]
    catalog = json.loads(models("search", "qwen2.5", "--json").stdout)["catalog"]
    assert {"Qwen2.5-0.5B", "Qwen2.5-72B"} <= {e["name"] for e in catalog}


def test_search_without_the_hub_still_lists_the_catalog(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    found = models("search", "llama")
    assert found.returncode == 0, found.stderr
    assert "Llama-3.3-70B" in found.stdout and "offline mode" in found.stdout


def test_nodes_serve_a_hub_model_and_installed_shows_who_has_it(hub: FakeHub, tmp_path: Path) -> None:
    first = RunningNode(tmp_path / "a", free_port(), free_port(), ["--model", f"{REPO}:Q4_K_M"]).start()
    try:
        first.wait_ready([MODEL])
        second = RunningNode(
            tmp_path / "b", free_port(), free_port(), ["--join", first.invite(), "--model", REPO]
        ).start()
        try:
            second.wait_ready([MODEL])
            where = ("--home", str(first.home), "--models-dir", str(first.home / "models"))

            def second_listed() -> bool:
                report = json.loads(models("installed", "--json", *where).stdout)
                return any(second.status().node_id[:8] in n for m in report["models"] for n in m["nodes"])

            wait_until(second_listed, MESH_VIEW_TIMEOUT_S, "the second node's copy in `models installed`")
            refused = models("delete", MODEL, *where)
            assert refused.returncode == 1
            assert refused.stderr.strip().splitlines() == [
                f"mesh-llm models: {MODEL} is being served by the node at {first.home}: "
                f"`mesh-llm drop {MODEL}` first, or --force"
            ]
            assert (first.home / "models" / f"{MODEL}.gguf").exists()
            forced = models("delete", MODEL, "--force", *where)
            assert forced.returncode == 0, forced.stderr
            assert not (first.home / "models" / f"{MODEL}.gguf").exists()
        finally:
            second.stop()
    finally:
        first.stop()
