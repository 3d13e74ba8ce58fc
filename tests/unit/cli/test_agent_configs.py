"""`mesh-llm claude|codex|opencode|pi|goose` (services/cli/agents): the model it picks, the configs it
merges into the user's files (their entries kept), the environment and command it execs, and its
one-line errors. Goose is not on the registries our tests can reach, so its launch is checked here
only (tests/integration/agents runs the other four for real)."""

from __future__ import annotations

import json
import os
import socket
import stat
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.cli.agents import AGENT_NAMES, agent_main
from services.cli.agents.configs import (
    AGENTS,
    Target,
    codex_config_path,
    opencode_argv,
    opencode_config_path,
    pi_config_path,
    plan_claude,
    plan_codex,
    plan_goose,
    plan_opencode,
    plan_pi,
)
from services.cli.agents.errors import BadModelList, ConfigUnmergeable, NoChatModel, UnknownModel
from services.cli.agents.launch import command_line, launch, write_config
from services.cli.agents.models import MeshModel, choose_model, parse_models
from services.cli.mesh_llm import main as mesh_llm_main

HOME = Path("/home/u")


def model(id: str, **ext: Any) -> dict[str, Any]:
    meshllm = {"state": "ready", "local": True, "nodes": ["n1"], **ext}
    return {"id": id, "object": "model", "owned_by": "mesh-llm", "meshllm": meshllm}


def listing(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"object": "list", "data": list(entries)}


def mesh_model(id: str = "smol", context: int | None = 8192) -> MeshModel:
    return MeshModel(id=id, state="ready", kind="chat", local=True, nodes=("n1",), context_tokens=context)


def target(context: int | None = 8192, port: int = 9337) -> Target:
    chosen = mesh_model("smol", context)
    return Target(port=port, model=chosen, models=(chosen, mesh_model("big", 32768)))


# Choosing the model


def test_the_best_ready_chat_model_more_nodes_then_local_then_name() -> None:
    models = parse_models(
        listing(
            model("embed", kind="embedding", nodes=["a", "b", "c"]),
            model("loading-one", state="loading", nodes=["a", "b", "c"]),
            model("zeta", nodes=["a", "b"], local=False),
            model("alpha", nodes=["a", "b"], local=False),
            model("Beta", nodes=["a", "b"], local=True),
            model("solo", nodes=["a"]),
        )
    )
    assert choose_model(models, None).id == "Beta"  # 2 nodes and local beats 2 nodes remote
    assert choose_model([m for m in models if m.id != "Beta"], None).id == "alpha"  # then by name
    windows = parse_models(listing(model("a", context_tokens=8192), model("b", context_tokens=32768)))
    assert choose_model(windows, None).id == "b"  # a larger window before the name
    assert choose_model([m for m in models if m.id == "loading-one"], None).id == "loading-one"


def test_a_missing_kind_is_chat_and_context_is_read_when_present() -> None:
    old, new = parse_models(listing(model("old"), model("new", kind="chat", context_tokens=8192)))
    assert old.is_chat and old.context_tokens is None
    assert new.is_chat and new.context_tokens == 8192
    [unknown] = parse_models(listing(model("u", kind="unknown", context_tokens=0)))
    assert unknown.is_chat and unknown.context_tokens is None


def test_model_named_by_the_user() -> None:
    models = parse_models(listing(model("SmolLM2"), model("bge", kind="embedding")))
    assert choose_model(models, "SmolLM2").id == "SmolLM2"
    assert choose_model(models, "smollm2").id == "SmolLM2"
    with pytest.raises(UnknownModel, match="no model 'nope' \\(chat models: SmolLM2\\)"):
        choose_model(models, "nope")
    with pytest.raises(UnknownModel, match="bge is not a chat model"):
        choose_model(models, "bge")


def test_no_chat_model_and_no_model_list() -> None:
    with pytest.raises(NoChatModel, match="mesh-llm load MODEL"):
        choose_model(parse_models(listing(model("bge", kind="rerank"))), None)
    with pytest.raises(NoChatModel):
        choose_model((), None)
    for payload in ({"detail": "Not Found"}, [1], {"data": [{"object": "model"}]}):
        with pytest.raises(BadModelList):
            parse_models(payload)


