"""The mesh this node belongs to (<home>/mesh.toml): created by the first node, joined by token."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from services.mesh.identity import NodeIdentity, load_or_create_identity
from services.mesh.invite import InviteToken
from services.node.home import NodeHome
from services.node.home_files import write_home_file

MESH_CONFIG_MODE = 0o600  # it holds the mesh secret


@dataclass(frozen=True)
class MeshMembership:
    mesh_id: bytes
    secret: bytes
    name: str = ""
    epoch: int = 0  # bumped by rotate-key; peers take a secret update only if its epoch is newer

    def invite(self, addresses: tuple[str, ...]) -> InviteToken:
        return InviteToken(self.mesh_id, self.secret, addresses)

    def save(self, path: Path) -> None:
        """Raises HomeWriteError when it cannot be written (the old file, if any, stays whole)."""
        data = {
            "mesh_id": self.mesh_id.hex(),
            "secret": self.secret.hex(),
            "name": self.name,
            "epoch": self.epoch,
        }
        write_home_file(path, tomli_w.dumps(data).encode(), MESH_CONFIG_MODE)

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
        if membership != existing:  # every start with the same token: nothing new to write
            membership.save(path)
        return membership
    if existing is not None:
        return existing
    fresh = InviteToken.new_mesh()
    membership = MeshMembership(fresh.mesh_id, fresh.secret, name)
    membership.save(path)
    return membership


def load_or_create_mesh_files(
    home: NodeHome, join_tokens: Sequence[str]
) -> tuple[NodeIdentity, MeshMembership]:
    """The identity key and the mesh config, each created if missing (the first join token wins over
    a stored mesh). The CLI calls this before the services start, so a disk that refuses them is one
    line at the terminal; the mesh service then finds them. Raises HomeWriteError."""
    identity = load_or_create_identity(home.identity_key)
    tokens = [InviteToken.decode(token) for token in join_tokens]
    return identity, load_or_create_membership(home.mesh_config, tokens[0] if tokens else None)
