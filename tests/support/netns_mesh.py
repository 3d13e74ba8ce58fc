"""Real mesh-llm nodes on test-bed hosts (tests/support/netns.py): each in its own network namespace,
with the defaults a user gets (no --bind-ip, no --advertise unless a test says so)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx

from services.mesh.invite import InviteToken
from services.proto.meshllm.mesh.v1 import mesh_pb2, mesh_pb2_grpc
from tests.support.netns import Host
from tests.support.node import RunningNode, free_port, wait_until

NODE_READY_TIMEOUT_S = 60.0
PEER_TIMEOUT_S = 20.0


def stop_all(nodes: list[RunningNode]) -> None:
    """Stop every node at once (each takes seconds to shut down its services)."""
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        list(pool.map(lambda node: node.stop(), nodes))


def start_on(host: Host, root: Path, name: str, args: list[str]) -> RunningNode:
    return RunningNode(root / name, free_port(), free_port(), ["--name", name, *args], host=host).start()


def launch(nodes: list[RunningNode], host: Host, root: Path, name: str, args: list[str]) -> RunningNode:
    """Start a node on `host`, add it to `nodes` (so it is stopped whatever happens), wait for its
    ready screen."""
    node = start_on(host, root, name, args)
    nodes.append(node)
    wait_started(node)
    return node


def wait_started(node: RunningNode) -> None:
    """The ready screen is up (the node printed its invite and peers)."""
    wait_until(lambda: "Ctrl-C" in node.cli_output(), NODE_READY_TIMEOUT_S, f"{node.home.name} to start")


def model_copy(model: Path, root: Path, name: str) -> Path:
    """A copy of `model` served under another name (the file's stem is the model name)."""
    folder = root / "models"
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(model, folder / f"{name}.gguf"))


def token_of(node: RunningNode) -> InviteToken:
    return InviteToken.decode(node.invite())


def peers_of(node: RunningNode) -> dict[str, mesh_pb2.Peer]:
    with grpc.insecure_channel(node.node_home.grpc_target("mesh")) as channel:
        response = mesh_pb2_grpc.MeshStub(channel).ListPeers(mesh_pb2.ListPeersRequest(), timeout=2)
    return {peer.node_id: peer for peer in response.peers}


def identity_of(node: RunningNode) -> mesh_pb2.Identity:
    with grpc.insecure_channel(node.node_home.grpc_target("mesh")) as channel:
        return mesh_pb2_grpc.MeshStub(channel).GetIdentity(mesh_pb2.GetIdentityRequest(), timeout=2)


def node_id(node: RunningNode) -> str:
    return identity_of(node).node_id


def path_to(node: RunningNode, other: RunningNode) -> str:
    """ "direct", "relayed" or "" (no link) from `node` to `other`."""
    peer = peers_of(node).get(node_id(other))
    if peer is None:
        return ""
    return "relayed" if peer.path == mesh_pb2.PEER_PATH_RELAYED else "direct"


def wait_path(node: RunningNode, other: RunningNode, path: str, timeout_s: float = PEER_TIMEOUT_S) -> None:
    wait_until(
        lambda: path_to(node, other) == path,
        timeout_s,
        f"{node.home.name} to reach {other.home.name} {path}",
    )


def listed_models(node: RunningNode) -> set[str]:
    """What a client of this node's /v1/models sees."""
    data = node.http("GET", f"{node.api_base}/models", timeout=5).json()["data"]
    return {entry["id"] for entry in data}


def answers(node: RunningNode, model: str) -> bool:
    try:
        return bool(node.chat(model, max_tokens=4)["choices"])
    except httpx.HTTPError:
        return False


def wait_answers(node: RunningNode, model: str, timeout_s: float = NODE_READY_TIMEOUT_S) -> None:
    wait_until(lambda: answers(node, model), timeout_s, f"{node.home.name} to answer for {model}")


def meshctl(node: RunningNode, *command: str) -> str:
    binary = Path(sys.executable).parent / "meshctl"
    result = subprocess.run(
        [str(binary), "--home", str(node.home), *command],
        capture_output=True,
        text=True,
        timeout=30,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
