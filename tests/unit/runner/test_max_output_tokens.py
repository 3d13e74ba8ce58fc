"""--max-output-tokens N: the cap (llama-server -n) for requests that name none, from the CLI
through placement's specs to llama-server's argv (services/cli, placement/processes.py,
runner/spec.py, runner/commands.py). The real node's behaviour is checked in
tests/integration/agents/test_agent_launchers.py, whose node runs with it."""

from __future__ import annotations

import pytest

from services.cli.mesh_llm import build_parser
from services.placement.plan import ModelAssignment, Role
from services.placement.processes import desired_processes
from services.proto.meshllm.runner.v1 import runner_pb2
from services.runner.commands import build_argv
from services.runner.spec import InvalidSpec, ProcessKind, ProcessSpec
from tests.unit.runner.test_commands_by_kind import BIN, CHAT, EMBEDDING

GB = 10**9


def spec(max_output_tokens: int) -> ProcessSpec:
    return ProcessSpec(
        key="llama-server/m",
        kind=ProcessKind.LLAMA_SERVER,
        model="m",
        model_path="/models/m.gguf",
        max_output_tokens=max_output_tokens,
    )


def predict_flags(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, flag in enumerate(argv) if flag in ("-n", "--predict", "--n-predict")]


def test_the_cli_defaults_to_no_cap_and_takes_a_count() -> None:
    assert build_parser().parse_args([]).max_output_tokens == 0
    assert build_parser().parse_args(["--max-output-tokens", "256"]).max_output_tokens == 256


@pytest.mark.parametrize("value", ["lots", "-5", "1.5"])
def test_a_bad_count_is_a_one_line_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--max-output-tokens", value])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "--max-output-tokens" in error and "\n" not in error and "Traceback" not in error


def test_placement_gives_the_cap_to_llama_servers_only() -> None:
    solo = ModelAssignment("small", "/models/small.gguf", GB, Role.SOLO, ("why",))
    worker = ModelAssignment("w", "/models/w.gguf", GB, Role.SPLIT_WORKER, ("why",), host_node_id="h" * 64)
    specs = {s.key: s for s in desired_processes([solo, worker], 0, max_output_tokens=300)}
    assert specs["llama-server/small"].max_output_tokens == 300
    assert specs["rpc-server/w"].max_output_tokens == 0
    assert all(s.max_output_tokens == 0 for s in desired_processes([solo, worker], 0))


def test_llama_server_runs_with_n_only_when_a_cap_is_set() -> None:
    assert predict_flags(build_argv(spec(300), BIN, port=1, cores=2, traits=CHAT)) == ["300"]
    assert predict_flags(build_argv(spec(0), BIN, port=1, cores=2, traits=CHAT)) == []
    # An embedding model generates nothing to cap.
    assert predict_flags(build_argv(spec(300), BIN, port=1, cores=2, traits=EMBEDDING)) == []


def test_the_cap_survives_the_runner_contract_and_a_negative_one_is_refused() -> None:
    assert ProcessSpec.from_proto(spec(300).to_proto()).max_output_tokens == 300
    bad = runner_pb2.ProcessSpec(
        key="llama-server/m",
        kind=runner_pb2.PROCESS_KIND_LLAMA_SERVER,
        model_path="/models/m.gguf",
        max_output_tokens=-1,
    )
    with pytest.raises(InvalidSpec, match="max_output_tokens"):
        ProcessSpec.from_proto(bad)


def test_the_spec_change_restarts_the_server() -> None:
    # ProcessSpec equality decides restarts: a new cap must reach a running llama-server.
    assert spec(300) != spec(0)
