"""Why `mesh-llm <agent>` could not launch the agent; each becomes one line for the user."""

from __future__ import annotations

LAUNCH_FAILED_EXIT = 1
# The shell's "command not found": the agent's binary is not installed.
AGENT_MISSING_EXIT = 127


class LaunchError(Exception):
    """The agent was not started; the message says why in the user's terms."""

    exit_code = LAUNCH_FAILED_EXIT


class NoNode(LaunchError):
    """Nothing answers at the node's API port."""


class BadModelList(LaunchError):
    """Something answered at the port, but not with a mesh-llm model list."""


class NoChatModel(LaunchError):
    """The mesh lists no model an agent can chat with."""


class UnknownModel(LaunchError):
    """--model names a model the mesh does not list, or one that is not a chat model."""


class ConfigUnmergeable(LaunchError):
    """The agent's existing config file cannot be read, so it is left alone."""


class AgentNotInstalled(LaunchError):
    """The agent's binary is not on PATH."""

    exit_code = AGENT_MISSING_EXIT