# opencode


def test_opencode_keeps_the_users_config_and_replaces_only_our_provider() -> None:
    path = Path("/home/u/.config/opencode/opencode.json")
    existing = {
        "theme": "tokyonight",
        "model": "anthropic/claude-sonnet",
        "provider": {"ollama": {"npm": "@ai-sdk/openai-compatible"}, "mesh": {"options": {"baseURL": "old"}}},
    }
    plan = plan_opencode(target(), path, json.dumps(existing), ["run", "hi"])
    [edit] = plan.edits
    written = json.loads(edit.text)
    assert edit.path == path and edit.had_user_entries
    assert written["theme"] == "tokyonight" and written["model"] == "anthropic/claude-sonnet"
    assert written["provider"]["ollama"] == {"npm": "@ai-sdk/openai-compatible"}
    assert written["provider"]["mesh"] == {
        "npm": "@ai-sdk/openai-compatible",
        "name": "mesh-llm",
        "options": {"baseURL": "http://127.0.0.1:9337/v1", "apiKey": "mesh-llm"},
        "models": {
            "smol": {"name": "smol", "limit": {"context": 8192, "output": 2048}},
            "big": {"name": "big", "limit": {"context": 32768, "output": 8192}},
        },
    }
    assert plan.argv == ("opencode", "run", "-m", "mesh/smol", "hi")


def test_opencode_new_file_and_unknown_context() -> None:
    plan = plan_opencode(target(context=None), Path("/x/opencode.json"), None, [])
    [edit] = plan.edits
    written = json.loads(edit.text)
    assert not edit.had_user_entries
    assert written["$schema"] == "https://opencode.ai/config.json"
    assert written["provider"]["mesh"]["models"]["smol"] == {"name": "smol"}  # no guessed window


def test_opencode_refuses_to_rewrite_what_it_cannot_read() -> None:
    path = Path("/x/opencode.json")
    with pytest.raises(ConfigUnmergeable, match="not plain JSON"):
        plan_opencode(target(), path, '{"provider": {} // a comment\n}', [])
    with pytest.raises(ConfigUnmergeable, match="'provider' is not an object"):
        plan_opencode(target(), path, '{"provider": []}', [])


@pytest.mark.parametrize(
    ("args", "argv"),
    [
        ((), ("opencode", "-m", "mesh/smol")),
        (("run", "hi"), ("opencode", "run", "-m", "mesh/smol", "hi")),
        (("--continue",), ("opencode", "-m", "mesh/smol", "--continue")),
        (("./project",), ("opencode", "-m", "mesh/smol", "./project")),
        (("models", "mesh"), ("opencode", "models", "mesh")),  # takes no -m
        (("run", "-m", "other/x", "hi"), ("opencode", "run", "-m", "other/x", "hi")),  # the user's choice
    ],
)
def test_opencode_command_line(args: tuple[str, ...], argv: tuple[str, ...]) -> None:
    assert opencode_argv(target(), args) == argv


def test_config_paths_follow_the_agents_own_variables() -> None:
    assert opencode_config_path({}, HOME) == HOME / ".config/opencode/opencode.json"
    assert opencode_config_path({"XDG_CONFIG_HOME": "/xdg"}, HOME) == Path("/xdg/opencode/opencode.json")
    assert opencode_config_path({"OPENCODE_CONFIG": "/c/oc.json"}, HOME) == Path("/c/oc.json")
    assert pi_config_path({}, HOME) == HOME / ".pi/agent/models.json"
    assert pi_config_path({"PI_CODING_AGENT_DIR": "/p"}, HOME) == Path("/p/models.json")
    assert codex_config_path({}, HOME) == HOME / ".codex/mesh.config.toml"
    assert codex_config_path({"CODEX_HOME": "/c"}, HOME) == Path("/c/mesh.config.toml")


# pi


