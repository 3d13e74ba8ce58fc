"""The node's home dir layout (DESIGN §1): one place that names every file a node keeps."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from services.node.home_files import HomeWriteError, make_home_dir

DEFAULT_HOME = Path("~/.mesh-llm").expanduser()
SERVICES = ("mesh", "gossip", "placement", "runner", "gateway", "discovery")


def default_home() -> Path:
    return Path(os.environ.get("MESH_LLM_HOME") or DEFAULT_HOME).expanduser()


def model_cache_dir() -> Path:
    """Models are shared by all nodes of a user (they can be GBs)."""
    base = os.environ.get("MESH_LLM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "mesh-llm"
    )
    return Path(base) / "models"


@dataclass(frozen=True)
class NodeHome:
    root: Path

    @property
    def node_config(self) -> Path:
        return self.root / "node.toml"

    @property
    def identity_key(self) -> Path:
        return self.root / "identity.key"

    @property
    def mesh_config(self) -> Path:
        return self.root / "mesh.toml"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    def socket(self, service: str) -> Path:
        return self.run / f"{service}.sock"

    def grpc_target(self, service: str) -> str:
        return f"unix://{self.socket(service)}"

    @property
    def supervisor_socket(self) -> Path:
        return self.run / "supervisor.sock"

    @property
    def runner_pids(self) -> Path:
        """Pids of llama.cpp processes the runner started, to reap after a crash."""
        return self.run / "runner-pids.json"

    def ensure(self) -> None:
        """Raises HomeWriteError when the home cannot be made (a read-only or foreign folder)."""
        for directory in (self.root, self.logs, self.run):
            make_home_dir(directory)
        try:
            os.chmod(self.root, 0o700)
        except OSError as exc:
            raise HomeWriteError(self.root, exc) from exc
