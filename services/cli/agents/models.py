"""Which of the mesh's models an agent should use, from the node's `GET /v1/models` (pure).

Each entry carries the `meshllm` extension: `state` ("ready", "loading", …), `local`, `nodes`, and
(newer nodes) `kind` ("chat", "embedding", "rerank") and `context_tokens`. A missing or unknown kind
is taken as chat; a missing or zero context size as unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.cli.agents.errors import BadModelList, NoChatModel, UnknownModel

NOT_CHAT_KINDS = frozenset({"embedding", "rerank"})
READY_STATE = "ready"


@dataclass(frozen=True)
class MeshModel:
    id: str
    state: str
    kind: str
    local: bool
    nodes: tuple[str, ...]
    context_tokens: int | None

    @property
    def is_chat(self) -> bool:
        return self.kind not in NOT_CHAT_KINDS

    @property
    def ready(self) -> bool:
        return self.state == READY_STATE


def _entry(raw: Any) -> MeshModel:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
        raise BadModelList("a /v1/models entry has no model id")
    ext = raw.get("meshllm")
    ext = ext if isinstance(ext, dict) else {}
    nodes = ext.get("nodes")
    nodes = nodes if isinstance(nodes, list) else []
    context = ext.get("context_tokens")
    return MeshModel(
        id=raw["id"],
        state=str(ext.get("state", READY_STATE)),
        kind=str(ext.get("kind") or "chat"),
        local=bool(ext.get("local", False)),
        nodes=tuple(str(n) for n in nodes),
        context_tokens=context if isinstance(context, int) and context > 0 else None,
    )


def parse_models(payload: Any) -> tuple[MeshModel, ...]:
    """The models of an OpenAI list response (`{"object": "list", "data": [...]}`)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise BadModelList("the answer to /v1/models is not a model list")
    return tuple(_entry(raw) for raw in payload["data"])


def _preference(model: MeshModel) -> tuple[bool, int, bool, int, str, str]:
    # Ready first, then the model more nodes serve (it survives a node leaving and shares load),
    # then one served here (no hop), then the larger window (agents' own prompts run to 8-20k
    # tokens), then by name so every run picks the same.
    context = model.context_tokens or 0
    return (not model.ready, -len(model.nodes), not model.local, -context, model.id.lower(), model.id)


def chat_models(models: Sequence[MeshModel]) -> tuple[MeshModel, ...]:
    """The chat models, best first."""
    return tuple(sorted((m for m in models if m.is_chat), key=_preference))


def choose_model(models: Sequence[MeshModel], wanted: str | None) -> MeshModel:
    """The model named by --model (exact id, else case-insensitive), or the mesh's best chat model."""
    if wanted is None:
        ranked = chat_models(models)
        if not ranked:
            listed = f" (it lists only {', '.join(m.id for m in models)})" if models else ""
            raise NoChatModel(
                f"the mesh serves no chat model yet{listed}; add one with `mesh-llm load MODEL`"
            )
        return ranked[0]
    match = next((m for m in models if m.id == wanted), None)
    if match is None:
        match = next((m for m in models if m.id.lower() == wanted.lower()), None)
    if match is None:
        known = ", ".join(m.id for m in chat_models(models)) or "none yet"
        raise UnknownModel(f"the mesh has no model {wanted!r} (chat models: {known})")
    if not match.is_chat:
        raise UnknownModel(f"{match.id} is not a chat model (kind: {match.kind}); agents need one")
    return match