def test_pi_keeps_other_providers() -> None:
    existing = {"providers": {"ollama": {"baseUrl": "http://localhost:11434/v1", "models": [{"id": "q"}]}}}
    plan = plan_pi(target(), Path("/p/models.json"), json.dumps(existing), ["-p", "hi"])
    [edit] = plan.edits
    written = json.loads(edit.text)
    assert edit.had_user_entries
    assert written["providers"]["ollama"] == existing["providers"]["ollama"]
    mesh = written["providers"]["mesh"]
    assert mesh["baseUrl"] == "http://127.0.0.1:9337/v1"
    assert mesh["api"] == "openai-completions" and mesh["apiKey"] == "mesh-llm"
    assert mesh["models"][0] == {
        "id": "smol",
        "name": "smol",
        "reasoning": False,
        "input": ["text"],
        "contextWindow": 8192,
        "maxTokens": 2048,
    }
    assert plan.argv == ("pi", "--provider", "mesh", "--model", "smol", "-p", "hi")
    assert plan_pi(target(), Path("/p/m.json"), None, ["--model", "x"]).argv == ("pi", "--model", "x")


# codex


def test_codex_profile_file_keeps_the_users_keys_and_never_touches_config_toml() -> None:
    path = Path("/home/u/.codex/mesh.config.toml")
    existing = (
        'approval_policy = "never"\nmodel = "old"\nmodel_context_window = 128000\n'
        '[model_providers.mesh]\nbase_url = "http://127.0.0.1:1/v1"\n'
        '[model_providers.other]\nbase_url = "https://example.com/v1"\n'
    )
    plan = plan_codex(target(context=None), path, existing, ["exec", "hi"])
    [edit] = plan.edits
    assert edit.path == path and edit.had_user_entries
    written = tomllib.loads(edit.text)
    assert written["approval_policy"] == "never"
    assert written["model_providers"]["other"] == {"base_url": "https://example.com/v1"}
    assert "model_context_window" not in written  # the old model's window is not this one's
    assert written["model"] == "smol" and written["model_provider"] == "mesh"
    assert written["model_providers"]["mesh"] == {
        "name": "mesh-llm",
        "base_url": "http://127.0.0.1:9337/v1",
        "wire_api": "responses",
        "env_key": "MESH_LLM_API_KEY",
        "env_key_instructions": "start codex with `mesh-llm codex`, or export MESH_LLM_API_KEY=mesh-llm",
    }
    assert plan.argv == ("codex", "--profile", "mesh", "exec", "hi")
    assert plan.env == {"MESH_LLM_API_KEY": "mesh-llm"}
    fresh = plan_codex(target(), path, None, [])
    assert tomllib.loads(fresh.edits[0].text)["model_context_window"] == 8192
    assert not fresh.edits[0].had_user_entries
    with pytest.raises(ConfigUnmergeable, match="not valid TOML"):
        plan_codex(target(), path, "model = ", [])


# Claude Code and goose: environment only


