"""The routing table: runner + plan state in, one decision per model out (no sockets)."""

from __future__ import annotations

import pytest

from services.gateway.routing import (
    MODEL_LOADING_RETRY_AFTER_S,
    WAITING_FOR_CAPACITY_RETRY_AFTER_S,
    LocalServer,
    ModelKind,
    ModelLoading,
    NotServable,
    PlannedModel,
    PlanRole,
    RemoteServer,
    Route,
    RoutingTable,
    ServerState,
    UnknownModel,
)
from services.gateway.sources import RoutingSources, plan_models, servers_from_runner
from services.proto.meshllm.placement.v1 import placement_pb2
from services.proto.meshllm.runner.v1 import runner_pb2

GEMMA = "gemma3-270m"
QWEN = "Qwen2.5-3B"


def ready(model: str = GEMMA, port: int = 8081) -> LocalServer:
    return LocalServer(model, ServerState.READY, "127.0.0.1", port, since_unix_s=1700000000.5)


def test_empty_table_knows_nothing() -> None:
    result = RoutingTable.empty().lookup(GEMMA)
    assert result == UnknownModel(GEMMA, ())


def test_ready_server_is_a_route() -> None:
    table = RoutingTable.build([ready()], [PlannedModel(GEMMA, PlanRole.SOLO)])
    route = table.lookup(GEMMA)
    assert isinstance(route, Route)
    assert route.base_url == "http://127.0.0.1:8081"
    assert route.endpoint == "127.0.0.1:8081"


def test_ready_server_without_a_plan_still_routes() -> None:
    # The runner's word wins: a server that is up answers even before placement is reachable.
    assert isinstance(RoutingTable.build([ready()], []).lookup(GEMMA), Route)


@pytest.mark.parametrize("state", [ServerState.STARTING, ServerState.BACKOFF, ServerState.STOPPING])
def test_starting_server_is_loading_with_retry_hint(state: ServerState) -> None:
    table = RoutingTable.build([LocalServer(GEMMA, state)], [])
    result = table.lookup(GEMMA)
    assert isinstance(result, ModelLoading)
    assert result.retry_after_s == MODEL_LOADING_RETRY_AFTER_S
    assert state.value in result.detail


def test_failed_server_is_not_servable_with_its_error() -> None:
    table = RoutingTable.build([LocalServer(GEMMA, ServerState.FAILED, last_error="bad magic in gguf")], [])
    result = table.lookup(GEMMA)
    assert result == NotServable(GEMMA, "bad magic in gguf")
    assert table.entries[0].state == "failed"


@pytest.mark.parametrize("role", [PlanRole.SOLO, PlanRole.SPLIT_HOST])
def test_assigned_but_not_yet_started_is_loading(role: PlanRole) -> None:
    result = RoutingTable.build([], [PlannedModel(QWEN, role)]).lookup(QWEN)
    assert isinstance(result, ModelLoading)


def test_waiting_for_capacity_says_why_and_when_to_retry() -> None:
    plan = [PlannedModel(QWEN, PlanRole.WAITING, ("needs 2.3 GB, mesh has 1.1 GB",))]
    table = RoutingTable.build([], plan)
    result = table.lookup(QWEN)
    assert isinstance(result, NotServable)
    assert "needs 2.3 GB" in result.reason
    assert result.retry_after_s == WAITING_FOR_CAPACITY_RETRY_AFTER_S
    assert table.entries[0].state == "waiting"


def test_does_not_fit_has_no_retry_hint() -> None:
    table = RoutingTable.build([], [PlannedModel(QWEN, PlanRole.DOES_NOT_FIT, ("20 GB model, 8 GB total",))])
    result = table.lookup(QWEN)
    assert isinstance(result, NotServable)
    assert result.retry_after_s is None
    assert "20 GB model" in result.reason
    assert table.entries[0].state == "does_not_fit"


@pytest.mark.parametrize(
    ("role", "state"), [(PlanRole.STANDBY, "standby"), (PlanRole.SPLIT_WORKER, "remote")]
)
def test_models_served_elsewhere_are_known_but_not_routable_yet(role: PlanRole, state: str) -> None:
    table = RoutingTable.build([], [PlannedModel(QWEN, role)])
    assert isinstance(table.lookup(QWEN), NotServable)
    assert table.entries[0].state == state
    assert table.known_models == (QWEN,)


def test_unknown_model_lists_every_known_model_sorted() -> None:
    table = RoutingTable.build([ready()], [PlannedModel(QWEN, PlanRole.WAITING)])
    assert table.lookup("llama-70b") == UnknownModel("llama-70b", (QWEN, GEMMA))


def test_lookup_falls_back_to_case_insensitive_names() -> None:
    table = RoutingTable.build([ready(QWEN)], [])
    route = table.lookup("qwen2.5-3b")
    assert isinstance(route, Route)
    assert route.model == QWEN


def test_best_process_wins_when_the_runner_reports_two() -> None:
    # During a restart the old process may still be reported as stopping next to the new one.
    servers = [
        LocalServer(GEMMA, ServerState.STOPPING),
        ready(port=9000),
        LocalServer(GEMMA, ServerState.FAILED),
    ]
    route = RoutingTable.build(servers, []).lookup(GEMMA)
    assert isinstance(route, Route)
    assert route.port == 9000


