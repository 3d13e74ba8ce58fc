"""What `mesh-llm <agent>` writes and runs for each coding agent (pure: text in, text out).

Each agent gets this node as a provider named `mesh` in its own config, merged into the user's
file (their other entries are kept; only ours is added or replaced), plus the environment and the
command line that select it. Nothing here reads or writes files: `launch.py` does, around this.

Checked against opencode-ai 1.18.33, @mariozechner/pi-coding-agent 0.73.1, @openai/codex 0.171.0
and @anthropic-ai/claude-code 2.1.332 (the versions `make agents` pins). Goose is not on the
registries our tests can reach: its launch is environment only, checked by unit tests alone.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from services.cli.agents.errors import ConfigUnmergeable
from services.cli.agents.models import MeshModel

PROVIDER_ID = "mesh"
PROVIDER_NAME = "mesh-llm"
# The node needs no key today; agents insist on one. A node key, once there is one, comes in here.
DUMMY_API_KEY = "mesh-llm"
API_KEY_ENV = "MESH_LLM_API_KEY"
# An agent reserves this share of the window for its reply, at most MAX_OUTPUT_TOKENS.
OUTPUT_SHARE_OF_CONTEXT = 4
MAX_OUTPUT_TOKENS = 8192
OPENCODE_SCHEMA = "https://opencode.ai/config.json"
# opencode subcommands that take no -m (the default TUI command and `run` do).
OPENCODE_OTHER_COMMANDS = frozenset(
    "completion acp mcp attach debug providers auth agent upgrade uninstall serve web models stats "
    "export import github pr session plugin plug db".split()
)
CODEX_PROFILE = "mesh"
GOOSE_INSTALL_URL = "https://block.github.io/goose/docs/getting-started/installation"


@dataclass(frozen=True)
class Target:
    """The node an agent is pointed at, and the model it is launched with."""

    port: int
    model: MeshModel
    models: tuple[MeshModel, ...]  # every chat model the mesh lists, offered in agents' model pickers
    api_key: str = DUMMY_API_KEY

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def listed(self) -> tuple[MeshModel, ...]:
        return self.models if self.model in self.models else (self.model, *self.models)


@dataclass(frozen=True)
class ConfigEdit:
    path: Path
    text: str  # the whole new file
    # The file held something besides our own entries (worth a backup before it is first changed).
    had_user_entries: bool = False


@dataclass(frozen=True)
class LaunchPlan:
    argv: tuple[str, ...]  # argv[0] is the agent's binary
    env: Mapping[str, str] = field(default_factory=dict)  # set over the caller's environment
    env_defaults: Mapping[str, str] = field(default_factory=dict)  # set only where the caller has none
    env_unset: tuple[str, ...] = ()
    edits: tuple[ConfigEdit, ...] = ()

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        merged = {**self.env_defaults, **base, **self.env}
        return {k: v for k, v in merged.items() if k not in self.env_unset}


@dataclass(frozen=True)
class Agent:
    name: str
    binary: str
    install_hint: str  # a phrase: "install it with `npm install -g …`"
    config_path: Callable[[Mapping[str, str], Path], Path | None]  # (environment, home) → file
    plan: Callable[[Target, Path | None, str | None, Sequence[str]], LaunchPlan]  # existing text → plan


def output_tokens(context_tokens: int | None) -> int | None:
    if context_tokens is None:
        return None
    return max(1, min(context_tokens // OUTPUT_SHARE_OF_CONTEXT, MAX_OUTPUT_TOKENS))


def _has_option(args: Sequence[str], *names: str) -> bool:
    return any(a in names or any(a.startswith(f"{n}=") for n in names) for a in args)


def _json_object(path: Path, existing: str | None) -> dict[str, Any]:
    if existing is None or not existing.strip():
        return {}
    try:
        data = json.loads(existing)
    except ValueError as exc:
        raise ConfigUnmergeable(f"{path} is not plain JSON ({exc}); left alone") from exc
    if not isinstance(data, dict):
        raise ConfigUnmergeable(f"{path} does not hold a JSON object; left alone")
    return data


def _table(path: Path, parent: dict[str, Any], key: str) -> dict[str, Any]:
    table = parent.setdefault(key, {})
    if not isinstance(table, dict):
        raise ConfigUnmergeable(f"{path}: {key!r} is not an object; left alone")
    return table


def _beyond(data: dict[str, Any], ours: set[str], table: str) -> bool:
    """`data` holds more than our keys and our entry in `table`: something the user wrote."""
    others = data.get(table, {})
    return bool(set(data) - ours - {table}) or (
        isinstance(others, dict) and bool(set(others) - {PROVIDER_ID})
    )


def _dump_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _xdg_config(env: Mapping[str, str], home: Path) -> Path:
    return Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"


# opencode: a provider on its OpenAI-compatible adapter, in the global config (or $OPENCODE_CONFIG).


def opencode_config_path(env: Mapping[str, str], home: Path) -> Path:
    if env.get("OPENCODE_CONFIG"):
        return Path(env["OPENCODE_CONFIG"])
    return _xdg_config(env, home) / "opencode" / "opencode.json"


def opencode_provider(target: Target) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for model in target.listed:
        entry: dict[str, Any] = {"name": model.id}
        if model.context_tokens is not None:
            entry["limit"] = {"context": model.context_tokens, "output": output_tokens(model.context_tokens)}
        models[model.id] = entry
    return {
        "npm": "@ai-sdk/openai-compatible",
        "name": PROVIDER_NAME,
        "options": {"baseURL": target.api_url, "apiKey": target.api_key},
        "models": models,
    }


def opencode_argv(target: Target, args: Sequence[str]) -> tuple[str, ...]:
    model = ("-m", f"{PROVIDER_ID}/{target.model.id}")
    if _has_option(args, "-m", "--model"):
        return ("opencode", *args)
    if args and args[0] == "run":
        return ("opencode", "run", *model, *args[1:])
    if args and args[0] in OPENCODE_OTHER_COMMANDS:
        return ("opencode", *args)
    return ("opencode", *model, *args)  # the TUI, with or without a project directory


def plan_opencode(target: Target, path: Path | None, existing: str | None, args: Sequence[str]) -> LaunchPlan:
    assert path is not None
    data = _json_object(path, existing)
    edit_of_user_file = _beyond(data, {"$schema"}, "provider")
    data.setdefault("$schema", OPENCODE_SCHEMA)
    _table(path, data, "provider")[PROVIDER_ID] = opencode_provider(target)
    edit = ConfigEdit(path, _dump_json(data), edit_of_user_file)
    return LaunchPlan(argv=opencode_argv(target, args), edits=(edit,))


# pi: a provider in ~/.pi/agent/models.json (or $PI_CODING_AGENT_DIR).


def pi_config_path(env: Mapping[str, str], home: Path) -> Path:
    agent_dir = Path(env["PI_CODING_AGENT_DIR"]) if env.get("PI_CODING_AGENT_DIR") else home / ".pi" / "agent"
    return agent_dir / "models.json"


def pi_provider(target: Target) -> dict[str, Any]:
    models = []
    for model in target.listed:
        entry: dict[str, Any] = {"id": model.id, "name": model.id, "reasoning": False, "input": ["text"]}
        if model.context_tokens is not None:
            entry["contextWindow"] = model.context_tokens
            entry["maxTokens"] = output_tokens(model.context_tokens)
        models.append(entry)
    return {
        "baseUrl": target.api_url,
        "api": "openai-completions",
        "apiKey": target.api_key,
        # llama.cpp's chat templates know `system`, not OpenAI's newer `developer` role.
        "compat": {"supportsDeveloperRole": False, "supportsReasoningEffort": False},
        "models": models,
    }


def plan_pi(target: Target, path: Path | None, existing: str | None, args: Sequence[str]) -> LaunchPlan:
    assert path is not None
    data = _json_object(path, existing)
    edit_of_user_file = _beyond(data, set(), "providers")
    _table(path, data, "providers")[PROVIDER_ID] = pi_provider(target)
    ours = ("--provider", PROVIDER_ID, "--model", target.model.id)
    chosen = () if _has_option(args, "--model", "--provider") else ours
    edit = ConfigEdit(path, _dump_json(data), edit_of_user_file)
    return LaunchPlan(argv=("pi", *chosen, *args), edits=(edit,))


# codex: a profile file ($CODEX_HOME/mesh.config.toml, layered over config.toml by `--profile mesh`)
# that also holds the provider, so the user's config.toml is never touched. Since codex 0.134,
# `[profiles.NAME]` tables in config.toml are no longer read; only the Responses API is spoken.


def codex_config_path(env: Mapping[str, str], home: Path) -> Path:
    codex_home = Path(env["CODEX_HOME"]) if env.get("CODEX_HOME") else home / ".codex"
    return codex_home / f"{CODEX_PROFILE}.config.toml"


def codex_provider(target: Target) -> dict[str, Any]:
    return {
        "name": PROVIDER_NAME,
        "base_url": target.api_url,
        "wire_api": "responses",
        "env_key": API_KEY_ENV,
        "env_key_instructions": f"start codex with `mesh-llm codex`, or export {API_KEY_ENV}={DUMMY_API_KEY}",
    }


CODEX_OURS = {"model", "model_provider", "model_context_window"}


def codex_profile(path: Path, existing: str | None, target: Target) -> ConfigEdit:
    try:
        data = tomllib.loads(existing or "")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigUnmergeable(f"{path} is not valid TOML ({exc}); left alone") from exc
    edit_of_user_file = _beyond(data, CODEX_OURS, "model_providers")
    data["model"] = target.model.id
    data["model_provider"] = PROVIDER_ID
    # Ours to keep current: a window left from another model would be wrong for this one.
    data.pop("model_context_window", None)
    if target.model.context_tokens is not None:
        data["model_context_window"] = target.model.context_tokens
    _table(path, data, "model_providers")[PROVIDER_ID] = codex_provider(target)
    header = f"# `codex --profile {CODEX_PROFILE}`: the mesh-llm node (rewritten by `mesh-llm codex`)\n"
    return ConfigEdit(path, header + tomli_w.dumps(data), edit_of_user_file)


def plan_codex(target: Target, path: Path | None, existing: str | None, args: Sequence[str]) -> LaunchPlan:
    assert path is not None
    chosen = () if _has_option(args, "--profile", "-p") else ("--profile", CODEX_PROFILE)
    return LaunchPlan(
        argv=("codex", *chosen, *args),
        env={API_KEY_ENV: target.api_key},
        edits=(codex_profile(path, existing, target),),
    )


# Claude Code: environment only (it speaks the Anthropic Messages API to ANTHROPIC_BASE_URL).


def claude_env(target: Target) -> tuple[dict[str, str], dict[str, str]]:
    """(forced, defaults): the node and model always; window sizes and traffic where the user has none."""
    model = target.model.id
    forced = {"ANTHROPIC_BASE_URL": target.root_url, "ANTHROPIC_AUTH_TOKEN": target.api_key}
    for name in (
        "MODEL",
        "SMALL_FAST_MODEL",
        "DEFAULT_HAIKU_MODEL",
        "DEFAULT_SONNET_MODEL",
        "DEFAULT_OPUS_MODEL",
    ):
        forced[f"ANTHROPIC_{name}"] = model
    forced["CLAUDE_CODE_SUBAGENT_MODEL"] = model
    defaults = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    context = target.model.context_tokens
    if context is not None:
        defaults["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] = str(context)
        defaults["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(output_tokens(context))
    return forced, defaults


def plan_claude(target: Target, path: Path | None, existing: str | None, args: Sequence[str]) -> LaunchPlan:
    forced, defaults = claude_env(target)
    # The user's own Anthropic key must not travel to the mesh (and would win over the token).
    return LaunchPlan(
        argv=("claude", *args), env=forced, env_defaults=defaults, env_unset=("ANTHROPIC_API_KEY",)
    )


# goose: environment only (its OpenAI provider); its config.yaml holds the user's default provider,
# which a launch for the mesh should not change.


def plan_goose(target: Target, path: Path | None, existing: str | None, args: Sequence[str]) -> LaunchPlan:
    forced = {
        "GOOSE_PROVIDER": "openai",
        "GOOSE_MODEL": target.model.id,
        "OPENAI_HOST": target.root_url,
        "OPENAI_BASE_PATH": "v1/chat/completions",
        "OPENAI_API_KEY": target.api_key,
    }
    context = target.model.context_tokens
    defaults = {"GOOSE_CONTEXT_LIMIT": str(context)} if context is not None else {}
    return LaunchPlan(argv=("goose", *(args or ("session",))), env=forced, env_defaults=defaults)


def _npm(package: str) -> str:
    return f"install it with `npm install -g {package}`"


def _no_config(env: Mapping[str, str], home: Path) -> Path | None:
    return None


AGENTS: dict[str, Agent] = {
    agent.name: agent
    for agent in (
        Agent("claude", "claude", _npm("@anthropic-ai/claude-code"), _no_config, plan_claude),
        Agent("codex", "codex", _npm("@openai/codex"), codex_config_path, plan_codex),
        Agent("opencode", "opencode", _npm("opencode-ai"), opencode_config_path, plan_opencode),
        Agent("pi", "pi", _npm("@mariozechner/pi-coding-agent"), pi_config_path, plan_pi),
        Agent("goose", "goose", f"install it from {GOOSE_INSTALL_URL}", _no_config, plan_goose),
    )
}
