"""The real coding agents from npm (`make agents`: opencode-ai, @mariozechner/pi-coding-agent,
@openai/codex, @anthropic-ai/claude-code), each launched by `mesh-llm <agent> --model M -- <headless
args>`, complete one turn against a real node serving SmolLM2-135M-Instruct (8k context): the
agent exits 0, prints the model's text, and its requests reach the node on its own API
(/v1/chat/completions for opencode and pi, /v1/responses for codex, /v1/messages for Claude Code).
Goose is not on the registries this machine reaches: tests/unit/cli/test_agent_configs.py checks
its launch.

Each agent has its own HOME and XDG dirs in tmp_path, holding "the user's" existing config (kept,
checked). Between agent and node a pass-through recorder notes each request's endpoint (the
gateway keeps no access log); the launcher gets its port as --port.

Prompt sizes, as the node counts them (SmolLM2's ChatML template renders the tools): by default
opencode 7,622 tokens (10 tools), pi 1,502 (4 tools), codex 6,228 (9 tools), Claude Code 12,275
(12 tools: over the 8k window, and on gemma3-270m's 32k a base model never ends the turn, which
Claude Code reports as an error). This CPU evaluates SmolLM2 prompts at ~50-85 tokens/s, so the
turns use the agents' own switches for a smaller prompt: opencode without tools (permission deny,
2,043 tokens), codex with one-line base instructions (2,419), Claude Code `--bare` with a one-line
system prompt (1,149); pi runs with its default prompt. All four run at once (7.5k tokens of the
node's 8k shared KV cache at most).

Vendor traffic turned off with the agents' own switches (nothing else stubbed):
- opencode: OPENCODE_DISABLE_MODELS_FETCH=1 (models.dev). Its first run also installs its plugin
  SDK from registry.npmjs.org into its config dir (background, no switch; npm is reachable here).
- pi: PI_OFFLINE=1 (update check, install telemetry).
- codex: the user's config.toml says check_for_update_on_startup = false, [analytics] enabled =
  false and [features] plugins = false (the plugin marketplace sync from github.com).
- Claude Code: CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1, which the launcher itself sets.
Output caps where the agent has one: opencode OPENCODE_EXPERIMENTAL_OUTPUT_TOKEN_MAX; pi reads the
window the launcher writes and a user's compaction.reserveTokens (its default 16384 would compact
after every turn of an 8k model). codex has no output cap setting and sends none: SmolLM2 once
answered "Say hi." with text running towards the end of its context (past the 240 s turn), so the
node runs with `--max-output-tokens` (MAX_OUTPUT_TOKENS), as a user pointing agents at a small model
would; a request's own cap (opencode's, Claude Code's) is kept, which a test here checks.
Claude Code sends its own cap (32,000, which the gateway lowers to the context) and reports an
answer that reaches a cap as an error ("response exceeded the N output token maximum", exit 1;
tried with CLAUDE_CODE_MAX_OUTPUT_TOKENS), so nothing can shorten a Claude Code turn that SmolLM2
talks through: with four requests batched together the model's numerics vary from run to run, and
once in a fresh-clone run its answer ran past 1,100 tokens. A turn killed at the deadline is
therefore run once more, alone; a second one killed, or any turn that ends in an error, fails.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.node.catalog import model_name_for_path
from tests.support.agents import AgentTurn, RequestRecorder, agent_bin_dir, run_launcher
from tests.support.node import RunningNode, free_port

# The turns (240 s at most), a second try of one killed at the deadline (240 s), the node start.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(720)]

TURN_TIMEOUT_S = 240.0
MAX_OUTPUT_TOKENS = 96
PROMPT = "Say hi."
BRIEF = "You are a helpful assistant. Answer in one short sentence."
OPENCODE_OUTPUT_TOKENS = 32
USER_OPENCODE = {"theme": "tokyonight", "provider": {"ollama": {"npm": "@ai-sdk/openai-compatible"}}}
USER_PI_MODELS = {
    "providers": {
        "ollama": {
            "baseUrl": "http://localhost:11434/v1",
            "api": "openai-completions",
            "apiKey": "ollama",
            "models": [{"id": "llama3.1:8b"}],
        }
    }
}
USER_PI_SETTINGS = {"compaction": {"reserveTokens": 2048}}
USER_CODEX_CONFIG = (
    "# the user's own settings\n"
    "check_for_update_on_startup = false\n\n"
    "[analytics]\nenabled = false\n\n"
    "[features]\nplugins = false\n"
)


@dataclass(frozen=True)
class AgentCase:
    name: str
    endpoint: str
    args: Callable[[Path], list[str]]  # the agent's own arguments, given its home
    env: dict[str, str]
    seed: Callable[[Path], None]  # the user's config files, before the launch


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _seed_opencode(home: Path) -> None:
    _write(home / ".config/opencode/opencode.json", json.dumps(USER_OPENCODE))


def _seed_pi(home: Path) -> None:
    _write(home / ".pi/agent/models.json", json.dumps(USER_PI_MODELS))
    _write(home / ".pi/agent/settings.json", json.dumps(USER_PI_SETTINGS))


def _seed_codex(home: Path) -> None:
    _write(home / ".codex/config.toml", USER_CODEX_CONFIG)
    _write(home / "brief.md", BRIEF + "\n")


CASES = {
    case.name: case
    for case in (
        AgentCase(
            "opencode",
            "/v1/chat/completions",
            lambda home: ["run", "--title", "mesh-llm test", PROMPT],
            {
                "OPENCODE_DISABLE_MODELS_FETCH": "1",
                "OPENCODE_CONFIG_CONTENT": json.dumps({"permission": {"*": "deny"}}),
                "OPENCODE_EXPERIMENTAL_OUTPUT_TOKEN_MAX": str(OPENCODE_OUTPUT_TOKENS),
            },
            _seed_opencode,
        ),
        AgentCase("pi", "/v1/chat/completions", lambda home: ["-p", PROMPT], {"PI_OFFLINE": "1"}, _seed_pi),
        AgentCase(
            "codex",
            "/v1/responses",
            lambda home: [
                "exec",
                "--skip-git-repo-check",
                "-c",
                f'model_instructions_file="{home}/brief.md"',
                PROMPT,
            ],
            {},
            _seed_codex,
        ),
        AgentCase(
            "claude",
            "/v1/messages",
            lambda home: ["-p", PROMPT, "--bare", "--system-prompt", BRIEF],
            {},
            lambda home: None,
        ),
    )
}


@dataclass(frozen=True)
class Launched:
    turn: AgentTurn
    home: Path


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Iterator[RunningNode]:
    running = RunningNode(
        tmp_path_factory.mktemp("agents-node"),
        free_port(),
        free_port(),
        ["--model", str(smollm2_path), "--max-output-tokens", str(MAX_OUTPUT_TOKENS)],
    ).start()
    try:
        running.wait_ready([model_name_for_path(smollm2_path)])
        yield running
    finally:
        running.stop()


def _environment(home: Path, case: AgentCase) -> dict[str, str]:
    """Only what an agent needs from this machine: never the real HOME, keys or configs."""
    return {
        "PATH": f"{agent_bin_dir()}{os.pathsep}{os.environ['PATH']}",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local/state"),
        **case.env,
    }


def _launch(case: AgentCase, model: str, node: RunningNode, root: Path) -> Launched:
    home = root / case.name
    work = home / "work"  # a fresh directory, not a git repository
    work.mkdir(parents=True)
    case.seed(home)
    recorder = RequestRecorder(upstream=f"http://127.0.0.1:{node.api_port}").start()
    try:
        launcher_args = ["--model", model, "--", *case.args(home)]
        turn = run_launcher(
            case.name, launcher_args, _environment(home, case), work, recorder, TURN_TIMEOUT_S
        )
    finally:
        recorder.stop()
    return Launched(turn, home)


@pytest.fixture(scope="module")
def turns(
    node: RunningNode, smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Launched]:
    """All four turns at once: while one agent starts up (opencode takes ~15 s), others are served."""
    root = tmp_path_factory.mktemp("agents")
    model = model_name_for_path(smollm2_path)
    with ThreadPoolExecutor(len(CASES)) as pool:
        futures = {name: pool.submit(_launch, case, model, node, root) for name, case in CASES.items()}
        launched = {name: future.result() for name, future in futures.items()}
    for name, first in launched.items():
        if first.turn.returncode is None:  # killed at the deadline: the model talked past it
            launched[name] = _launch(CASES[name], model, node, root / "again")
    return launched


def test_the_nodes_output_cap_ends_only_requests_that_name_none(
    node: RunningNode, smollm2_path: Path
) -> None:
    model = model_name_for_path(smollm2_path)
    story = "Write a very long story about a lighthouse keeper, chapter by chapter."
    body = {
        "model": model,
        "messages": [{"role": "user", "content": story}],
        "temperature": 0,
        "ignore_eos": True,  # llama-server: only a cap ends it
    }
    url = f"{node.api_base}/chat/completions"
    capless = node.http("POST", url, json=body, timeout=120).json()
    assert capless["usage"]["completion_tokens"] == MAX_OUTPUT_TOKENS, capless
    assert capless["choices"][0]["finish_reason"] == "length", capless
    own = node.http("POST", url, json={**body, "max_tokens": MAX_OUTPUT_TOKENS + 24}, timeout=120).json()
    assert own["usage"]["completion_tokens"] == MAX_OUTPUT_TOKENS + 24, own


@pytest.mark.parametrize("agent", list(CASES))
def test_one_headless_turn_through_the_launcher(agent: str, turns: dict[str, Launched]) -> None:
    turn = turns[agent].turn
    assert turn.returncode == 0, turn.describe()
    assert turn.stdout.strip(), turn.describe()  # the model's reply (the launcher itself writes to stderr)
    assert f"mesh-llm {agent}: " in turn.stderr, turn.describe()
    assert ("GET", "/v1/models", 200) in {(r.method, r.path, r.status) for r in turn.seen}, turn.describe()
    answered = [r for r in turn.seen if r.method == "POST" and r.path == CASES[agent].endpoint]
    assert answered and all(r.status == 200 for r in answered), turn.describe()
    others = {r.path for r in turn.seen if r.method == "POST"} - {CASES[agent].endpoint}
    assert not others - {"/v1/messages/count_tokens"}, turn.describe()


def test_the_node_served_every_turn(node: RunningNode, turns: dict[str, Launched]) -> None:
    posts = sum(1 for launched in turns.values() for r in launched.turn.seen if r.method == "POST")
    assert node.status().requests_total >= posts > 0


def test_the_users_configs_keep_their_entries(turns: dict[str, Launched], node: RunningNode) -> None:
    opencode = turns["opencode"].home / ".config/opencode/opencode.json"
    written = json.loads(opencode.read_text())
    assert written["theme"] == "tokyonight" and "ollama" in written["provider"]
    assert written["provider"]["mesh"]["options"]["baseURL"].startswith("http://127.0.0.1:")
    assert json.loads(opencode.with_name("opencode.json.bak").read_text()) == USER_OPENCODE

    pi = turns["pi"].home / ".pi/agent"
    models = json.loads((pi / "models.json").read_text())
    assert models["providers"]["ollama"] == USER_PI_MODELS["providers"]["ollama"]
    assert models["providers"]["mesh"]["models"][0]["contextWindow"] == 8192
    assert json.loads((pi / "models.json.bak").read_text()) == USER_PI_MODELS
    assert json.loads((pi / "settings.json").read_text())["compaction"] == USER_PI_SETTINGS["compaction"]

    codex = turns["codex"].home / ".codex"
    assert (
        codex / "config.toml"
    ).read_text() == USER_CODEX_CONFIG  # never touched: the profile is its own file
    profile = tomllib.loads((codex / "mesh.config.toml").read_text())
    assert profile["model_provider"] == "mesh" and profile["model_context_window"] == 8192
