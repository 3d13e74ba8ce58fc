"""The invite token: mesh id, mesh secret and bootstrap addresses in one short, pasteable, versioned string.

Layout (before base64url, no padding): version (1 B) | mesh id (16 B) | secret (32 B) |
address count (1 B) | per address: length (1 B) + UTF-8 "host:port". The text form is
"mesh1-" + base64url, so a pasted token is recognisable and its version readable.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass

TOKEN_PREFIX = "mesh1-"
TOKEN_VERSION = 1
MESH_ID_BYTES = 16
SECRET_BYTES = 32
MAX_ADDRESSES = 8
MAX_ADDRESS_BYTES = 255
MAX_TOKEN_CHARS = 2048


class InvalidToken(ValueError):
    """The string is not an invite token we can use (typo, truncated paste, other version)."""


@dataclass(frozen=True)
class InviteToken:
    mesh_id: bytes
    secret: bytes
    addresses: tuple[str, ...] = ()

    @classmethod
    def new_mesh(cls, addresses: tuple[str, ...] = ()) -> InviteToken:
        return cls(secrets.token_bytes(MESH_ID_BYTES), secrets.token_bytes(SECRET_BYTES), addresses)

    @property
    def mesh_id_hex(self) -> str:
        return self.mesh_id.hex()

    def encode(self) -> str:
        if len(self.mesh_id) != MESH_ID_BYTES or len(self.secret) != SECRET_BYTES:
            raise ValueError("mesh id and secret have fixed sizes")
        addresses = self.addresses[:MAX_ADDRESSES]
        body = bytearray([TOKEN_VERSION]) + self.mesh_id + self.secret + bytes([len(addresses)])
        for address in addresses:
            raw = address.encode()
            if len(raw) > MAX_ADDRESS_BYTES:
                raise ValueError(f"address too long: {address!r}")
            body += bytes([len(raw)]) + raw
        return TOKEN_PREFIX + base64.urlsafe_b64encode(bytes(body)).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> InviteToken:
        text = text.strip()
        if len(text) > MAX_TOKEN_CHARS:
            raise InvalidToken("invite token is too long")
        if not text.startswith(TOKEN_PREFIX):
            raise InvalidToken("not a mesh-llm invite token (it should start with 'mesh1-')")
        encoded = text[len(TOKEN_PREFIX) :]
        try:
            body = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidToken("invite token is damaged (bad characters); copy it again") from exc
        return cls._parse(body)

    @classmethod
    def _parse(cls, body: bytes) -> InviteToken:
        fixed = 1 + MESH_ID_BYTES + SECRET_BYTES + 1
        if len(body) < fixed:
            raise InvalidToken("invite token is truncated; copy it again")
        if body[0] != TOKEN_VERSION:
            raise InvalidToken(f"invite token version {body[0]} is not supported by this mesh-llm")
        mesh_id = body[1 : 1 + MESH_ID_BYTES]
        secret = body[1 + MESH_ID_BYTES : fixed - 1]
        count = body[fixed - 1]
        if count > MAX_ADDRESSES:
            raise InvalidToken("invite token lists too many addresses")
        addresses: list[str] = []
        offset = fixed
        for _ in range(count):
            if offset >= len(body):
                raise InvalidToken("invite token is truncated; copy it again")
            length = body[offset]
            raw = body[offset + 1 : offset + 1 + length]
            if len(raw) != length:
                raise InvalidToken("invite token is truncated; copy it again")
            try:
                addresses.append(raw.decode())
            except UnicodeDecodeError as exc:
                raise InvalidToken("invite token address is not text") from exc
            offset += 1 + length
        if offset != len(body):
            raise InvalidToken("invite token has trailing bytes")
        return cls(mesh_id, secret, tuple(addresses))
