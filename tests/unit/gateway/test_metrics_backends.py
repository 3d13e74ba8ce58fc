"""What the metrics collector reads from other services (services/gateway/metrics_backends.py)."""

from __future__ import annotations

import pytest

from services.gateway.metrics_backends import (
    BadBackendMetrics,
    PoolEventCounter,
    runner_restarts,
    servers_to_scrape,
    slots_from_llama_metrics,
)
from services.gateway.metrics_snapshot import ModelSlots, ProcessKey
from services.gateway.metrics_supervisor import ServiceRestartCounter
from services.gateway.pool_summary import PoolEvent
from services.proto.meshllm.runner.v1 import runner_pb2

# An excerpt of the pinned llama-server's /metrics (with --metrics).
LLAMA_METRICS = """# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 32
# HELP llamacpp:requests_processing Number of requests processing
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# HELP llamacpp:requests_deferred Number of requests deferred
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 1
"""


def test_slots_from_llama_servers_own_metrics() -> None:
    assert slots_from_llama_metrics(LLAMA_METRICS, 4) == ModelSlots(2, 4, 1)


# As llama-server writes them (tools/server/server-task.cpp), with a speculating slot.
SPECULATING_METRICS = (
    LLAMA_METRICS
    + """# HELP llamacpp:spec_decode_num_draft_tokens_total Drafted
# TYPE llamacpp:spec_decode_num_draft_tokens_total counter
llamacpp:spec_decode_num_draft_tokens_total 128
# HELP llamacpp:spec_decode_num_accepted_tokens_total Speculative: Total draft tokens accepted
# TYPE llamacpp:spec_decode_num_accepted_tokens_total counter
llamacpp:spec_decode_num_accepted_tokens_total 71
# HELP llamacpp:spec_decode_num_accepted_tokens_per_pos_total Speculative: accepted by position
# TYPE llamacpp:spec_decode_num_accepted_tokens_per_pos_total counter
llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="0"} 9
"""
)


def test_drafted_and_accepted_tokens_from_a_speculating_server() -> None:
    assert slots_from_llama_metrics(SPECULATING_METRICS, 4) == ModelSlots(2, 4, 1, drafted=128, accepted=71)


def test_metrics_without_the_slot_gauge_are_an_error() -> None:
    with pytest.raises(BadBackendMetrics, match="requests_processing"):
        slots_from_llama_metrics("# nothing\n", 4)
    with pytest.raises(BadBackendMetrics):
        slots_from_llama_metrics("<html>not metrics</html>", 4)


def _process(
    kind: int, model: str, state: int, restarts: int = 0, port: int = 8000
) -> runner_pb2.ProcessStatus:
    key = ("llama-server/" if kind == runner_pb2.PROCESS_KIND_LLAMA_SERVER else "rpc-server/") + model
    spec = runner_pb2.ProcessSpec(key=key, kind=kind, model=model)
    return runner_pb2.ProcessStatus(
        spec=spec, state=state, host="127.0.0.1", port=port, restarts=restarts, api_key="k"
    )


def test_only_ready_llama_servers_are_scraped_and_every_process_has_its_restarts() -> None:
    status = runner_pb2.RunnerStatus(
        processes=[
            _process(runner_pb2.PROCESS_KIND_LLAMA_SERVER, "a", runner_pb2.PROCESS_STATE_READY, 1),
            _process(runner_pb2.PROCESS_KIND_LLAMA_SERVER, "b", runner_pb2.PROCESS_STATE_BACKOFF, 3),
            _process(runner_pb2.PROCESS_KIND_RPC_SERVER, "c", runner_pb2.PROCESS_STATE_READY, 2),
        ]
    )
    assert [s.model for s in servers_to_scrape(status)] == ["a"]
    assert runner_restarts(status) == {
        ProcessKey("runner", "llama-server/a"): 1,
        ProcessKey("runner", "llama-server/b"): 3,
        ProcessKey("runner", "rpc-server/c"): 2,
    }


def test_pool_events_are_counted_once_as_they_appear() -> None:
    counter = PoolEventCounter()
    first = PoolEvent(1.0, "m", "promoted", "lost its server")
    counter.update([first])
    counter.update([first])
    counter.update([first, PoolEvent(2.0, "m", "retired", "cold"), PoolEvent(3.0, "n", "promoted", "")])
    assert counter.counts == {"promoted": 2, "retired": 1}


def test_a_service_restart_is_a_changed_start_time() -> None:
    counter = ServiceRestartCounter()
    counter.update([{"name": "runner", "start": 100}, {"name": "mesh", "start": 100}])
    counter.update([{"name": "runner", "start": 100}, {"name": "mesh", "start": 100}])
    counter.update([{"name": "runner", "start": 160}, {"name": "mesh", "start": 100}])
    counter.update([{"name": "runner", "start": 0}])  # stopped: not a restart yet
    assert counter.restarts() == {
        ProcessKey("supervisord", "runner"): 1,
        ProcessKey("supervisord", "mesh"): 0,
    }
