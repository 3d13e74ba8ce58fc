"""`mesh-llm claude|codex|opencode|pi|goose`: run a coding agent against this node's models."""

from services.cli.agents.configs import AGENTS
from services.cli.agents.launch import agent_main

AGENT_NAMES = frozenset(AGENTS)

__all__ = ["AGENT_NAMES", "agent_main"]
