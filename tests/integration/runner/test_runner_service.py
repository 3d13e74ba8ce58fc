"""The runner service as a real process: gRPC over its Unix socket, real llama.cpp children."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from services.node.config import NodeConfig
from services.proto.meshllm.runner.v1 import runner_pb2 as pb
from services.proto.meshllm.runner.v1 import runner_pb2_grpc
from services.runner.backoff import QUICK_FAILURES_BEFORE_GIVING_UP, RESTART_DELAY_MAX_S
from services.runner.commands import LLAMA_SERVER_FLAGS, RPC_SERVER_FLAGS

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[3]
RUNNER_START_TIMEOUT_S = 20.0
READY_TIMEOUT_S = 60.0
GONE_TIMEOUT_S = 10.0
# A corrupt model fails 5 times with 0.5+1+2+4 s of backoff in between.
FAILED_TIMEOUT_S = 45.0
POLL_S = 0.05
# More SIGKILLs than the quick failures that end a broken model; each restart waits its backoff
# (0.5, 1, 2, 4, 8, then 10 s) plus a load.
KILL_LOOP_KILLS = QUICK_FAILURES_BEFORE_GIVING_UP + 1
KILL_LOOP_RESTART_TIMEOUT_S = RESTART_DELAY_MAX_S + READY_TIMEOUT_S
LLAMA_KEY = "llama-server/tiny"
RPC_KEY = "rpc-server/tiny"
LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net/tcp prints it
TCP_LISTEN_STATE = "0A"


def poll(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def pid_gone(pid: int) -> bool:
    """Dead or a zombie (a container's init may never reap what PDEATHSIG killed)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        return not _kill0(pid)
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _kill0(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def listen_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp) with a socket listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == TCP_LISTEN_STATE:
                found.add(address)
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def llama_spec(model_path: Path | str, key: str = LLAMA_KEY, context_size: int = 0) -> pb.ProcessSpec:
    return pb.ProcessSpec(
        key=key,
        kind=pb.PROCESS_KIND_LLAMA_SERVER,
        model="tiny",
        model_path=str(model_path),
        context_size=context_size,
    )


def rpc_spec(key: str = RPC_KEY) -> pb.ProcessSpec:
    return pb.ProcessSpec(key=key, kind=pb.PROCESS_KIND_RPC_SERVER, model="tiny")


def by_key(status: pb.RunnerStatus) -> dict[str, pb.ProcessStatus]:
    return {p.spec.key: p for p in status.processes}


@dataclass
class RunnerProcess:
    home: Path
    process: subprocess.Popen[bytes]
    stub: runner_pb2_grpc.RunnerStub
    log_path: Path

    def apply(self, *specs: pb.ProcessSpec) -> pb.RunnerStatus:
        return self.stub.Apply(pb.ApplyRequest(processes=list(specs)), timeout=30)

    def wait_for(self, predicate: Callable[[pb.RunnerStatus], bool], timeout_s: float) -> pb.RunnerStatus:
        """Follow Watch until `predicate` holds; fail with the last status seen."""
        last = None
        stream = self.stub.Watch(pb.WatchRequest(), timeout=timeout_s)
        try:
            for status in stream:
                last = status
                if predicate(status):
                    return status
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
        finally:
            stream.cancel()
        raise AssertionError(f"runner status never matched; last:\n{last}\nrunner log: {self.log_path}")

    def wait_state(self, key: str, state: int, timeout_s: float = READY_TIMEOUT_S) -> pb.ProcessStatus:
        status = self.wait_for(lambda s: key in by_key(s) and by_key(s)[key].state == state, timeout_s)
        return by_key(status)[key]

    def recorded_pids(self) -> list[int]:
        path = self.home / "run" / "runner-pids.json"
        return json.loads(path.read_text()) if path.exists() else []


@pytest.fixture
def runner(tmp_path: Path, llama_bin_dir: Path) -> Iterator[RunnerProcess]:
    home = tmp_path / "node"
    NodeConfig(home=home, llama_bin_dir=str(llama_bin_dir), log_level="debug").save()
    log_path = tmp_path / "runner.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.runner", "--home", str(home)],
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    channel = grpc.insecure_channel(f"unix://{home / 'run' / 'runner.sock'}")
    runner = RunnerProcess(home, process, runner_pb2_grpc.RunnerStub(channel), log_path)
    try:
        grpc.channel_ready_future(channel).result(timeout=RUNNER_START_TIMEOUT_S)
        yield runner
    finally:
        children = runner.recorded_pids()
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=GONE_TIMEOUT_S + 5)
        channel.close()
        for pid in children:  # belt and braces: never leave llama.cpp behind a failed test
            if not pid_gone(pid):
                os.killpg(pid, signal.SIGKILL)


