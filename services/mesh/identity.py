"""A node's long-lived identity: an Ed25519 key pair in <home>/identity.key; the node id derives from it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.node.home_files import create_home_file, make_home_dir

NODE_ID_HEX_CHARS = 32
SHORT_ID_CHARS = 8
IDENTITY_KEY_MODE = 0o600


class IdentityError(Exception):
    """The identity key file exists but cannot be used."""


def node_id_for(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:NODE_ID_HEX_CHARS]


@dataclass(frozen=True)
class NodeIdentity:
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def public_bytes(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def node_id(self) -> str:
        return node_id_for(self.public_bytes)

    @property
    def short_id(self) -> str:
        return self.node_id[:SHORT_ID_CHARS]

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)


def load_or_create_identity(path: Path) -> NodeIdentity:
    """Create the key on first run (mode 0600); later runs keep the same node id. Raises
    HomeWriteError when it cannot be written."""
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError as exc:
            raise IdentityError(f"{path} is not a valid key file: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError(f"{path} does not hold an Ed25519 key")
        return NodeIdentity(key)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    make_home_dir(path.parent)
    # A concurrent first start must not end with two identities: keep whichever landed first.
    if not create_home_file(path, pem, IDENTITY_KEY_MODE):
        return load_or_create_identity(path)
    return NodeIdentity(key)
