"""`mesh-llm doctor`'s verdicts, from the facts its probes report (doctor_checks.py is pure)."""

from __future__ import annotations

from services.cli.doctor_checks import (
    CLOCK_SKEW_WARN_S,
    Check,
    Verdict,
    check_accelerators,
    check_clock_skew,
    check_llama_build,
    check_memory,
    check_model_cache,
    check_open_files,
    check_port,
    check_udp_loopback,
    exit_code,
)
from services.node.devices import LlamaDevice

H200 = LlamaDevice("CUDA0", "NVIDIA H200", 143_000 << 20, 142_000 << 20)


def test_a_missing_build_fails_with_the_command_that_builds_it() -> None:
    check = check_llama_build("", "llama.cpp is not built")
    assert check.verdict is Verdict.FAIL and "make llama" in check.fix
    assert check_llama_build("/b", "").verdict is Verdict.OK


def test_a_gpu_the_build_cannot_see_is_a_failure() -> None:
    check = check_accelerators((), "", nvidia_gpus=2, device_flag="")
    assert check.verdict is Verdict.FAIL and "CPU build" in check.detail
    assert check_accelerators((), "", 0, "").verdict is Verdict.OK  # a CPU-only machine is fine
    seen = check_accelerators((H200,), "", 1, "CUDA0")
    assert seen.verdict is Verdict.OK and "CUDA0 (NVIDIA H200" in seen.detail
    wrong = check_accelerators((H200,), "", 1, "CUDA7", "--device CUDA7: no such device here")
    assert wrong.verdict is Verdict.FAIL and "CUDA7" in wrong.detail
    assert check_accelerators(None, "no build", 0, "").verdict is Verdict.SKIP


def test_memory() -> None:
    assert check_memory(0, None, "detected").verdict is Verdict.FAIL
    assert check_memory(10**9, 1.0, "detected").verdict is Verdict.WARN
    ok = check_memory(24 * 10**9, None, "--device CUDA0")
    assert ok.verdict is Verdict.OK and "24.0 GB" in ok.detail


def test_a_port_in_use_fails_unless_the_node_itself_holds_it() -> None:
    taken = check_port("API", 9337, free=False, node_running=False, flag="--port")
    assert taken.verdict is Verdict.FAIL and "--port" in taken.fix
    assert check_port("API", 9337, False, True, "--port").verdict is Verdict.OK
    assert check_port("API", 9337, True, False, "--port").verdict is Verdict.OK


def test_udp_that_does_not_reach_itself_fails() -> None:
    missed = check_udp_loopback(4000, ["10.0.0.2:4000"], ["192.168.1.5:4000"], False)
    assert missed.verdict is Verdict.FAIL and "192.168.1.5" in missed.detail and "firewall" in missed.fix
    assert check_udp_loopback(4000, ["10.0.0.2:4000"], [], False).verdict is Verdict.OK
    assert check_udp_loopback(4000, [], [], False).verdict is Verdict.WARN
    assert check_udp_loopback(4000, [], [], True).verdict is Verdict.SKIP


def test_model_cache() -> None:
    assert check_model_cache("/m", False, 0, "Read-only file system").verdict is Verdict.FAIL
    assert check_model_cache("/m", True, 10**9, "").verdict is Verdict.WARN
    assert check_model_cache("/m", True, 10**12, "").verdict is Verdict.OK


def test_clock_skew_needs_a_mesh_and_warns_on_a_peer_ahead() -> None:
    skipped = check_clock_skew(False, {})
    assert skipped.verdict is Verdict.SKIP and skipped.detail
    assert check_clock_skew(True, {}).verdict is Verdict.SKIP
    ahead = check_clock_skew(True, {"bob": CLOCK_SKEW_WARN_S + 25, "amy": -3.0})
    assert ahead.verdict is Verdict.WARN and "bob +30s" in ahead.detail and "amy" not in ahead.detail
    assert check_clock_skew(True, {"amy": 0.2}).verdict is Verdict.OK


def test_a_low_hard_descriptor_limit_warns() -> None:
    assert check_open_files(1024, 4096).verdict is Verdict.WARN
    assert check_open_files(1024, 1 << 20).verdict is Verdict.OK


def test_exit_code_is_nonzero_only_for_failures() -> None:
    ok, warn, fail = (Check("x", v, "") for v in (Verdict.OK, Verdict.WARN, Verdict.FAIL))
    assert exit_code([ok, warn]) == 0
    assert exit_code([ok, fail]) == 1
    assert fail.to_json() == {"name": "x", "verdict": "fail", "detail": "", "fix": ""}