def chat(process: pb.ProcessStatus) -> str:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8}
    response = httpx.post(
        f"http://127.0.0.1:{process.port}/v1/chat/completions",
        json={**body, "temperature": 0},
        headers={"authorization": f"Bearer {process.api_key}"},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"])


def test_pinned_build_accepts_every_flag_we_pass(llama_bin_dir: Path) -> None:
    for binary, flags in (("llama-server", LLAMA_SERVER_FLAGS), ("ggml-rpc-server", RPC_SERVER_FLAGS)):
        result = subprocess.run(
            [str(llama_bin_dir / binary), "--help"], capture_output=True, text=True, timeout=30
        )
        help_words = set((result.stdout + result.stderr).replace(",", " ").split())
        assert set(flags) <= help_words, f"{binary} lacks {set(flags) - help_words}"


def test_llama_server_serves_chat_and_is_restarted_after_kill(runner: RunnerProcess, tiny_gguf: Path) -> None:
    runner.apply(llama_spec(tiny_gguf))
    ready = runner.wait_state(LLAMA_KEY, pb.PROCESS_STATE_READY)
    assert ready.host == "127.0.0.1" and ready.port > 0 and ready.restarts == 0
    assert listen_addresses(ready.port) == {LOOPBACK_HEX}
    first = chat(ready)
    assert first and chat(ready) == first  # deterministic at temperature 0
    # Any local web page can reach 127.0.0.1: without the runner's key llama-server answers nothing.
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 2}
    url = f"http://127.0.0.1:{ready.port}/v1/chat/completions"
    assert httpx.post(url, json=body, timeout=30).status_code == 401
    wrong = {"authorization": "Bearer not-the-key"}
    assert httpx.post(url, json=body, headers=wrong, timeout=30).status_code == 401
    assert ready.api_key and ready.api_key not in " ".join(
        Path(f"/proc/{ready.pid}/cmdline").read_text().split("\0")
    )

    os.kill(ready.pid, signal.SIGKILL)
    again = runner.wait_for(
        lambda s: (
            by_key(s)[LLAMA_KEY].state == pb.PROCESS_STATE_READY and by_key(s)[LLAMA_KEY].pid != ready.pid
        ),
        READY_TIMEOUT_S,
    )
    restarted = by_key(again)[LLAMA_KEY]
    assert restarted.restarts == 1
    assert "SIGKILL" in restarted.last_error
    assert chat(restarted) == first


def test_a_kill_loop_backs_off_but_never_gives_up(runner: RunnerProcess, tiny_gguf: Path) -> None:
    """An OOM killer (or a user) SIGKILLing llama-server again and again says nothing about the
    model: more kills than the quick failures that fail a broken model, and it is still restarted."""
    runner.apply(llama_spec(tiny_gguf))
    ready = runner.wait_state(LLAMA_KEY, pb.PROCESS_STATE_READY)
    for kills in range(1, KILL_LOOP_KILLS + 1):
        os.kill(ready.pid, signal.SIGKILL)
        previous = ready.pid
        again = runner.wait_for(
            lambda s, previous=previous: (  # type: ignore[misc]
                by_key(s)[LLAMA_KEY].state == pb.PROCESS_STATE_READY and by_key(s)[LLAMA_KEY].pid != previous
            ),
            KILL_LOOP_RESTART_TIMEOUT_S,
        )
        ready = by_key(again)[LLAMA_KEY]
        assert ready.restarts == kills
    assert ready.last_error == "killed by SIGKILL (out of memory?)"


def test_apply_keeps_unchanged_and_restarts_changed(runner: RunnerProcess, tiny_gguf: Path) -> None:
    runner.apply(llama_spec(tiny_gguf))
    before = runner.wait_state(LLAMA_KEY, pb.PROCESS_STATE_READY)
    runner.apply(llama_spec(tiny_gguf))
    assert by_key(runner.stub.GetStatus(pb.GetStatusRequest()))[LLAMA_KEY].pid == before.pid

    runner.apply(llama_spec(tiny_gguf, context_size=1024))
    after = runner.wait_state(LLAMA_KEY, pb.PROCESS_STATE_READY)
    assert after.pid != before.pid and after.spec.context_size == 1024
    assert pid_gone(before.pid)


