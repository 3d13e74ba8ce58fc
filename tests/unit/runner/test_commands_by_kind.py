"""llama-server argv by model kind and chosen context (services/runner/commands.py)."""

from __future__ import annotations

from pathlib import Path

from services.runner.commands import LLAMA_SERVER_FLAGS, build_argv
from services.runner.context_size import PROMPT_CACHE_FLOOR_MIB
from services.runner.gguf_meta import ModelTraits
from services.runner.spec import ModelKind, ProcessKind, ProcessSpec

BIN = Path("/opt/llama/bin")
MIB = 1024**2
CHAT = ModelTraits("llama", True, 30, trained_context_tokens=8192, kv_bytes_per_token=23040)
EMBEDDING = ModelTraits(
    "bert", False, 12, kind=ModelKind.EMBEDDING, trained_context_tokens=512, encoder_only=True
)
RERANK = ModelTraits("bert", False, 12, kind=ModelKind.RERANK, trained_context_tokens=512, encoder_only=True)


def spec(context_size: int = 0, budget: int = 0) -> ProcessSpec:
    return ProcessSpec(
        key="llama-server/m",
        kind=ProcessKind.LLAMA_SERVER,
        model="m",
        model_path="/models/m.gguf",
        context_size=context_size,
        memory_budget_bytes=budget,
    )


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_an_embedding_model_runs_embeddings_only_with_its_whole_input_in_one_batch() -> None:
    argv = build_argv(spec(), BIN, port=1, cores=2, traits=EMBEDDING)
    assert "--embeddings" in argv and "--reranking" not in argv
    assert "--jinja" not in argv and "--chat-template-file" not in argv
    assert flag_value(argv, "-c") == flag_value(argv, "-b") == flag_value(argv, "-ub") == "512"


def test_a_reranker_runs_with_reranking() -> None:
    argv = build_argv(spec(), BIN, port=1, cores=2, traits=RERANK)
    assert "--reranking" in argv and "--embeddings" not in argv and "--jinja" not in argv
    assert flag_value(argv, "-ub") == "512"


def test_a_chat_model_gets_the_context_its_budget_holds() -> None:
    argv = build_argv(spec(budget=600 * MIB), BIN, port=1, cores=2, traits=CHAT)
    assert flag_value(argv, "-c") == "3584"  # tests/unit/runner/test_context_size.py
    assert "--jinja" in argv and "-ub" not in argv and "--embeddings" not in argv
    assert flag_value(build_argv(spec(), BIN, port=1, cores=2, traits=CHAT), "-c") == "8192"


def test_the_users_context_wins() -> None:
    argv = build_argv(spec(context_size=20000, budget=600 * MIB), BIN, port=1, cores=2, traits=CHAT)
    assert flag_value(argv, "-c") == "20000"


def test_every_flag_we_emit_is_in_the_checked_list() -> None:
    """The integration test checks LLAMA_SERVER_FLAGS against the pinned --help."""
    for traits in (CHAT, EMBEDDING, RERANK):
        argv = build_argv(spec(), BIN, port=1, cores=2, traits=traits)
        emitted = {arg for arg in argv[1:] if arg.startswith("-") and not arg.lstrip("-").isdigit()}
        assert emitted <= set(LLAMA_SERVER_FLAGS), emitted - set(LLAMA_SERVER_FLAGS)


def test_a_chat_model_caches_prompts_in_what_its_budget_leaves() -> None:
    """llama.cpp's default --cache-ram (8 GiB) would let a long soak grow past the node's memory."""
    argv = build_argv(spec(budget=2 * 1024 * MIB), BIN, port=1, cores=2, traits=CHAT)
    assert flag_value(argv, "--cache-ram") == "674"  # tests/unit/runner/test_prompt_cache.py
    assert flag_value(build_argv(spec(budget=600 * MIB), BIN, 1, 2, traits=CHAT), "--cache-ram") == str(
        PROMPT_CACHE_FLOOR_MIB
    )


def test_embedding_and_rerank_models_run_without_a_prompt_cache() -> None:
    for traits in (EMBEDDING, RERANK):
        assert flag_value(build_argv(spec(budget=600 * MIB), BIN, 1, 2, traits=traits), "--cache-ram") == "0"


def test_a_cache_size_in_extra_args_wins() -> None:
    """llama.cpp keeps the last value of a repeated flag: extra_args come last."""
    custom = ProcessSpec(
        key="llama-server/m",
        kind=ProcessKind.LLAMA_SERVER,
        model_path="/models/m.gguf",
        extra_args=("--cache-ram", "64"),
    )
    argv = build_argv(custom, BIN, port=1, cores=2, traits=CHAT)
    assert argv[-2:] == ["--cache-ram", "64"] and argv.count("--cache-ram") == 2
