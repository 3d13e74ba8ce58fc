"""Where requests forwarded by peers enter: a Unix socket in the node's run dir, not a TCP port.

A peer's gateway forwards a request through its mesh tunnel; this node's mesh service, which admitted
that peer (TLS + proof of the mesh secret), splices the stream onto this socket (services/mesh/app.py).
So arriving here *is* the proof that the mesh authenticated the request: it needs no API key (the
user's key never leaves the node it was sent to), and it is the only place where the forwarded mark
(remote.FORWARDED_HEADER: serve locally, never forward again) is honoured. On the TCP ports the mark
is dropped (services/gateway/api_key.py), so a local process or web page cannot use it to skip the key.
The run dir is the node user's alone (NodeHome.ensure makes the home 0700): no browser and no other
user can connect here.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

MESH_INGRESS_BACKLOG = 2048


class MeshIngressUnavailable(Exception):
    """The ingress socket cannot be bound (its path is too long for a Unix socket, say)."""


def bind_mesh_ingress(path: Path) -> socket.socket:
    """A listening Unix socket at `path` (a stale one from a killed gateway is replaced)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise MeshIngressUnavailable(f"{path} cannot be bound ({exc})") from exc
    sock.listen(MESH_INGRESS_BACKLOG)
    sock.setblocking(False)
    return sock
