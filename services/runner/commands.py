"""ProcessSpec -> argv for the pinned llama.cpp binaries (pure; every flag checked against `--help`)."""

from __future__ import annotations

from pathlib import Path

from services.runner.gguf_meta import ModelTraits
from services.runner.spec import LOOPBACK_HOST, ProcessKind, ProcessSpec

LLAMA_SERVER_BINARY = "llama-server"
RPC_SERVER_BINARY = "ggml-rpc-server"
BINARIES = (LLAMA_SERVER_BINARY, RPC_SERVER_BINARY)
DEFAULT_CONTEXT_SIZE_TOKENS = 4096
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
# Jinja chat templates for architectures whose GGUFs often ship without one (the packaged Gemma 3
# 270M does); without it llama-server silently falls back to ChatML, which Gemma does not know.
FALLBACK_CHAT_TEMPLATES = {
    "gemma": "gemma.jinja",
    "gemma2": "gemma.jinja",
    "gemma3": "gemma.jinja",
    "gemma3n": "gemma.jinja",
}

# Flags this module emits; an integration test checks each against the pinned build's --help.
LLAMA_SERVER_FLAGS = (
    "-m",
    "--host",
    "--port",
    "-c",
    "-t",
    "--alias",
    "--jinja",
    "--chat-template-file",
    "--no-webui",
    "--rpc",
    "--tensor-split",
    "--model-draft",
)
RPC_SERVER_FLAGS = ("-H", "-p", "-t")


def default_threads(cpu_count: int) -> int:
    """About one thread per physical core (logical / 2 with SMT).

    Decode is memory-bound, so threads beyond the physical cores do not help, and the spare
    cores keep the gateway and the mesh tunnel (latency-critical for split decode) responsive.
    """
    return max(1, cpu_count // 2)


def binary_for(kind: ProcessKind) -> str:
    return LLAMA_SERVER_BINARY if kind is ProcessKind.LLAMA_SERVER else RPC_SERVER_BINARY


def chat_template_args(traits: ModelTraits) -> list[str]:
    """Always the jinja engine (tools and JSON mode need it); a template file only if the GGUF lacks one."""
    args = ["--jinja"]
    fallback = FALLBACK_CHAT_TEMPLATES.get(traits.architecture)
    if not traits.has_chat_template and fallback:
        args += ["--chat-template-file", str(TEMPLATES_DIR / fallback)]
    return args


def _format_split(shares: tuple[float, ...]) -> str:
    return ",".join(f"{share:g}" for share in shares)


def llama_server_argv(
    spec: ProcessSpec, bin_dir: Path, port: int, threads: int, traits: ModelTraits
) -> list[str]:
    argv = [
        str(bin_dir / LLAMA_SERVER_BINARY),
        "-m",
        spec.model_path,
        "--host",
        LOOPBACK_HOST,
        "--port",
        str(port),
        "-c",
        str(spec.context_size or DEFAULT_CONTEXT_SIZE_TOKENS),
        "-t",
        str(threads),
        # The gateway serves the console; llama-server's own UI would only be a second, unguarded one.
        "--no-webui",
        *chat_template_args(traits),
    ]
    if spec.model:
        argv += ["--alias", spec.model]
    if spec.rpc_endpoints:
        argv += ["--rpc", ",".join(spec.rpc_endpoints)]
    if spec.tensor_split:
        argv += ["--tensor-split", _format_split(spec.tensor_split)]
    if spec.draft_model_path:
        argv += ["--model-draft", spec.draft_model_path]
    # Last, so a caller's flag overrides ours (llama.cpp keeps the last value of a repeated flag).
    return argv + list(spec.extra_args)


def rpc_server_argv(spec: ProcessSpec, bin_dir: Path, port: int, threads: int) -> list[str]:
    # llama.cpp RPC has no authentication: loopback only, the mesh tunnel is the only way in.
    argv = [str(bin_dir / RPC_SERVER_BINARY), "-H", LOOPBACK_HOST, "-p", str(port), "-t", str(threads)]
    return argv + list(spec.extra_args)


def build_argv(
    spec: ProcessSpec, bin_dir: Path, port: int, cpu_count: int, traits: ModelTraits | None = None
) -> list[str]:
    """`traits` of spec.model_path; None (unknown) assumes the GGUF carries its own chat template."""
    threads = default_threads(cpu_count)
    if spec.kind is ProcessKind.LLAMA_SERVER:
        return llama_server_argv(spec, bin_dir, port, threads, traits or ModelTraits())
    return rpc_server_argv(spec, bin_dir, port, threads)
