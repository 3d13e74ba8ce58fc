"""`mesh-llm download` / `--model` by Hugging Face name, through the real huggingface_hub client.

The Hub cannot be reached from the test machines: tests/support/fake_hub.py, a local HTTP server
speaking the Hub's API and download protocol (repo info with LFS sha256s, resolve redirects to a
CDN on another origin, Range requests, the Hub's error headers), stands in for the internet via
HF_ENDPOINT. Everything on our side is the real CLI in a real process.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_hub import COMMIT, FakeHub
from tests.support.tiny_gguf import write_tiny_llama_gguf

MESH_LLM = Path(sys.executable).parent / "mesh-llm"
MIB = 1 << 20
# Over huggingface_hub's 10 MiB read chunk, so a transfer cut at 15 MiB leaves a partial on disk.
BIG_BYTES = 24 * MIB
CUT_AT_BYTES = 15 * MIB
REPO = "acme/Tiny-GGUF"
DOWNLOAD_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("hub") / "t.gguf").read_bytes()


@pytest.fixture
def hub(tiny_bytes: bytes) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.add_repo(
            REPO,
            {
                "Tiny-Q4_K_M.gguf": tiny_bytes,
                "Tiny-Q8_0.gguf": tiny_bytes + b"\0" * 64,
                "mmproj-Tiny-F16.gguf": b"GGUF projector",
                "README.md": b"# tiny",
            },
        )
        yield fake


@pytest.fixture
def env(hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return clean | {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf"),
        "MESH_LLM_CACHE": str(tmp_path / "mesh"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def run(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MESH_LLM), *argv], env=env, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S
    )


def store(tmp_path: Path) -> Path:
    return tmp_path / "mesh" / "models"


def test_repo_and_quant_download_into_the_hf_cache_and_the_store(
    env: dict[str, str], hub: FakeHub, tmp_path: Path, tiny_bytes: bytes
) -> None:
    result = run(env, "download", f"{REPO}:q4_k_m")
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path == store(tmp_path) / "Tiny-Q4_K_M.gguf"
    assert f"{len(tiny_bytes) / 1000:.1f}/{len(tiny_bytes) / 1000:.1f} kB" in result.stderr  # progress
    assert path.read_bytes() == tiny_bytes
    # The standard HF cache layout, so `hf` tools and other programs share the file.
    snapshot = tmp_path / "hf" / "hub" / "models--acme--Tiny-GGUF" / "snapshots" / COMMIT / "Tiny-Q4_K_M.gguf"
    assert path.resolve() == snapshot.resolve()
    assert snapshot.resolve().name == hashlib.sha256(tiny_bytes).hexdigest()
    assert (tmp_path / "hf" / "hub" / "models--acme--Tiny-GGUF" / "refs" / "main").read_text() == COMMIT
    # A second run downloads nothing.
    before = len(hub.requests("cdn"))
    assert run(env, "download", f"{REPO}:Q4_K_M").returncode == 0
    assert len(hub.requests("cdn")) == before


def test_a_bare_repo_means_q4_k_m_and_hf_uri_names_one_file(env: dict[str, str], tmp_path: Path) -> None:
    bare = run(env, "download", REPO)
    assert bare.returncode == 0, bare.stderr
    assert Path(bare.stdout.strip()).name == "Tiny-Q4_K_M.gguf"
    uri = run(env, "download", f"hf://{REPO}/Tiny-Q8_0.gguf")
    assert uri.returncode == 0, uri.stderr
    assert Path(uri.stdout.strip()).name == "Tiny-Q8_0.gguf"


def test_a_quant_not_in_the_repo_lists_the_ones_that_are(env: dict[str, str]) -> None:
    result = run(env, "download", f"{REPO}:Q5_K_M")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == ["mesh-llm download: acme/Tiny-GGUF has no Q5_K_M GGUF; quants in the repo: Q4_K_M, Q8_0"]


def test_a_repo_that_does_not_exist_is_one_line(env: dict[str, str], hub: FakeHub) -> None:
    result = run(env, "download", "acme/Nope-GGUF")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"mesh-llm download: no model repo acme/Nope-GGUF on {hub.url} (if it is private, set HF_TOKEN)"
    ]
    started = run(env, "--model", "acme/Nope-GGUF:Q4_K_M")
    assert started.returncode == 1  # not 2: the name was well formed, the download failed
    assert started.stderr.count("\n") == 1 and "no model repo acme/Nope-GGUF" in started.stderr
    assert "Traceback" not in started.stderr


def test_a_private_repo_needs_hf_token_and_the_cdn_never_sees_it(
    env: dict[str, str], hub: FakeHub, tiny_bytes: bytes
) -> None:
    hub.add_repo("acme/Private-GGUF", {"Private-Q4_K_M.gguf": tiny_bytes}, private_token="hf_secret")
    refused = run(env, "download", "acme/Private-GGUF")
    assert refused.returncode == 1
    assert "no model repo acme/Private-GGUF" in refused.stderr and "set HF_TOKEN" in refused.stderr
    before = len(hub.requests("hub"))
    result = run(env | {"HF_TOKEN": "hf_secret"}, "download", "acme/Private-GGUF")
    assert result.returncode == 0, result.stderr
    with_token = [r for r in hub.requests("hub")[before:] if "Private" in r.path]
    assert with_token and all(r.authorization == "Bearer hf_secret" for r in with_token)
    assert hub.requests("cdn") and all(r.authorization == "" for r in hub.requests("cdn"))


def test_a_split_gguf_downloads_every_part_side_by_side(
    env: dict[str, str], hub: FakeHub, tmp_path: Path
) -> None:
    parts = {f"Big-Q4_K_M/Big-Q4_K_M-{i:05d}-of-00003.gguf": f"part {i}".encode() * 1000 for i in (1, 2, 3)}
    hub.add_repo("acme/Big-GGUF", parts)
    result = run(env, "download", "acme/Big-GGUF:Q4_K_M")
    assert result.returncode == 0, result.stderr
    first = Path(result.stdout.strip())
    assert first.name == "Big-Q4_K_M-00001-of-00003.gguf"
    for name, data in parts.items():
        assert (first.parent / Path(name).name).read_bytes() == data


def test_a_cut_download_fails_in_one_line_keeps_the_partial_and_resumes(
    env: dict[str, str], hub: FakeHub, tmp_path: Path
) -> None:
    big = b"GGUF" + os.urandom(BIG_BYTES - 4)
    sha = hashlib.sha256(big).hexdigest()
    hub.add_repo("acme/Huge-GGUF", {"Huge-Q4_K_M.gguf": big})
    # The connection drops at 15 MiB, and then the network stays down (huggingface_hub's own
    # retries find nothing to resume from).
    hub.state.cut_after_bytes = CUT_AT_BYTES
    hub.state.down_after_cut = True
    failed = run(env, "download", "acme/Huge-GGUF")
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert "download interrupted" in lines[-1] and "run the same command again to resume" in lines[-1]
    assert "Traceback" not in failed.stderr
    blob_dir = tmp_path / "hf" / "hub" / "models--acme--Huge-GGUF" / "blobs"
    partial = blob_dir / f"{sha}.incomplete"
    kept = partial.stat().st_size
    assert 10 * MIB <= kept <= CUT_AT_BYTES
    assert big.startswith(partial.read_bytes())
    # The network is back: the same command asks only for the rest, and the file checks out.
    hub.state.outage = False
    resumed = run(env, "download", "acme/Huge-GGUF")
    assert resumed.returncode == 0, resumed.stderr
    assert Path(resumed.stdout.strip()).read_bytes() == big
    last_get = [r for r in hub.requests("cdn") if r.method == "GET"][-1]
    assert last_get.range == f"bytes={kept}-"
    assert not partial.exists()


def _sigint_as_in_a_terminal() -> None:
    """Ctrl-C reaches a command run from a terminal with SIGINT's default action. A test run started
    in the background by a non-interactive shell (`make test &`, CI) has SIGINT ignored, and children
    inherit that (Python then installs no KeyboardInterrupt at all): give the CLI what a terminal does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_ctrl_c_keeps_the_partial_and_the_next_run_resumes(
    env: dict[str, str], hub: FakeHub, tmp_path: Path
) -> None:
    big = b"GGUF" + os.urandom(BIG_BYTES - 4)
    sha = hashlib.sha256(big).hexdigest()
    hub.add_repo("acme/Slow-GGUF", {"Slow-Q4_K_M.gguf": big})
    # The transfer stops sending at 15 MiB (huggingface_hub has written its first 10 MiB by then)
    # and waits: the download is certainly in flight when Ctrl-C comes, however loaded the machine.
    hub.state.stall_after_bytes = CUT_AT_BYTES
    partial = tmp_path / "hf" / "hub" / "models--acme--Slow-GGUF" / "blobs" / f"{sha}.incomplete"
    proc = subprocess.Popen(
        [str(MESH_LLM), "download", "acme/Slow-GGUF"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_as_in_a_terminal,
    )
    deadline = time.monotonic() + DOWNLOAD_TIMEOUT_S
    while not (partial.exists() and partial.stat().st_size >= 10 * MIB) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert partial.exists() and partial.stat().st_size >= 10 * MIB, "the stalled transfer never wrote 10 MiB"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=DOWNLOAD_TIMEOUT_S)
    assert proc.returncode == 130
    assert stderr.strip().splitlines()[-1] == (
        "mesh-llm download: interrupted; the partial download is kept: run it again to resume"
    )
    assert "Traceback" not in stderr
    kept = partial.stat().st_size
    assert kept >= 10 * MIB and big.startswith(partial.read_bytes())
    hub.state.release.set()
    resumed = run(env, "download", "acme/Slow-GGUF")
    assert resumed.returncode == 0, resumed.stderr
    assert Path(resumed.stdout.strip()).read_bytes() == big
    assert [r for r in hub.requests("cdn") if r.method == "GET"][-1].range == f"bytes={kept}-"


