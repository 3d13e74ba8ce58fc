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
    "-ngl",
    "--cache-ram",
    "--ctx-checkpoints",
    "-ot",
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


# A split host's prompt-cache save and SWA checkpoints each read KV back over RPC: 66 extra
# blocking round trips per request for Gemma 270M (bench/rpc_trace.py). Off for split hosts.
SPLIT_HOST_ARGS = ("--cache-ram", "0", "--ctx-checkpoints", "0")
ALL_LAYERS = 999


class SplitArgsError(ValueError):
    """A split the binaries cannot express (shares that do not match the RPC endpoints)."""


# llama.cpp counts the output layer in -ngl and offloads it first, so a CPU-only split host would
# have a worker compute the logits and send them back every token (1 MiB for Gemma's 262k vocab),
# and hold the output matrix (for tied embeddings a copy of the 178 MB token embeddings). Keeping
# both on the host leaves one small hidden-state read per token (bench/split.py).
KEEP_OUTPUT_ON_HOST = r"^(token_embd|output)\.weight$=CPU"


def split_args(
    rpc_endpoints: tuple[str, ...], shares: tuple[float, ...], layer_count: int, local_gpu: bool
) -> list[str]:
    """--rpc, -ngl, --tensor-split (and -ot) for a split host.

    `shares` is one fraction per RPC endpoint, in order, then the host's own (ProcessSpec.tensor_split).
    llama.cpp lists RPC devices first and local GPUs after them. A host with a GPU passes every
    share, host included, and offloads all layers; the output layer lands on the last device, its
    own GPU. A CPU-only host has no device of its own in that list: it offloads the workers' part
    of the repeating layers with -ngl (the last ones), keeps the rest on its CPU, and pins the
    output layer to its CPU.
    """
    if len(shares) != len(rpc_endpoints) + 1:
        raise SplitArgsError(f"{len(rpc_endpoints)} RPC endpoints need {len(rpc_endpoints) + 1} shares")
    if any(share < 0 for share in shares) or sum(shares) <= 0:
        raise SplitArgsError(f"shares must be positive: {shares}")
    args = ["--rpc", ",".join(rpc_endpoints)]
    if local_gpu:
        return [*args, "-ngl", str(ALL_LAYERS), "--tensor-split", _format_split(shares)]
    if layer_count <= 0:
        raise SplitArgsError("a CPU-only split host needs the model's layer count (GGUF block_count)")
    workers = sum(shares[:-1]) / sum(shares)
    offloaded = min(layer_count, max(1, round(layer_count * workers)))
    # +1: the output layer, which -ot then keeps on the host.
    ngl = str(offloaded + 1)
    return [*args, "-ngl", ngl, "--tensor-split", _format_split(shares[:-1]), "-ot", KEEP_OUTPUT_ON_HOST]


def llama_server_argv(
    spec: ProcessSpec, bin_dir: Path, port: int, threads: int, traits: ModelTraits, local_gpu: bool = False
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
        argv += split_args(spec.rpc_endpoints, spec.tensor_split, traits.layer_count, local_gpu)
        argv += SPLIT_HOST_ARGS
    elif spec.tensor_split:
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
    spec: ProcessSpec,
    bin_dir: Path,
    port: int,
    cpu_count: int,
    traits: ModelTraits | None = None,
    local_gpu: bool = False,
) -> list[str]:
    """`traits` of spec.model_path; None (unknown) assumes the GGUF carries its own chat template.
    `local_gpu`: this build sees a GPU of its own (matters for split hosts only)."""
    threads = default_threads(cpu_count)
    if spec.kind is ProcessKind.LLAMA_SERVER:
        return llama_server_argv(spec, bin_dir, port, threads, traits or ModelTraits(), local_gpu)
    return rpc_server_argv(spec, bin_dir, port, threads)
