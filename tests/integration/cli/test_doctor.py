"""`mesh-llm doctor` on this machine: real probes (llama.cpp, sockets, disk, a running node)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.node import RunningNode, free_port, wait_until

MESH_LLM = Path(sys.executable).parent / "mesh-llm"
CHECK_NAMES = ("llama.cpp", "accelerators", "memory", "model cache", "clock skew", "open files limit")


def doctor(*args: str) -> tuple[int, dict[str, dict[str, str]], str]:
    result = subprocess.run(
        [str(MESH_LLM), "doctor", "--json", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] == (result.returncode == 0)
    return result.returncode, {c["name"]: c for c in report["checks"]}, result.stderr


def test_a_healthy_machine_passes(tmp_path: Path) -> None:
    api, console = free_port(), free_port()
    code, checks, _ = doctor(
        "--home",
        str(tmp_path / "home"),
        "--port",
        str(api),
        "--console",
        str(console),
        "--models-dir",
        str(tmp_path / "models"),
    )
    assert code == 0, checks
    assert all(name in checks for name in CHECK_NAMES)
    assert checks[f"API port {api}"]["verdict"] == "ok"
    assert checks["mesh UDP reachable"]["verdict"] in ("ok", "warn")  # warn: a machine with no network
    assert checks["clock skew"]["verdict"] == "skip" and "no node running" in checks["clock skew"]["detail"]
    assert checks["accelerators"]["verdict"] == "ok"


def test_problems_fail_with_a_fix_each(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        code, checks, _ = doctor(
            "--home",
            str(tmp_path / "home"),
            "--port",
            str(taken),
            "--console",
            str(free_port()),
            "--models-dir",
            str(not_a_dir / "models"),
            "--device",
            "NOPE0",
        )
    assert code == 1
    for name in (f"API port {taken}", "model cache", "accelerators"):
        assert checks[name]["verdict"] == "fail" and checks[name]["fix"], checks[name]
    assert "CPU" in checks["accelerators"]["detail"]  # the real device names


def test_the_screen_is_one_line_per_check(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(MESH_LLM),
            "doctor",
            "--home",
            str(tmp_path),
            "--port",
            str(free_port()),
            "--console",
            str(free_port()),
            "--models-dir",
            str(tmp_path / "models"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout
    assert "llama.cpp" in result.stdout and "nothing wrong found" in result.stdout
    bad = subprocess.run([str(MESH_LLM), "doctor", "--port", "x"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_with_a_running_node_its_ports_and_peers_are_its_own(tmp_path: Path, tiny_gguf: Path) -> None:
    node = RunningNode(tmp_path / "node", free_port(), free_port(), ["--model", str(tiny_gguf)]).start()
    peer: RunningNode | None = None
    try:
        node.wait_ready(["tiny-llama"])
        code, checks, _ = doctor("--home", str(node.home))
        assert code == 0, checks
        assert checks[f"API port {node.api_port}"]["detail"] == "in use by the running node"
        assert checks["clock skew"]["verdict"] == "skip" and "no peers" in checks["clock skew"]["detail"]
        # A peer on the same clock: the skew check compares with it through the node's gossip view.
        peer = RunningNode(tmp_path / "peer", free_port(), free_port(), ["--client", "--join", node.invite()])
        peer.start()

        def skew_checked() -> dict[str, str]:
            clock = doctor("--home", str(node.home))[1]["clock skew"]
            return clock if clock["verdict"] != "skip" else {}

        clock = wait_until(skew_checked, 60, "doctor to compare clocks with the peer")
        assert clock["verdict"] == "ok" and "1 peer" in clock["detail"], clock
    finally:
        if peer is not None:
            peer.stop()
        node.stop()
