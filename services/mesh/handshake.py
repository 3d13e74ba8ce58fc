"""Running admission over a control stream: the I/O half of services/mesh/admission.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from services.mesh.admission import (
    AdmissionRefused,
    AdmittedPeer,
    check_hello,
    make_hello,
    make_proof,
    verify_proof,
)
from services.mesh.frames import FrameDecoder, FrameError, encode_frame
from services.mesh.identity import NodeIdentity
from services.proto.meshllm.mesh.v1 import wire_pb2

ADMISSION_TIMEOUT_S = 5.0
HANDSHAKE_READ_BYTES = 16 * 1024


class ControlReader:
    """Frames from a control stream, one at a time, keeping any that arrived together.

    Used for admission and then handed to the link, so no byte read past the handshake is lost.
    """

    def __init__(self, reader: asyncio.StreamReader, initial: bytes = b"") -> None:
        self._reader = reader
        self._decoder = FrameDecoder()
        self._pending: list[wire_pb2.WireFrame] = []
        # Decoded on the first next(), not here: a malformed frame must surface where callers catch it.
        self._initial = initial

    async def next(self) -> wire_pb2.WireFrame:
        """Raises ConnectionError at end of stream and FrameError on a malformed frame."""
        if self._initial:
            initial, self._initial = self._initial, b""
            self._pending.extend(self._decoder.feed(initial))
        while not self._pending:
            data = await self._reader.read(HANDSHAKE_READ_BYTES)
            if not data:
                raise ConnectionError("control stream closed")
            self._pending.extend(self._decoder.feed(data))
        return self._pending.pop(0)

    async def expect(self, body: str) -> wire_pb2.WireFrame:
        try:
            frame = await self.next()
        except ConnectionError as exc:
            raise AdmissionRefused("peer closed the connection during admission") from exc
        except FrameError as exc:
            raise AdmissionRefused(f"malformed admission frame: {exc}") from exc
        kind = frame.WhichOneof("body")
        if kind == "refused":
            raise AdmissionRefused(f"refused by peer: {frame.refused.reason}")
        if kind != body:
            raise AdmissionRefused(f"expected {body}, got {kind}")
        return frame


class Credentials:
    """What this node proves with: its identity, the mesh id and secret, and what it tells peers."""

    def __init__(
        self,
        identity: NodeIdentity,
        mesh_id: bytes,
        secret: bytes,
        name: str,
        addresses: tuple[str, ...],
        is_client: bool,
    ) -> None:
        self.identity = identity
        self.mesh_id = mesh_id
        self.secret = secret
        self.name = name
        self.addresses = addresses
        self.is_client = is_client

    def hello(self) -> wire_pb2.Hello:
        return make_hello(self.identity, self.mesh_id, self.name, self.addresses, self.is_client)


async def admit_as_dialer(
    credentials: Credentials,
    control: ControlReader,
    writer: asyncio.StreamWriter,
    listener_tls_key: bytes | None,
) -> tuple[AdmittedPeer, wire_pb2.Admitted]:
    """`listener_tls_key` is None on a relayed control stream (no TLS session with the target)."""

    async def run() -> tuple[AdmittedPeer, wire_pb2.Admitted]:
        mine = credentials.hello()
        writer.write(encode_frame(wire_pb2.WireFrame(hello=mine)))
        theirs = (await control.expect("hello")).hello
        check_hello(theirs, credentials.mesh_id)
        if listener_tls_key is not None and theirs.public_key != listener_tls_key:
            raise AdmissionRefused("listener's key differs from its TLS certificate")
        writer.write(
            encode_frame(
                wire_pb2.WireFrame(
                    proof=make_proof(credentials.identity, credentials.secret, b"dialer", mine, theirs)
                )
            )
        )
        proof = (await control.expect("proof")).proof
        peer = verify_proof(proof, credentials.secret, b"listener", mine, theirs)
        admitted = (await control.expect("admitted")).admitted
        return peer, admitted

    try:
        return await asyncio.wait_for(run(), ADMISSION_TIMEOUT_S)
    except TimeoutError as exc:
        raise AdmissionRefused("admission timed out") from exc


async def admit_as_listener(
    credentials: Credentials,
    control: ControlReader,
    writer: asyncio.StreamWriter,
    admitted: Callable[[], wire_pb2.Admitted],
) -> AdmittedPeer:
    """`admitted()` builds the Admitted frame (current peers) once the dialer has proved itself."""

    async def run() -> AdmittedPeer:
        theirs = (await control.expect("hello")).hello
        try:
            check_hello(theirs, credentials.mesh_id)
        except AdmissionRefused as exc:
            writer.write(encode_frame(wire_pb2.WireFrame(refused=wire_pb2.Refused(reason=str(exc)))))
            raise
        mine = credentials.hello()
        writer.write(encode_frame(wire_pb2.WireFrame(hello=mine)))
        proof = (await control.expect("proof")).proof
        try:
            peer = verify_proof(proof, credentials.secret, b"dialer", theirs, mine)
        except AdmissionRefused as exc:
            writer.write(encode_frame(wire_pb2.WireFrame(refused=wire_pb2.Refused(reason=str(exc)))))
            raise
        writer.write(
            encode_frame(
                wire_pb2.WireFrame(
                    proof=make_proof(credentials.identity, credentials.secret, b"listener", theirs, mine)
                )
            )
        )
        writer.write(encode_frame(wire_pb2.WireFrame(admitted=admitted())))
        return peer

    try:
        return await asyncio.wait_for(run(), ADMISSION_TIMEOUT_S)
    except TimeoutError as exc:
        raise AdmissionRefused("admission timed out") from exc
