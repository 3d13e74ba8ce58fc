"""The node config: what the CLI asked for, written once to <home>/node.toml, read by every service."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tomli_w

from services.node.home import NodeHome, model_cache_dir
from services.node.home_files import write_home_file

DEFAULT_API_PORT = 9337
DEFAULT_CONSOLE_PORT = 3131
LOOPBACK_HOST = "127.0.0.1"
ALL_INTERFACES_HOST = "0.0.0.0"
# The API key (--api-key) lives in its own file, readable by the node's user only: never in node.toml,
# which every service reads and tools print, and never in the services' environment.
API_KEY_FILE = "api.key"
API_KEY_FILE_MODE = 0o600
API_KEY_ENV = "MESH_LLM_API_KEY"
MAX_API_KEY_BYTES = 1024
# The gateway's listener for requests peers forward through the mesh (services/gateway/mesh_ingress.py).
MESH_INGRESS_SOCKET = "ingress.sock"  # as long as "gateway.sock": fits wherever the gRPC sockets do


class ConfigError(Exception):
    """node.toml is missing or does not describe a valid node."""


class InvalidApiKey(ConfigError):
    """An API key that is empty, too long, or not sendable in an HTTP header."""


@dataclass(frozen=True)
class ModelRequest:
    """A model this node wants to serve, resolved to a local file by the CLI."""

    name: str
    path: str


@dataclass(frozen=True)
class NodeConfig:
    home: Path
    name: str = ""
    api_port: int = DEFAULT_API_PORT
    console_port: int = DEFAULT_CONSOLE_PORT
    listen_all: bool = False
    client: bool = False
    max_vram_gb: float | None = None
    models: tuple[ModelRequest, ...] = ()
    split: bool = False
    bind_port: int = 0
    # The mesh's UDP socket (and the RPC fast path) bind this; empty: every interface (DESIGN §3).
    bind_ip: str = ""
    join_tokens: tuple[str, ...] = ()
    # host:port others should dial to reach this node (port forwarding, NAT, test link simulators).
    advertise: tuple[str, ...] = ()
    # --allow-host: more names the API and console answer to (a reverse proxy's, a DNS name for the
    # machine), exact or "*.example.com"; loopback names always (services/gateway/host_check.py).
    allowed_hosts: tuple[str, ...] = ()
    region: str = ""
    # Discovery (services/discovery): publish this mesh's listing to Nostr relays and/or the LAN.
    publish: bool = False
    mesh_name: str = ""
    max_clients: int = 0  # 0: no limit; otherwise delisted while this many clients are connected
    relays: tuple[str, ...] = ()  # Nostr relay URLs to publish to (empty: no Nostr)
    lan: bool = False  # announce on the LAN by mDNS even if not published
    no_lan: bool = False  # never announce on the LAN
    log_format: str = "pretty"
    log_level: str = "info"
    llama_bin_dir: str = ""
    context_size: int = 0  # tokens per llama-server (--ctx-size); 0: the runner sizes it per model
    parallel_slots: int = 0  # requests each llama-server decodes at once (--parallel); 0: the runner's choice
    max_output_tokens: int = 0  # --max-output-tokens: the cap for requests that name none; 0: none
    threads: int = 0  # --threads: llama.cpp threads per process; 0: one per physical core
    # --device: the llama.cpp device(s) llama-server and rpc-server use (services/node/devices.py);
    # empty: llama.cpp's default, every GPU it sees.
    device: str = ""
    # Speculative decoding (services/runner/speculation.py): auto, draft, ngram or off; `draft`
    # (--draft, a resolved file) serves every model whose vocabulary it shares, `no_draft` pairs none.
    speculation: str = "auto"
    draft: str = ""
    no_draft: bool = False
    # Where this node keeps model files: it advertises (and shares) every GGUF there, and files
    # fetched from peers land there. Empty: the shared model cache.
    models_dir: str = ""
    # A replica the pool added retires after its model's demand per server stays cold this long.
    retire_after_s: float = 300.0
    # The API requires the key in <home>/api.key (`read_api_key`); without one, other machines are refused
    # (with --listen-all) unless `no_api_key` opens the API to the network.
    require_api_key: bool = False
    no_api_key: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def node_home(self) -> NodeHome:
        return NodeHome(self.home)

    @property
    def model_store(self) -> Path:
        return Path(self.models_dir) if self.models_dir else model_cache_dir()

    @property
    def bind_host(self) -> str:
        return ALL_INTERFACES_HOST if self.listen_all else LOOPBACK_HOST

    @property
    def mesh_ingress_socket(self) -> Path:
        return self.node_home.run / MESH_INGRESS_SOCKET

    @property
    def api_url(self) -> str:
        return f"http://localhost:{self.api_port}/v1"

    @property
    def console_url(self) -> str:
        return f"http://localhost:{self.console_port}"

    def save(self) -> None:
        data = asdict(self)
        data["home"] = str(self.home)
        data["models"] = [asdict(m) for m in self.models]
        data["join_tokens"] = list(self.join_tokens)
        data["advertise"] = list(self.advertise)
        data["allowed_hosts"] = list(self.allowed_hosts)
        data["relays"] = list(self.relays)
        if self.max_vram_gb is None:
            del data["max_vram_gb"]
        self.node_home.ensure()
        write_home_file(self.node_home.node_config, tomli_w.dumps(data).encode())

    @classmethod
    def load(cls, home: Path) -> NodeConfig:
        path = NodeHome(home).node_config
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"{path} not found: start the node with `mesh-llm`") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
        data["home"] = Path(data.get("home") or home)
        data["models"] = tuple(ModelRequest(**m) for m in data.get("models", []))
        data["join_tokens"] = tuple(data.get("join_tokens", []))
        data["advertise"] = tuple(data.get("advertise", []))
        data["allowed_hosts"] = tuple(data.get("allowed_hosts", []))
        data["relays"] = tuple(data.get("relays", []))
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
        return cls(**data)


def check_api_key(key: str) -> str:
    """The key as clients will send it (`Authorization: Bearer KEY`); raises InvalidApiKey."""
    if not key:
        raise InvalidApiKey("the API key is empty")
    if len(key.encode()) > MAX_API_KEY_BYTES:
        raise InvalidApiKey(f"the API key is longer than {MAX_API_KEY_BYTES} bytes")
    # Visible ASCII only: what every client can put in a header, and no space to split "Bearer KEY" on.
    if not all("!" <= char <= "~" for char in key):
        raise InvalidApiKey("the API key must be visible ASCII characters without spaces")
    return key


def api_key_file(home: Path) -> Path:
    return home / API_KEY_FILE


def save_api_key(home: Path, key: str | None) -> None:
    """Write the node's key (mode 0600), or remove it: a node started without --api-key has none."""
    path = api_key_file(home)
    if key is None:
        path.unlink(missing_ok=True)
        return
    NodeHome(home).ensure()
    write_home_file(path, check_api_key(key).encode(), API_KEY_FILE_MODE)


def read_api_key(home: Path) -> str | None:
    """The API key the node at `home` requires, or None when it runs without one.

    For tools that talk to a running node (the `mesh-llm claude|codex|…` launchers pass it on as
    their clients' key). Raises ConfigError when the file exists but cannot be read or is not a key.
    """
    path = api_key_file(home)
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the API key ({exc})") from exc
    try:
        return check_api_key(key)
    except InvalidApiKey as exc:
        raise ConfigError(f"{path}: {exc}") from exc
