"""--parallel reaches every llama-server's spec, and the slots each runs with reach gossip
(services/placement/processes.py) and the gateway's model list (services/gateway/routing.py)."""

from __future__ import annotations

from services.gateway.routing import LocalServer, RemoteServer, RoutingTable, ServerState
from services.placement.plan import LayerShare, ModelAssignment, Role
from services.placement.processes import desired_processes, served_models
from services.proto.meshllm.runner.v1 import runner_pb2

GB = 10**9
HOST, W1 = "h" * 64, "1" * 64
SHARES = (LayerShare(HOST, 0.6, 6), LayerShare(W1, 0.4, 4))


def assignment(model: str, role: Role) -> ModelAssignment:
    shares = SHARES if role is not Role.SOLO else ()
    host = HOST if role is not Role.SOLO else ""
    return ModelAssignment(
        model, f"/models/{model}.gguf", GB, role, ("why",), host_node_id=host, shares=shares
    )


def test_parallel_goes_to_llama_servers_only() -> None:
    plan = [
        assignment("small", Role.SOLO),
        assignment("big", Role.SPLIT_HOST),
        assignment("w", Role.SPLIT_WORKER),
    ]
    specs = {s.key: s for s in desired_processes(plan, 0, {"big": ["127.0.0.1:7001"]}, parallel_slots=8)}
    assert specs["llama-server/small"].parallel_slots == 8
    assert specs["llama-server/big"].parallel_slots == 8
    assert specs["rpc-server/w"].parallel_slots == 0  # no slots in an rpc-server
    auto = desired_processes(plan, 0, {"big": ["127.0.0.1:7001"]})
    assert all(s.parallel_slots == 0 for s in auto)


def test_the_slots_a_server_runs_with_are_gossiped() -> None:
    spec = runner_pb2.ProcessSpec(key="llama-server/small", kind=runner_pb2.PROCESS_KIND_LLAMA_SERVER)
    process = runner_pb2.ProcessStatus(spec=spec, state=runner_pb2.PROCESS_STATE_READY, slots=16)
    [served] = served_models(
        [assignment("small", Role.SOLO)], runner_pb2.RunnerStatus(processes=[process]), HOST
    )
    assert served.slots == 16


def test_the_model_list_counts_the_slots_of_every_ready_server() -> None:
    local = LocalServer("m", ServerState.READY, "127.0.0.1", 8080, slots=16)
    remote = [RemoteServer("m", W1, slots=4), RemoteServer("other", W1, slots=8)]
    entries = {e.model: e for e in RoutingTable.build([local], (), remote, HOST).entries}
    assert entries["m"].slots == 20
    assert entries["other"].slots == 8
    loading = LocalServer("m", ServerState.STARTING, "127.0.0.1", 8080, slots=16)
    [entry] = RoutingTable.build([loading], ()).entries
    assert entry.slots == 0  # not serving yet