def test_rpc_server_listens_on_loopback_only_and_apply_empty_stops_all(
    runner: RunnerProcess, tiny_gguf: Path
) -> None:
    runner.apply(llama_spec(tiny_gguf), rpc_spec())
    rpc = runner.wait_state(RPC_KEY, pb.PROCESS_STATE_READY)
    llama = runner.wait_state(LLAMA_KEY, pb.PROCESS_STATE_READY)
    assert listen_addresses(rpc.port) == {LOOPBACK_HEX}
    assert sorted(runner.recorded_pids()) == sorted([rpc.pid, llama.pid])

    status = runner.apply()
    assert list(status.processes) == []
    assert pid_gone(rpc.pid) and pid_gone(llama.pid)
    assert runner.recorded_pids() == []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_children_never_outlive_the_runner(
    runner: RunnerProcess, tiny_gguf: Path, sig: signal.Signals
) -> None:
    runner.apply(llama_spec(tiny_gguf), rpc_spec())
    pids = [runner.wait_state(key, pb.PROCESS_STATE_READY).pid for key in (LLAMA_KEY, RPC_KEY)]
    runner.process.send_signal(sig)
    runner.process.wait(timeout=GONE_TIMEOUT_S + 5)
    poll(lambda: all(pid_gone(pid) for pid in pids), GONE_TIMEOUT_S, f"children {pids} to die")
    if sig is signal.SIGTERM:
        assert runner.process.returncode == 0


def test_corrupt_model_ends_failed_with_a_readable_error(runner: RunnerProcess, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"this is not a gguf file" * 100)
    runner.apply(llama_spec(corrupt))
    failed = runner.wait_state(LLAMA_KEY, pb.PROCESS_STATE_FAILED, FAILED_TIMEOUT_S)
    assert failed.last_error.startswith("exited with code")
    assert "invalid magic" in failed.last_error
    assert failed.pid == 0 and failed.restarts == 4


def test_gemma_without_embedded_template_chats_with_gemma_turns(
    runner: RunnerProcess, gemma_path: Path
) -> None:
    runner.apply(llama_spec(gemma_path, key="llama-server/gemma3-270m"))
    ready = runner.wait_state("llama-server/gemma3-270m", pb.PROCESS_STATE_READY)
    messages = [{"role": "user", "content": "Hi"}]
    rendered = httpx.post(
        f"http://127.0.0.1:{ready.port}/apply-template",
        json={"messages": messages},
        headers={"authorization": f"Bearer {ready.api_key}"},
        timeout=30,
    )
    assert rendered.json()["prompt"] == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert chat(ready).strip()


def test_missing_model_fails_at_once(runner: RunnerProcess, tmp_path: Path) -> None:
    runner.apply(llama_spec(tmp_path / "nowhere.gguf"))
    failed = runner.wait_state(LLAMA_KEY, pb.PROCESS_STATE_FAILED, READY_TIMEOUT_S)
    assert "does not exist" in failed.last_error and failed.restarts == 0


def test_invalid_specs_are_rejected(runner: RunnerProcess, tiny_gguf: Path) -> None:
    for specs in ([llama_spec(tiny_gguf), llama_spec(tiny_gguf)], [pb.ProcessSpec(key="x")]):
        with pytest.raises(grpc.RpcError) as caught:
            runner.apply(*specs)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_leftovers_of_a_previous_runner_are_reaped(tmp_path: Path, llama_bin_dir: Path) -> None:
    leftover = subprocess.Popen(
        [str(llama_bin_dir / "ggml-rpc-server"), "-H", "127.0.0.1", "-p", str(free_port())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    home = tmp_path / "node"
    (home / "run").mkdir(parents=True)
    (home / "run" / "runner-pids.json").write_text(json.dumps([leftover.pid, os.getpid()]))
    NodeConfig(home=home, llama_bin_dir=str(llama_bin_dir)).save()
    runner = subprocess.Popen([sys.executable, "-m", "services.runner", "--home", str(home)], cwd=REPO_ROOT)
    try:
        leftover.wait(timeout=RUNNER_START_TIMEOUT_S)
        assert leftover.returncode == -signal.SIGKILL
        assert not pid_gone(os.getpid())  # a recorded pid that is not llama.cpp is left alone
    finally:
        runner.terminate()
        runner.wait(timeout=GONE_TIMEOUT_S)
        if leftover.poll() is None:
            leftover.kill()
