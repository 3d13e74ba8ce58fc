"""Admission to a mesh, sans-IO: both sides prove the mesh secret, bound to this connection.

After the QUIC (TLS 1.3) handshake the dialer sends Hello; the listener answers Hello; then each
sends Proof = (HMAC-SHA256(secret, transcript), Ed25519 signature over transcript). The transcript
names the role, mesh id, both nonces and both public keys, so a proof cannot be replayed on another
connection or relayed by a man in the middle: the listener's key is also the one its TLS certificate
carries, which the dialer checks. A side that cannot prove the secret is refused before it sees or
sends anything else.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.mesh.frames import PROTOCOL_VERSION
from services.mesh.identity import NodeIdentity, node_id_for
from services.proto.meshllm.mesh.v1 import wire_pb2

NONCE_BYTES = 32
TRANSCRIPT_LABEL = b"mesh-llm admission v1"


class AdmissionRefused(Exception):
    """The other side is not (provably) a member of our mesh."""


@dataclass(frozen=True)
class AdmittedPeer:
    node_id: str
    public_key: bytes
    name: str
    addresses: tuple[str, ...]
    is_client: bool


def make_hello(
    identity: NodeIdentity, mesh_id: bytes, name: str, addresses: tuple[str, ...], is_client: bool
) -> wire_pb2.Hello:
    return wire_pb2.Hello(
        protocol_version=PROTOCOL_VERSION,
        mesh_id=mesh_id,
        public_key=identity.public_bytes,
        nonce=secrets.token_bytes(NONCE_BYTES),
        name=name,
        addresses=list(addresses),
        is_client=is_client,
    )


def check_hello(hello: wire_pb2.Hello, mesh_id: bytes) -> None:
    if hello.protocol_version != PROTOCOL_VERSION:
        raise AdmissionRefused(f"protocol version {hello.protocol_version} is not supported")
    if len(hello.nonce) != NONCE_BYTES or len(hello.public_key) != 32:
        raise AdmissionRefused("malformed hello")
    if not hmac.compare_digest(hello.mesh_id, mesh_id):
        raise AdmissionRefused("not a member of this mesh")


def transcript(role: bytes, dialer: wire_pb2.Hello, listener: wire_pb2.Hello) -> bytes:
    return b"|".join(
        [
            TRANSCRIPT_LABEL,
            role,
            dialer.mesh_id,
            dialer.nonce,
            listener.nonce,
            dialer.public_key,
            listener.public_key,
        ]
    )


def make_proof(
    identity: NodeIdentity, secret: bytes, role: bytes, dialer: wire_pb2.Hello, listener: wire_pb2.Hello
) -> wire_pb2.Proof:
    text = transcript(role, dialer, listener)
    return wire_pb2.Proof(mac=hmac.new(secret, text, hashlib.sha256).digest(), signature=identity.sign(text))


def verify_proof(
    proof: wire_pb2.Proof, secret: bytes, role: bytes, dialer: wire_pb2.Hello, listener: wire_pb2.Hello
) -> AdmittedPeer:
    """Check the proof made by `role` ("dialer" or "listener"); return who they are."""
    text = transcript(role, dialer, listener)
    expected = hmac.new(secret, text, hashlib.sha256).digest()
    if not hmac.compare_digest(proof.mac, expected):
        raise AdmissionRefused("wrong mesh secret")
    prover = dialer if role == b"dialer" else listener
    try:
        Ed25519PublicKey.from_public_bytes(prover.public_key).verify(proof.signature, text)
    except (InvalidSignature, ValueError) as exc:
        raise AdmissionRefused("identity signature does not verify") from exc
    return AdmittedPeer(
        node_id=node_id_for(prover.public_key),
        public_key=bytes(prover.public_key),
        name=prover.name[:64],
        addresses=tuple(a[:255] for a in prover.addresses[:8]),
        is_client=prover.is_client,
    )
