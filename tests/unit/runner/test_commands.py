"""ProcessSpec -> argv (services/runner/commands.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.runner.commands import (
    DEFAULT_CONTEXT_SIZE_TOKENS,
    LLAMA_SERVER_FLAGS,
    RPC_SERVER_FLAGS,
    TEMPLATES_DIR,
    SplitArgsError,
    build_argv,
    chat_template_args,
    default_threads,
    split_args,
)
from services.runner.gguf_meta import ModelTraits
from services.runner.spec import ProcessKind, ProcessSpec

BIN = Path("/opt/llama/bin")


def llama_spec(**overrides: object) -> ProcessSpec:
    fields: dict[str, object] = {
        "key": "llama-server/tiny",
        "kind": ProcessKind.LLAMA_SERVER,
        "model": "tiny",
        "model_path": "/models/tiny.gguf",
    }
    fields.update(overrides)
    return ProcessSpec(**fields)  # type: ignore[arg-type]


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_llama_server_basics() -> None:
    argv = build_argv(llama_spec(context_size=2048), BIN, port=4321, cores=4)
    assert argv[0] == "/opt/llama/bin/llama-server"
    assert flag_value(argv, "-m") == "/models/tiny.gguf"
    assert flag_value(argv, "--host") == "127.0.0.1"
    assert flag_value(argv, "--port") == "4321"
    assert flag_value(argv, "-c") == "2048"
    assert flag_value(argv, "-t") == "4"
    assert flag_value(argv, "--alias") == "tiny"
    assert "--no-webui" in argv
    assert "--jinja" in argv


def test_default_context_size() -> None:
    argv = build_argv(llama_spec(), BIN, port=1, cores=2)
    assert flag_value(argv, "-c") == str(DEFAULT_CONTEXT_SIZE_TOKENS)


def test_no_split_flags_for_a_solo_server() -> None:
    argv = build_argv(llama_spec(), BIN, port=1, cores=2)
    for flag in ("--rpc", "--tensor-split", "--model-draft"):
        assert flag not in argv


SPLIT_ENDPOINTS = ("127.0.0.1:5001", "127.0.0.1:5002")


def test_split_host_with_a_gpu_lists_every_share_and_offloads_all_layers() -> None:
    spec = llama_spec(rpc_endpoints=SPLIT_ENDPOINTS, tensor_split=(0.25, 0.25, 0.5))
    argv = build_argv(spec, BIN, port=1, cores=2, traits=ModelTraits("llama", True, 18), local_gpu=True)
    assert flag_value(argv, "--rpc") == "127.0.0.1:5001,127.0.0.1:5002"
    assert flag_value(argv, "--tensor-split") == "0.25,0.25,0.5"
    assert flag_value(argv, "-ngl") == "999"


def test_cpu_only_split_host_keeps_its_share_by_layer_count() -> None:
    """Half the layers on two workers: 18 layers → 9 offloaded, split 1:1 between the workers."""
    spec = llama_spec(rpc_endpoints=SPLIT_ENDPOINTS, tensor_split=(0.25, 0.25, 0.5))
    argv = build_argv(spec, BIN, port=1, cores=2, traits=ModelTraits("gemma3", True, 18))
    assert flag_value(argv, "-ngl") == "10"  # 9 repeating layers, and the output layer...
    assert flag_value(argv, "-ot") == r"^(token_embd|output)\.weight$=CPU"  # ...whose weights stay here
    assert flag_value(argv, "--tensor-split") == "0.25,0.25"


def test_split_host_saves_no_prompt_cache_or_checkpoints() -> None:
    """Each would read KV back over RPC: dozens of blocking round trips per request."""
    spec = llama_spec(rpc_endpoints=SPLIT_ENDPOINTS[:1], tensor_split=(0.5, 0.5))
    argv = build_argv(spec, BIN, port=1, cores=2, traits=ModelTraits("llama", True, 4))
    assert flag_value(argv, "--cache-ram") == "0" and flag_value(argv, "--ctx-checkpoints") == "0"
    assert flag_value(build_argv(llama_spec(), BIN, port=1, cores=2), "--cache-ram") != "0"


@pytest.mark.parametrize(
    ("shares", "layers", "offloaded"),
    [((0.01, 0.99), 18, "2"), ((0.99, 0.01), 18, "19"), ((1.0, 3.0), 8, "3"), ((2.0, 2.0), 5, "3")],
)
def test_cpu_host_offloads_at_least_one_layer_and_never_more_than_exist(
    shares: tuple[float, float], layers: int, offloaded: str
) -> None:
    args = split_args(SPLIT_ENDPOINTS[:1], shares, layers, local_gpu=False)
    assert flag_value(args, "-ngl") == offloaded


def test_split_shares_must_match_the_endpoints() -> None:
    with pytest.raises(SplitArgsError, match="need 3 shares"):
        split_args(SPLIT_ENDPOINTS, (0.5, 0.5), 18, local_gpu=False)
    with pytest.raises(SplitArgsError, match="layer count"):
        split_args(SPLIT_ENDPOINTS[:1], (0.5, 0.5), 0, local_gpu=False)


def test_draft_model() -> None:
    argv = build_argv(llama_spec(draft_model_path="/models/draft.gguf"), BIN, port=1, cores=2)
    assert flag_value(argv, "--model-draft") == "/models/draft.gguf"


def test_extra_args_come_last_so_they_override() -> None:
    argv = build_argv(llama_spec(extra_args=("-t", "7", "-ngl", "12")), BIN, port=1, cores=2)
    assert argv[-4:] == ["-t", "7", "-ngl", "12"]


def test_rpc_server_binds_loopback_only() -> None:
    spec = ProcessSpec(key="rpc-server/tiny", kind=ProcessKind.RPC_SERVER, model="tiny")
    argv = build_argv(spec, BIN, port=5050, cores=16)
    assert argv == ["/opt/llama/bin/ggml-rpc-server", "-H", "127.0.0.1", "-p", "5050", "-t", "16"]


def test_rpc_server_extra_args() -> None:
    spec = ProcessSpec(key="rpc", kind=ProcessKind.RPC_SERVER, extra_args=("-c",))
    assert build_argv(spec, BIN, port=1, cores=2)[-1] == "-c"


@pytest.mark.parametrize(("cores", "threads"), [(0, 1), (1, 1), (2, 2), (16, 16)])
def test_one_thread_per_physical_core(cores: int, threads: int) -> None:
    assert default_threads(cores) == threads


def test_model_with_a_tool_aware_template_of_its_own_keeps_it() -> None:
    template = "{% for m in messages %}<|im_start|>{{ m.role }}{{ m.tool_calls }}{% endfor %}"
    assert chat_template_args(ModelTraits("llama", has_chat_template=True, chat_template=template)) == [
        "--jinja"
    ]


def test_a_tool_blind_chatml_template_gets_ours_which_shows_tools_and_calls() -> None:
    template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}"
    args = chat_template_args(ModelTraits("llama", has_chat_template=True, chat_template=template))
    assert args == ["--jinja", "--chat-template-file", str(TEMPLATES_DIR / "chatml.jinja")]


def test_gemma_without_template_gets_ours() -> None:
    args = chat_template_args(ModelTraits("gemma3", has_chat_template=False))
    assert args == ["--jinja", "--chat-template-file", str(TEMPLATES_DIR / "gemma.jinja")]
    assert (TEMPLATES_DIR / "gemma.jinja").is_file()


def test_a_model_without_any_template_gets_our_chatml_instead_of_llama_cpps_stand_in() -> None:
    args = chat_template_args(ModelTraits("mystery", has_chat_template=False))
    assert args == ["--jinja", "--chat-template-file", str(TEMPLATES_DIR / "chatml.jinja")]


def test_every_emitted_flag_is_declared() -> None:
    """The declared lists are what the integration test checks against the real --help."""
    spec = llama_spec(rpc_endpoints=("127.0.0.1:1",), tensor_split=(1.0, 1.0), draft_model_path="/d.gguf")
    traits = ModelTraits("gemma3", has_chat_template=False, layer_count=18)
    llama_flags = {a for a in build_argv(spec, BIN, 1, 2, traits) if a.startswith("-")}
    assert llama_flags <= set(LLAMA_SERVER_FLAGS)
    rpc = ProcessSpec(key="rpc", kind=ProcessKind.RPC_SERVER)
    assert {a for a in build_argv(rpc, BIN, 1, 2) if a.startswith("-")} <= set(RPC_SERVER_FLAGS)
