"""The mesh this node belongs to (<home>/mesh.toml): created by the first node, joined by token."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from services.mesh.invite import InviteToken


@dataclass(frozen=True)
class MeshMembership:
    mesh_id: bytes
    secret: bytes
    name: str = ""
    epoch: int = 0  # bumped by rotate-key; peers take a secret update only if its epoch is newer

    def invite(self, addresses: tuple[str, ...]) -> InviteToken:
        return InviteToken(self.mesh_id, self.secret, addresses)

    def save(self, path: Path) -> None:
        data = {
            "mesh_id": self.mesh_id.hex(),
            "secret": self.secret.hex(),
            "name": self.name,
            "epoch": self.epoch,
        }
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(tomli_w.dumps(data))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> MeshMembership | None:
        if not path.exists():
            return None
        data = tomllib.loads(path.read_text())
        return cls(
            bytes.fromhex(data["mesh_id"]),
            bytes.fromhex(data["secret"]),
            data.get("name", ""),
            int(data.get("epoch", 0)),
        )


def load_or_create_membership(path: Path, join: InviteToken | None, name: str = "") -> MeshMembership:
    """A join token wins over a stored mesh (the user asked to join it); otherwise keep or create."""
    existing = MeshMembership.load(path)
    if join is not None:
        if existing is not None and existing.mesh_id == join.mesh_id and existing.epoch > 0:
            # Restarted with the token we joined by, after a rotation: keep the newer secret.
            return existing
        membership = MeshMembership(join.mesh_id, join.secret, name)
        membership.save(path)
        return membership
    if existing is not None:
        return existing
    fresh = InviteToken.new_mesh()
    membership = MeshMembership(fresh.mesh_id, fresh.secret, name)
    membership.save(path)
    return membership