def test_claude_environment() -> None:
    plan = plan_claude(target(port=4000), None, None, ["-p", "hi"])
    assert plan.argv == ("claude", "-p", "hi") and not plan.edits
    user = {"ANTHROPIC_API_KEY": "sk-ant-real", "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "64", "PATH": "/bin"}
    env = plan.environment(user)
    assert "ANTHROPIC_API_KEY" not in env  # the user's real key never goes to the mesh
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:4000"
    assert env["ANTHROPIC_AUTH_TOKEN"] == "mesh-llm"
    for name in (
        "ANTHROPIC_MODEL",
        "ANTHROPIC_SMALL_FAST_MODEL",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL",
        "ANTHROPIC_DEFAULT_SONNET_MODEL",
        "ANTHROPIC_DEFAULT_OPUS_MODEL",
        "CLAUDE_CODE_SUBAGENT_MODEL",
    ):
        assert env[name] == "smol"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "8192"
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "64"  # the user's own setting wins over ours
    assert env["PATH"] == "/bin"


def test_goose_environment() -> None:
    plan = plan_goose(target(), None, None, [])
    assert plan.argv == ("goose", "session") and not plan.edits
    env = plan.environment({})
    assert env == {
        "GOOSE_PROVIDER": "openai",
        "GOOSE_MODEL": "smol",
        "OPENAI_HOST": "http://127.0.0.1:9337",
        "OPENAI_BASE_PATH": "v1/chat/completions",
        "OPENAI_API_KEY": "mesh-llm",
        "GOOSE_CONTEXT_LIMIT": "8192",
    }
    assert plan_goose(target(), None, None, ["run", "-t", "hi"]).argv == ("goose", "run", "-t", "hi")


def test_every_agent_is_dispatched_by_mesh_llm() -> None:
    assert {"claude", "codex", "opencode", "pi", "goose"} == AGENT_NAMES == set(AGENTS)


# Writing files


def test_write_is_atomic_keeps_one_backup_of_the_users_file_and_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "opencode.json"
    path.parent.mkdir()
    path.write_text('{"theme": "mine"}')
    path.chmod(0o640)
    first = plan_opencode(target(), path, path.read_text(), []).edits[0]
    assert write_config(first, '{"theme": "mine"}') == tmp_path / "conf" / "opencode.json.bak"
    assert json.loads(path.read_text())["theme"] == "mine"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    second = plan_opencode(target(port=4000), path, path.read_text(), []).edits[0]
    assert write_config(second, path.read_text()) is None  # the first backup stays the user's original
    assert (tmp_path / "conf" / "opencode.json.bak").read_text() == '{"theme": "mine"}'
    assert sorted(p.name for p in path.parent.iterdir()) == ["opencode.json", "opencode.json.bak"]


def test_no_backup_of_a_file_that_only_ever_held_ours(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    write_config(plan_pi(target(), path, None, []).edits[0], None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = plan_pi(target(port=4000), path, path.read_text(), []).edits[0]
    assert write_config(again, path.read_text()) is None
    assert not (tmp_path / "models.json.bak").exists()
    assert write_config(again, again.text) is None  # unchanged: not even rewritten


# The command end to end (a node answered by httpx's mock transport; exec captured)


def node_answering(payload: Any, status: int = 200) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models"
        return httpx.Response(status, json=payload)

    return httpx.MockTransport(answer)


def agent_on_path(tmp_path: Path, name: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    binary = bin_dir / name
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return {"HOME": str(tmp_path / "home"), "PATH": str(bin_dir)}


def test_dry_run_prints_the_file_and_the_command_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = {"HOME": str(tmp_path / "home"), "PATH": str(tmp_path / "empty")}
    transport = node_answering(listing(model("smol", kind="chat", context_tokens=8192)))
    code = launch("pi", ["--dry-run", "--port", "4000", "--", "-p", "hi"], environ, transport)
    out = capsys.readouterr().out
    assert code == 0
    config = tmp_path / "home/.pi/agent/models.json"
    assert f"would write {config}:" in out
    assert '"baseUrl": "http://127.0.0.1:4000/v1"' in out
    assert "would run: pi --provider mesh --model smol -p hi" in out
    assert "(pi is not installed: install it with `npm install -g @mariozechner/pi-coding-agent`)" in out
    assert not (tmp_path / "home").exists()


def test_launch_writes_then_execs_the_agent_with_its_environment(tmp_path: Path) -> None:
    environ = {**agent_on_path(tmp_path, "codex"), "ANTHROPIC_API_KEY": "kept for codex"}
    execs: list[tuple[str, list[str], dict[str, str]]] = []
    transport = node_answering(listing(model("smol")))
    launch("codex", ["--", "exec", "hi"], environ, transport, lambda *call: execs.append(call))
    [(binary, argv, env)] = execs
    assert binary == str(tmp_path / "bin/codex")
    assert argv == ["codex", "--profile", "mesh", "exec", "hi"]
    assert env["MESH_LLM_API_KEY"] == "mesh-llm" and env["ANTHROPIC_API_KEY"] == "kept for codex"
    profile = tomllib.loads((tmp_path / "home/.codex/mesh.config.toml").read_text())
    assert profile["model_providers"]["mesh"]["base_url"] == "http://127.0.0.1:9337/v1"
    assert not (tmp_path / "home/.codex/config.toml").exists()


def test_command_line_is_a_shell_command() -> None:
    plan = plan_claude(target(), None, None, ["-p", "say hi"])
    line = command_line(plan, {"ANTHROPIC_API_KEY": "x", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"})
    assert line.startswith("env -u ANTHROPIC_API_KEY ANTHROPIC_BASE_URL=http://127.0.0.1:9337 ")
    assert "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC" not in line  # already so
    assert line.endswith(" claude -p 'say hi'")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_one_line_errors_and_their_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    port = _closed_port()
    assert agent_main("opencode", ["--port", str(port)]) == 1
    assert capsys.readouterr().err == (
        f"mesh-llm opencode: no mesh-llm node on 127.0.0.1:{port} — start one with `mesh-llm`\n"
    )
    monkeypatch.setattr("services.cli.agents.launch.fetch_models", lambda port, key=None, transport=None: ())
    assert agent_main("codex", []) == 1
    assert "the mesh serves no chat model yet" in capsys.readouterr().err
    smol = parse_models(listing(model("smol")))
    monkeypatch.setattr(
        "services.cli.agents.launch.fetch_models", lambda port, key=None, transport=None: smol
    )
    assert agent_main("claude", ["--", "-p", "hi"]) == 127
    assert capsys.readouterr().err == (
        "mesh-llm claude: claude is not installed (not on PATH); "
        "install it with `npm install -g @anthropic-ai/claude-code`\n"
    )
    assert not list(tmp_path.iterdir())  # nothing written when the agent cannot run


def test_a_config_it_cannot_merge_is_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    environ = agent_on_path(tmp_path, "opencode")
    config = tmp_path / "home/.config/opencode/opencode.json"
    config.parent.mkdir(parents=True)
    config.write_text("{ // jsonc\n}")
    with pytest.raises(ConfigUnmergeable):
        launch("opencode", [], environ, node_answering(listing(model("smol"))), lambda *call: None)
    assert config.read_text() == "{ // jsonc\n}"


def test_an_answer_that_is_not_a_model_list(tmp_path: Path) -> None:
    environ = agent_on_path(tmp_path, "pi")
    with pytest.raises(BadModelList, match="HTTP 404; is it a mesh-llm node"):
        launch("pi", [], environ, node_answering({"detail": "no"}, status=404), lambda *call: None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["pi", "--bogus"],
            "mesh-llm pi: unrecognized arguments: --bogus (pi's own arguments go after `--`)",
        ),
        (["codex", "--port", "http"], "mesh-llm codex: argument --port: 'http' is not a port number"),
        (["claude", "--model"], "mesh-llm claude: argument --model: expected one argument"),
        (["opencode", "run", "hi"], "mesh-llm opencode: unrecognized arguments: run hi"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        mesh_llm_main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err


def test_help_names_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        mesh_llm_main(["opencode", "--help"])
    assert exited.value.code == 0
    assert "Exit 127: opencode is not installed" in capsys.readouterr().out


def test_the_key_in_the_environment_is_the_one_agents_send(tmp_path: Path) -> None:
    environ = {**agent_on_path(tmp_path, "opencode"), "MESH_LLM_API_KEY": "sk-node"}

    def node_with_a_key(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != "Bearer sk-node":
            return httpx.Response(401, json={"error": {"message": "no key"}})
        return httpx.Response(200, json=listing(model("smol")))

    with pytest.raises(BadModelList, match="wants its API key: set MESH_LLM_API_KEY"):
        launch("opencode", [], agent_on_path(tmp_path, "opencode"), httpx.MockTransport(node_with_a_key))
    launch("opencode", [], environ, httpx.MockTransport(node_with_a_key), lambda *call: None)
    written = json.loads((tmp_path / "home/.config/opencode/opencode.json").read_text())
    assert written["provider"]["mesh"]["options"]["apiKey"] == "sk-node"
    assert os.environ.get("MESH_LLM_API_KEY") != "sk-node"  # the test's own environment untouched


def test_the_key_of_a_node_started_with_api_key_is_read_from_its_home(tmp_path: Path) -> None:
    from services.node.config import save_api_key

    node_home = tmp_path / "node"
    save_api_key(node_home, "sk-from-home")
    seen: list[str | None] = []

    def node(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json=listing(model("smol")))

    environ = agent_on_path(tmp_path, "opencode")
    launch("opencode", ["--home", str(node_home)], environ, httpx.MockTransport(node), lambda *call: None)
    assert seen == ["Bearer sk-from-home"]
    written = json.loads((tmp_path / "home/.config/opencode/opencode.json").read_text())
    assert written["provider"]["mesh"]["options"]["apiKey"] == "sk-from-home"
