"""`mesh-llm service`: the unit it writes passes systemd's own validator, its ExecStart really runs a
node that stops cleanly (no llama.cpp left), and a machine without systemd gets one line.

There is no systemd running here (a container), so the test runs the unit's ExecStart itself and
stops it the way KillMode=mixed does: SIGTERM to the main process, SIGKILL only after TimeoutStopSec.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from services.cli.node_status import mesh_view
from services.cli.service_units import STOP_TIMEOUT_S
from services.node.hardware import system_memory_bytes
from services.node.home import NodeHome
from tests.support.node import accepts, free_port, pid_alive, wait_until

BIN = Path(sys.executable).parent
MESH_LLM = BIN / "mesh-llm"
NODE_UP_TIMEOUT_S = 120.0
GONE_TIMEOUT_S = 10.0


def dry_run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MESH_LLM), "service", "install", "--dry-run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
        check=False,
    )


def unit_text(output: str) -> str:
    """The unit between the `# would write PATH:` and `# would run:` lines of --dry-run."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# would write "))
    end = next(i for i, line in enumerate(lines) if line == "# would run:")
    return "\n".join(lines[start + 1 : end]) + "\n"


def exec_start_argv(unit: str) -> list[str]:
    """ExecStart as systemd splits it, for the quoting service_units.systemd_quote emits."""
    (line,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    return [
        word.replace("%%", "%").replace("$$", "$") for word in shlex.split(line.removeprefix("ExecStart="))
    ]


def unit_environment(unit: str) -> dict[str, str]:
    pairs = [
        shlex.split(line.removeprefix("Environment="))[0]
        for line in unit.splitlines()
        if line.startswith("Environment=")
    ]
    return dict(pair.replace("%%", "%").split("=", 1) for pair in pairs)


def processes_of(home: Path) -> list[tuple[int, str]]:
    """Every process that belongs to the node at `home` (its services and llama.cpp inherit
    MESH_LLM_HOME), with its command line."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or not pid_alive(int(proc.name)):
            continue
        try:
            if f"MESH_LLM_HOME={home}".encode() not in (proc / "environ").read_bytes():
                continue
            found.append((int(proc.name), (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path, tiny_gguf: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: `make systemd-tools` installs Debian's systemd package"
    result = dry_run("--model", str(tiny_gguf), "--home", str(tmp_path / "home"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    unit = tmp_path / "mesh-llm.service"
    unit.write_text(unit_text(result.stdout))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    # --user: checked as the user manager would load it; XDG_RUNTIME_DIR stands in for a login session.
    check = subprocess.run(
        [analyze, "verify", "--user", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        check=False,
    )
    assert check.returncode == 0 and not check.stderr.strip(), check.stderr
    # The validator can fail: an unknown setting is a complaint.
    unit.write_text(unit.read_text().replace("KillMode=mixed", "KillMode=mixed\nKillMod=oops"))
    check = subprocess.run(
        [analyze, "verify", "--user", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        check=False,
    )
    assert "KillMod" in check.stderr


def test_no_systemd_is_one_line_and_nonzero(tmp_path: Path) -> None:
    # A PATH with only this install's own tools: as on a machine with no systemctl at all.
    env = {**os.environ, "PATH": str(BIN)}
    result = subprocess.run(
        [str(MESH_LLM), "service", "install", "--model", "smollm2-135m", "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1
    assert "no systemd" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / ".config").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "9"], "install needs what the node does"),
        (["--model", "m", "--api-key", "k"], "--api-key-file"),
        (["--model", "m", "--device", "NOPE0"], "llama.cpp sees CPU"),
        (["--model", "m", "--bogus"], "unrecognized arguments"),
        (["--model", "m", "--api-key-file", "/nonexistent/key"], "cannot read it"),
    ],
)
def test_bad_install_flags_are_one_line_and_exit_2(flags: list[str], message: str, tmp_path: Path) -> None:
    result = dry_run(*flags, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_exec_start_runs_a_node_that_stops_with_its_llama_cpp(tmp_path: Path, tiny_gguf: Path) -> None:
    home, api, console = tmp_path / "home", free_port(), free_port()
    model = tmp_path / "tiny.gguf"
    shutil.copyfile(tiny_gguf, model)
    flags = ["--model", "tiny.gguf", "--device", "CPU", "--port", str(api), "--console", str(console)]
    flags += ["--bind-ip", "127.0.0.1", "--home", "home", "--models-dir", "home/models"]
    result = dry_run(*flags, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    unit = unit_text(result.stdout)
    argv = exec_start_argv(unit)
    assert argv[0] == str(MESH_LLM) and str(model) in argv and str(home) in argv  # relative paths resolved
    # As systemd starts it: its own working directory and environment, not the installing shell's.
    (workdir,) = [
        line.removeprefix("WorkingDirectory=") for line in unit.splitlines() if "WorkingDirectory=" in line
    ]
    home.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ["HOME"], **unit_environment(unit)}
    if "MESH_LLM_LLAMA_BIN" in os.environ:
        assert env["MESH_LLM_LLAMA_BIN"] == os.environ["MESH_LLM_LLAMA_BIN"]  # passed on by the unit
    log = (tmp_path / "journal.txt").open("wb")
    node = subprocess.Popen(
        argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:

        def serving() -> bool:
            assert node.poll() is None, (tmp_path / "journal.txt").read_text()
            listed = httpx.get(f"http://127.0.0.1:{api}/v1/models", timeout=5).json()["data"]
            # The ready screen (in the journal) is last: the node is up on both ports and serving.
            ready = "Ctrl-C stops the node" in (tmp_path / "journal.txt").read_text()
            return ready and any(m["id"] == "tiny" for m in listed) and accepts(console)

        wait_until(serving, NODE_UP_TIMEOUT_S, "the service's node to serve tiny", fatal=(AssertionError,))
        servers = [cmd for _, cmd in processes_of(home) if "llama-server" in cmd]
        assert len(servers) == 1 and "--device none" in servers[0]  # --device CPU: no offload
        # Memory advertised follows the device: all of system RAM for CPU.
        assert mesh_view(NodeHome(home)).nodes[0].vram_bytes == system_memory_bytes()
        node.send_signal(signal.SIGTERM)  # KillMode=mixed: the main process first, alone
        assert node.wait(timeout=STOP_TIMEOUT_S) == 0  # a clean stop: Restart=on-failure leaves it stopped
        wait_until(lambda: not processes_of(home), GONE_TIMEOUT_S, "every node process to be gone")
    finally:
        if node.poll() is None:
            node.kill()
        for pid, _ in processes_of(home):
            os.kill(pid, signal.SIGKILL)
