"""One-line failure reasons from exit codes and log tails (services/runner/failure.py)."""

from __future__ import annotations

import signal

import pytest

from services.runner.failure import (
    MAX_ERROR_CHARS,
    OUTSIDE_KILL_SIGNALS,
    describe_returncode,
    first_error_line,
    killed_from_outside,
    summarize_exit,
)

BAD_MODEL_LOG = """\
0.00.001.000 I main: loading model
0.00.002.000 W warning: no usable GPU found, --gpu-layers option will be ignored
gguf_init_from_file_impl: invalid magic characters: 'junk', expected 'GGUF'
llama_model_load: error loading model: llama_model_loader: failed to load model from /m.gguf
srv    load_model: failed to load model, '/m.gguf'
srv   operator(): operator(): cleaning up before exit...
main: exiting due to model loading error
"""


def test_describe_returncode() -> None:
    assert describe_returncode(1) == "exited with code 1"
    assert describe_returncode(0) == "exited with code 0"
    assert describe_returncode(-signal.SIGKILL) == "killed by SIGKILL (out of memory?)"
    assert describe_returncode(-signal.SIGTERM) == "killed by SIGTERM"
    assert describe_returncode(None) == "did not exit"


def test_first_error_line_skips_warnings_and_exit_chatter() -> None:
    assert first_error_line(BAD_MODEL_LOG).startswith("gguf_init_from_file_impl: invalid magic")


LEVELLED_LOG = """\
0.00.005.470 W srv  llama_server: security: no API key is set
0.00.005.871 I srv    load_model: loading model '/tmp/test_model_failed0/corrupt.gguf'
0.00.005.976 E gguf_init_from_reader: invalid magic characters: 'this', expected 'GGUF'
0.00.006.070 E llama_model_load: error loading model: failed to load model from /tmp/x.gguf
0.00.007.267 E srv  llama_server: exiting due to model loading error
"""


def test_levelled_lines_use_the_level_not_words_in_paths() -> None:
    assert (
        first_error_line(LEVELLED_LOG)
        == "gguf_init_from_reader: invalid magic characters: 'this', expected 'GGUF'"
    )


def test_paths_and_quotes_do_not_count_as_errors() -> None:
    assert first_error_line("loading /tmp/failed_dir/m.gguf\nlistening on 'error.sock'\nok") == "ok"


def test_falls_back_to_the_last_line() -> None:
    assert first_error_line("starting\nlistening\n\n") == "listening"
    assert first_error_line("") == ""


def test_long_lines_are_cut() -> None:
    assert len(first_error_line("error: " + "x" * 5000)) == MAX_ERROR_CHARS


def test_summarize_exit() -> None:
    assert summarize_exit(1, "error: boom\n") == "exited with code 1: error: boom"
    assert summarize_exit(-signal.SIGKILL, "") == "killed by SIGKILL (out of memory?)"


SERVING_LOG = """\
0.00.005.470 I srv  llama_server: listening on http://127.0.0.1:40123
0.01.100.000 I slot      release: id  0 | task 3 | stop processing: n_tokens = 40, truncated = 0
0.01.100.100 I srv  update_slots: all slots are idle
"""


@pytest.mark.parametrize("sig", sorted(OUTSIDE_KILL_SIGNALS))
def test_a_kill_from_outside_names_the_signal_not_the_last_log_line(sig: signal.Signals) -> None:
    summary = summarize_exit(-sig, SERVING_LOG + "0.01.200.000 E some error of a request\n")
    assert summary.startswith(f"killed by {sig.name}")
    assert ":" not in summary  # no log line: a killed process never said why
    assert killed_from_outside(-sig)


def test_a_crash_signal_is_the_processes_own_failure_with_its_cause_if_logged() -> None:
    assert not killed_from_outside(-signal.SIGABRT) and not killed_from_outside(-signal.SIGSEGV)
    assert summarize_exit(-signal.SIGSEGV, SERVING_LOG) == "killed by SIGSEGV"
    assert summarize_exit(-signal.SIGABRT, RPC_ABORT_LOG).startswith("killed by SIGABRT: /src/ggml")


def test_an_exit_code_is_never_a_kill_and_keeps_its_log_line() -> None:
    assert not killed_from_outside(1) and not killed_from_outside(0) and not killed_from_outside(None)
    assert summarize_exit(1, SERVING_LOG) == "exited with code 1: srv  update_slots: all slots are idle"
    assert summarize_exit(1, BAD_MODEL_LOG).startswith("exited with code 1: gguf_init_from_file_impl:")


RPC_ABORT_LOG = """\
0.00.230.142 I slot      release: id  3 | task 0 | stop processing: n_tokens = 11, truncated = 0
/src/ggml/src/ggml-rpc/ggml-rpc.cpp:566: Remote RPC server crashed or returned malformed response
10.01.590.293 E send failed (bytes_sent=0, size_to_send=8)
"""


def test_rpc_endpoint_loss_names_the_rpc_server() -> None:
    summary = summarize_exit(-signal.SIGABRT, RPC_ABORT_LOG)
    assert summary.startswith("killed by SIGABRT: ")
    assert "Remote RPC server crashed" in summary
