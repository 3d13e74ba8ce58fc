"""--device: a wrong name is one line listing the real ones; the argv it gives llama-server and
ggml-rpc-server is one the pinned binaries really run with."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import httpx

from services.node.devices import device_names, list_devices
from services.runner.commands import build_argv
from services.runner.gguf_meta import ModelTraits
from services.runner.spec import ProcessKind, ProcessSpec
from tests.support.node import accepts, free_port, wait_until

MESH_LLM = Path(sys.executable).parent / "mesh-llm"
UP_TIMEOUT_S = 60.0


def test_a_wrong_device_is_one_line_listing_the_real_ones(tmp_path: Path, llama_bin_dir: Path) -> None:
    result = subprocess.run(
        [
            str(MESH_LLM),
            "--home",
            str(tmp_path),
            "--model",
            "smollm2-135m",
            "--device",
            "NOPE0",
            "--port",
            str(free_port()),
            "--console",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    real = device_names(list_devices(llama_bin_dir))
    assert "NOPE0" in result.stderr and ", ".join(real) in result.stderr


def run_until_listening(argv: list[str], port: int, log: Path, ready) -> None:  # type: ignore[no-untyped-def]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:

        def up() -> bool:
            assert process.poll() is None, log.read_text()
            return ready()

        wait_until(up, UP_TIMEOUT_S, f"{shlex.join(argv)} to answer", fatal=(AssertionError,))
    finally:
        process.kill()
        process.wait()


def test_the_binaries_run_on_the_cpu_device(tmp_path: Path, llama_bin_dir: Path, tiny_gguf: Path) -> None:
    port = free_port()
    rpc = ProcessSpec(key="rpc-server/t", kind=ProcessKind.RPC_SERVER, model="t", device="CPU")
    run_until_listening(
        build_argv(rpc, llama_bin_dir, port, 2), port, tmp_path / "rpc.log", lambda: accepts(port)
    )
    port = free_port()
    server = ProcessSpec(
        key="llama-server/t",
        kind=ProcessKind.LLAMA_SERVER,
        model="t",
        model_path=str(tiny_gguf),
        context_size=256,
        device="CPU",
    )
    argv = build_argv(server, llama_bin_dir, port, 2, ModelTraits())
    assert argv[argv.index("--device") + 1] == "none"

    def healthy() -> bool:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200

    run_until_listening(argv, port, tmp_path / "server.log", healthy)
