"""Threads come from physical cores, not logical CPUs (services/runner/cpu_cores.py), and
--threads N overrides them for every llama-server and rpc-server."""

from __future__ import annotations

import os

import pytest

from services.cli.mesh_llm import build_parser
from services.placement.plan import ModelAssignment, Role
from services.placement.processes import desired_processes
from services.runner.commands import build_argv
from services.runner.cpu_cores import count_physical_cores, fallback_cores, physical_cores
from services.runner.spec import ProcessKind, ProcessSpec
from tests.unit.runner.test_commands_by_kind import BIN, CHAT

GB = 10**9


def test_smt_siblings_share_one_core() -> None:
    # 4 cores with 2 hyperthreads each (Linux numbers siblings n and n+4).
    siblings = {cpu: f"{cpu % 4},{cpu % 4 + 4}" for cpu in range(8)}
    assert count_physical_cores(siblings, range(8)) == 4


def test_without_smt_every_cpu_is_a_core() -> None:
    # What a 2-vCPU cloud VM shows: each CPU its own core (halving gave llama.cpp one thread).
    assert count_physical_cores({0: "0\n", 1: "1\n"}, [0, 1]) == 2


def test_only_the_cpus_this_process_may_use_count() -> None:
    # A container pinned to CPUs 0 and 4 (one core's two siblings) and 1: two cores.
    siblings = {cpu: f"{cpu % 4},{cpu % 4 + 4}" for cpu in range(8)}
    assert count_physical_cores(siblings, [0, 4, 1]) == 2


def test_ranges_and_unknown_cpus() -> None:
    assert count_physical_cores({0: "0-1", 1: "0-1", 2: "2-3", 3: "2-3"}, range(4)) == 2
    assert count_physical_cores({}, [5, 6]) == 2  # no topology for them: each its own


@pytest.mark.parametrize(("logical", "cores"), [(0, 4), (2, 2), (4, 4), (8, 4), (16, 8)])
def test_the_fallback_is_llama_cpps_guess(logical: int, cores: int) -> None:
    assert fallback_cores(logical) == cores


def test_this_machine_counts_at_least_one_core_and_no_more_than_its_cpus() -> None:
    assert 1 <= physical_cores() <= len(os.sched_getaffinity(0))


def test_threads_flag_defaults_to_automatic() -> None:
    assert build_parser().parse_args([]).threads == 0
    assert build_parser().parse_args(["--threads", "3"]).threads == 3


@pytest.mark.parametrize("value", ["two", "-1", "5000"])
def test_a_bad_thread_count_is_a_one_line_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--threads", value])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "--threads" in error and "\n" not in error


def test_threads_reach_every_process_and_win_over_the_cores() -> None:
    solo = ModelAssignment("small", "/models/small.gguf", GB, Role.SOLO, ("why",))
    worker = ModelAssignment("w", "/models/w.gguf", GB, Role.SPLIT_WORKER, ("why",), host_node_id="h" * 64)
    specs = {s.key: ProcessSpec.from_proto(s) for s in desired_processes([solo, worker], 0, threads=3)}
    for spec in specs.values():
        argv = build_argv(spec, BIN, port=1, cores=8, traits=CHAT)
        assert argv[argv.index("-t") + 1] == "3", spec.key
    automatic = ProcessSpec(key="llama-server/m", kind=ProcessKind.LLAMA_SERVER, model_path="/m.gguf")
    argv = build_argv(automatic, BIN, port=1, cores=8, traits=CHAT)
    assert argv[argv.index("-t") + 1] == "8"
