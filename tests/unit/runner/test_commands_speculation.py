"""Speculation in the llama-server command line (services/runner/commands.py + speculation.py)."""

from __future__ import annotations

from pathlib import Path

from services.runner.commands import LLAMA_SERVER_FLAGS, build_argv
from services.runner.gguf_meta import ModelTraits
from services.runner.spec import ModelKind, ProcessKind, ProcessSpec
from services.runner.speculation import Speculation, speculation_args

BIN = Path("/opt/llama/bin")
SPECULATION_FLAGS = {"--spec-type", "--model-draft", "--spec-draft-p-min", "--spec-draft-n-max"}


def argv_for(
    traits: ModelTraits | None = None, decided: Speculation | None = None, **fields: object
) -> list[str]:
    spec = ProcessSpec(
        key="llama-server/m", kind=ProcessKind.LLAMA_SERVER, model="m", model_path="/m.gguf", **fields
    )  # type: ignore[arg-type]
    return build_argv(spec, BIN, port=1, cores=2, traits=traits, speculation=decided)


def test_off_passes_no_speculation_flag() -> None:
    argv = argv_for(speculation="off", draft_model_path="/d.gguf")
    assert not SPECULATION_FLAGS & set(argv)


def test_default_auto_undecided_by_the_runner_is_ngram() -> None:
    """Without process.py's decision (which checks a draft) auto is n-gram, solo and split host."""
    argv = argv_for()
    assert argv[argv.index("--spec-type") + 1] == "ngram-mod"
    split = argv_for(ModelTraits(layer_count=4), rpc_endpoints=("127.0.0.1:1",), tensor_split=(1.0, 1.0))
    assert split[split.index("--spec-type") + 1] == "ngram-mod"


def test_ngram_passes_ngram_mod() -> None:
    argv = argv_for(speculation="ngram")
    assert argv[argv.index("--spec-type") + 1] == "ngram-mod"
    assert "--model-draft" not in argv


def test_embedding_models_never_speculate() -> None:
    argv = argv_for(ModelTraits(kind=ModelKind.EMBEDDING), draft_model_path="/d.gguf")
    assert not SPECULATION_FLAGS & set(argv)


def test_the_checked_decision_wins_over_the_spec() -> None:
    """process.py passes what it decided once the draft was checked: a refused draft is not passed."""
    argv = argv_for(draft_model_path="/d.gguf", decided=Speculation(ngram=True, reason="refused"))
    assert "--model-draft" not in argv and "--spec-type" in argv


def test_split_host_draft_stays_local() -> None:
    traits = ModelTraits(layer_count=4)
    argv = argv_for(
        traits, rpc_endpoints=("127.0.0.1:1",), tensor_split=(1.0, 1.0), draft_model_path="/d.gguf"
    )
    assert argv[argv.index("--spec-draft-device") + 1] == "none"
    assert argv[argv.index("--model-draft") + 1] == "/d.gguf"


def test_every_speculation_flag_is_checked_against_the_build() -> None:
    emitted = speculation_args(Speculation(ngram=True, draft_model_path="/d"), split_host=True)
    assert {a for a in emitted if a.startswith("--")} <= set(LLAMA_SERVER_FLAGS)
