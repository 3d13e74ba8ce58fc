"""ProcessSpec -> argv for the pinned llama.cpp binaries (pure; every flag checked against `--help`)."""

from __future__ import annotations

from pathlib import Path

from services.node.devices import is_cpu_only, llama_server_device_args, rpc_server_device_args
from services.runner.chat_templates import shipped_template
from services.runner.context_size import (
    UNKNOWN_TRAINED_CONTEXT_TOKENS,
    prompt_cache_mib,
    whole_input_batches,
)
from services.runner.gguf_meta import ModelTraits
from services.runner.slots import choose_layout, slot_args
from services.runner.spec import LOOPBACK_HOST, ModelKind, ProcessKind, ProcessSpec
from services.runner.speculation import Speculation, decide, parse_mode, speculation_args

LLAMA_SERVER_BINARY = "llama-server"
RPC_SERVER_BINARY = "ggml-rpc-server"
BINARIES = (LLAMA_SERVER_BINARY, RPC_SERVER_BINARY)
DEFAULT_CONTEXT_SIZE_TOKENS = UNKNOWN_TRAINED_CONTEXT_TOKENS  # -c when neither user nor header says
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

# Flags this module emits; an integration test checks each against the pinned build's --help.
LLAMA_SERVER_FLAGS = (
    "-m",
    "--host",
    "--port",
    "-c",
    "-b",
    "-ub",
    "-t",
    "--embeddings",
    "--reranking",
    "--alias",
    "--jinja",
    "--chat-template-file",
    "--no-webui",
    "--metrics",
    "--rpc",
    "--tensor-split",
    "--model-draft",
    "--spec-type",
    "--spec-draft-p-min",
    "--spec-draft-n-max",
    "--spec-draft-device",
    "-ngl",
    "--cache-ram",
    "--ctx-checkpoints",
    "-np",
    "-kvu",
    "-ot",
    "--device",
)
RPC_SERVER_FLAGS = ("-H", "-p", "-t", "-d")


def default_threads(physical_cores: int) -> int:
    """One thread per physical core (cpu_cores.py): SMT siblings and extra threads do not help
    decode, and every core does (-t 2 on 2 cores: 1.8x the tokens/s of -t 1)."""
    return max(1, physical_cores)


def binary_for(kind: ProcessKind) -> str:
    return LLAMA_SERVER_BINARY if kind is ProcessKind.LLAMA_SERVER else RPC_SERVER_BINARY


def chat_template_args(traits: ModelTraits) -> list[str]:
    """Always the jinja engine (tools and JSON mode need it); one of our templates where the GGUF's own,
    or llama.cpp's stand-in for a missing one, would refuse or hide what agents send (chat_templates.py)."""
    args = ["--jinja"]
    template = shipped_template(traits.architecture, traits.has_chat_template, traits.chat_template)
    if template:
        args += ["--chat-template-file", str(TEMPLATES_DIR / template)]
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
    spec: ProcessSpec,
    bin_dir: Path,
    port: int,
    threads: int,
    traits: ModelTraits,
    local_gpu: bool = False,
    speculation: Speculation | None = None,
) -> list[str]:
    layout = choose_layout(traits, spec.context_size, spec.parallel_slots, spec.memory_budget_bytes)
    context = layout.context_tokens
    argv = [
        str(bin_dir / LLAMA_SERVER_BINARY),
        "-m",
        spec.model_path,
        "--host",
        LOOPBACK_HOST,
        "--port",
        str(port),
        "-c",
        str(context),
        "-t",
        str(threads),
        # The gateway serves the console; llama-server's own UI would only be a second, unguarded one.
        "--no-webui",
        # Its Prometheus endpoint (behind the same API key): the gateway's /metrics reads slot use there.
        "--metrics",
    ]
    # Pooling comes from the GGUF (--embeddings keeps it; --reranking sets rank pooling). Either one
    # turns generation off, so no chat template is needed.
    if traits.kind is ModelKind.EMBEDDING:
        argv.append("--embeddings")
    elif traits.kind is ModelKind.RERANK:
        argv.append("--reranking")
    else:
        argv += chat_template_args(traits)
    if whole_input_batches(traits):
        argv += ["-b", str(context), "-ub", str(context)]
    argv += slot_args(traits, layout)
    if spec.max_output_tokens > 0 and traits.kind is ModelKind.CHAT:
        # llama-server applies -n only where a request names no cap of its own.
        argv += ["-n", str(spec.max_output_tokens)]
    if spec.model:
        argv += ["--alias", spec.model]
    if spec.rpc_endpoints:
        argv += split_args(spec.rpc_endpoints, spec.tensor_split, traits.layer_count, local_gpu)
        argv += SPLIT_HOST_ARGS
    else:
        if spec.tensor_split:
            argv += ["--tensor-split", _format_split(spec.tensor_split)]
        cache_mib = prompt_cache_mib(traits, context, spec.memory_budget_bytes, layout.slots)
        argv += ["--cache-ram", str(cache_mib)]
    if traits.kind is ModelKind.CHAT:
        # None: decided here from the spec alone, its draft taken as checked (process.py checks it).
        chosen = speculation or decide(parse_mode(spec.speculation), spec.draft_model_path)
        argv += speculation_args(chosen, bool(spec.rpc_endpoints), spec.device)
    argv += llama_server_device_args(spec.device)
    # Last, so a caller's flag overrides ours (llama.cpp keeps the last value of a repeated flag).
    return argv + list(spec.extra_args)


def rpc_server_argv(spec: ProcessSpec, bin_dir: Path, port: int, threads: int) -> list[str]:
    # llama.cpp RPC has no authentication: loopback only, the mesh tunnel is the only way in.
    argv = [str(bin_dir / RPC_SERVER_BINARY), "-H", LOOPBACK_HOST, "-p", str(port), "-t", str(threads)]
    return argv + rpc_server_device_args(spec.device) + list(spec.extra_args)


def build_argv(
    spec: ProcessSpec,
    bin_dir: Path,
    port: int,
    cores: int,
    traits: ModelTraits | None = None,
    local_gpu: bool = False,
    speculation: Speculation | None = None,
) -> list[str]:
    """`traits` of spec.model_path; None (unknown) assumes the GGUF carries its own chat template.
    `local_gpu`: this build sees a GPU of its own (matters for split hosts only). `speculation`: as
    process.py decided it once the draft was checked (None: from the spec, speculation.decide).
    `cores`: the physical cores it may use; spec.threads (--threads), when set, wins."""
    threads = spec.threads or default_threads(cores)
    # --device CPU on a machine with a GPU: the host offloads nothing of its own.
    local_gpu = local_gpu and not is_cpu_only(spec.device)
    if spec.kind is ProcessKind.LLAMA_SERVER:
        known = traits or ModelTraits()
        return llama_server_argv(spec, bin_dir, port, threads, known, local_gpu, speculation)
    return rpc_server_argv(spec, bin_dir, port, threads)