def test_offline_or_unreachable_uses_the_cache_and_says_so_when_it_cannot(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert run(env, "download", f"{REPO}:Q4_K_M").returncode == 0
    offline = env | {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    cached = run(offline, "download", f"{REPO}:Q4_K_M")
    assert cached.returncode == 0, cached.stderr
    assert Path(cached.stdout.strip()).name == "Tiny-Q4_K_M.gguf"
    # Not offline, but the Hub is down: the cached copy still serves.
    unreachable = run(env | {"HF_ENDPOINT": "http://127.0.0.1:9"}, "download", f"{REPO}:Q4_K_M")
    assert unreachable.returncode == 0, unreachable.stderr
    missing = run(offline, "download", "acme/Other-GGUF")

    assert missing.returncode == 1
    assert "offline mode (HF_HUB_OFFLINE) is on, and acme/Other-GGUF is not in the HF cache" in missing.stderr


def test_a_corrupt_transfer_is_rejected_and_not_installed(
    env: dict[str, str], hub: FakeHub, tmp_path: Path
) -> None:
    hub.add_repo("acme/Bad-GGUF", {"Bad-Q4_K_M.gguf": b"GGUF good bytes"})
    sha = hashlib.sha256(b"GGUF good bytes").hexdigest()
    hub.state.blobs[sha] = b"GGUF evil bytes"  # the CDN serves other bytes of the same size
    result = run(env, "download", "acme/Bad-GGUF")
    assert result.returncode == 1
    assert "sha256" in result.stderr and "removed" in result.stderr
    assert not (store(tmp_path) / "Bad-Q4_K_M.gguf").exists()
    assert not (tmp_path / "hf" / "hub" / "models--acme--Bad-GGUF" / "blobs" / sha).exists()


def test_a_catalog_name_with_draft_downloads_both(
    env: dict[str, str], hub: FakeHub, tiny_bytes: bytes
) -> None:
    hub.add_repo("bartowski/Qwen2.5-7B-Instruct-GGUF", {"Qwen2.5-7B-Instruct-Q4_K_M.gguf": tiny_bytes})
    hub.add_repo("Qwen/Qwen2.5-0.5B-Instruct-GGUF", {"qwen2.5-0.5b-instruct-q4_k_m.gguf": tiny_bytes + b"d"})
    result = run(env, "download", "7b", "--draft")
    assert result.returncode == 0, result.stderr
    names = [Path(line).name for line in result.stdout.split()]
    assert names == ["Qwen2.5-7B-Instruct-Q4_K_M.gguf", "qwen2.5-0.5b-instruct-q4_k_m.gguf"]