def test_entries_describe_local_endpoints() -> None:
    table = RoutingTable.build([ready()], [PlannedModel(QWEN, PlanRole.WAITING, ("too big",))])
    by_model = {entry.model: entry for entry in table.entries}
    assert by_model[GEMMA].state == "ready"
    assert by_model[GEMMA].local is True
    assert by_model[GEMMA].endpoint == "127.0.0.1:8081"
    assert by_model[QWEN].local is False
    assert by_model[QWEN].endpoint == ""
    assert "too big" in by_model[QWEN].detail


def test_from_routes_builds_ready_routes() -> None:
    table = RoutingTable.from_routes([Route(GEMMA, "127.0.0.1", 5555)])
    assert table.lookup(GEMMA) == Route(GEMMA, "127.0.0.1", 5555)


def _runner_status() -> runner_pb2.RunnerStatus:
    return runner_pb2.RunnerStatus(
        generation=3,
        processes=[
            runner_pb2.ProcessStatus(
                spec=runner_pb2.ProcessSpec(kind=runner_pb2.PROCESS_KIND_LLAMA_SERVER, model=GEMMA),
                state=runner_pb2.PROCESS_STATE_READY,
                host="127.0.0.1",
                port=4242,
            ),
            runner_pb2.ProcessStatus(
                spec=runner_pb2.ProcessSpec(kind=runner_pb2.PROCESS_KIND_RPC_SERVER, model=QWEN),
                state=runner_pb2.PROCESS_STATE_READY,
                host="127.0.0.1",
                port=4343,
            ),
        ],
    )


def test_runner_status_yields_llama_servers_only() -> None:
    servers = servers_from_runner(_runner_status())
    assert servers == (LocalServer(GEMMA, ServerState.READY, "127.0.0.1", 4242),)


def test_plan_proto_maps_roles_and_reasons() -> None:
    plan = placement_pb2.Plan(
        assignments=[
            placement_pb2.Assignment(
                model=QWEN, role=placement_pb2.ASSIGNMENT_ROLE_DOES_NOT_FIT, reasons=["a", "b"]
            ),
            placement_pb2.Assignment(model="x", role=placement_pb2.ASSIGNMENT_ROLE_UNSPECIFIED),
        ]
    )
    assert plan_models(plan) == (PlannedModel(QWEN, PlanRole.DOES_NOT_FIT, ("a", "b")),)


async def test_sources_rebuild_the_table_on_each_message_and_keep_it_on_loss() -> None:
    sources = RoutingSources()
    await sources.on_plan(placement_pb2.Plan(assignments=[placement_pb2.Assignment(model=GEMMA, role=1)]))
    assert isinstance(sources.table.lookup(GEMMA), ModelLoading)
    await sources.on_runner_status(_runner_status())
    assert isinstance(sources.table.lookup(GEMMA), Route)
    await sources.on_runner_lost()
    assert not sources.runner_connected
    assert isinstance(sources.table.lookup(GEMMA), Route)


def test_a_model_whose_file_is_being_fetched_is_loading_for_longer() -> None:
    from services.gateway.routing import MODEL_FETCHING_RETRY_AFTER_S

    table = RoutingTable.build([], [PlannedModel(GEMMA, PlanRole.FETCHING)])
    decision = table.lookup(GEMMA)
    assert isinstance(decision, ModelLoading) and decision.retry_after_s == MODEL_FETCHING_RETRY_AFTER_S
    assert "fetched from peers" in decision.detail
    assert [entry.state for entry in table.entries] == ["fetching"]
    fetching = placement_pb2.Assignment(model=GEMMA, role=placement_pb2.ASSIGNMENT_ROLE_FETCHING)
    assert plan_models(placement_pb2.Plan(assignments=[fetching])) == (
        PlannedModel(GEMMA, PlanRole.FETCHING),
    )


def test_each_model_carries_its_kind_and_the_smallest_context_of_its_servers() -> None:
    local = LocalServer(
        "emb", ServerState.READY, "127.0.0.1", 1, kind=ModelKind.EMBEDDING, context_tokens=512
    )
    peers = [
        RemoteServer("chat", "b" * 32, ModelKind.CHAT, 8192),
        RemoteServer("chat", "c" * 32, ModelKind.CHAT, 4096),
        RemoteServer("old", "c" * 32),  # an older peer that does not say
    ]
    table = RoutingTable.build([local], [], peers, "a" * 32)
    facts = {e.model: (e.kind, e.context_tokens) for e in table.entries}
    assert facts == {
        "chat": (ModelKind.CHAT, 4096),
        "emb": (ModelKind.EMBEDDING, 512),
        "old": (ModelKind.UNKNOWN, 0),
    }
    assert table.kind_of("chat") is ModelKind.CHAT and table.kind_of("nope") is ModelKind.UNKNOWN
    assert table.ready_models_of_kind(ModelKind.EMBEDDING) == ("emb",)
