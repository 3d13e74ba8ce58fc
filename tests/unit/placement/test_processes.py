"""Assignments → runner processes and the served list gossip carries (services/placement/processes.py)."""

from __future__ import annotations

from services.placement.plan import LayerShare, ModelAssignment, Role
from services.placement.processes import desired_processes, memory_budgets, ready_workers, served_models
from services.proto.meshllm.gossip.v1 import gossip_pb2
from services.proto.meshllm.runner.v1 import runner_pb2

GB = 10**9
HOST, W1, W2 = "h" * 64, "1" * 64, "2" * 64
SHARES = (LayerShare(HOST, 0.5, 5), LayerShare(W1, 0.3, 3), LayerShare(W2, 0.2, 2))


def assignment(
    model: str, role: Role, host: str = "", shares: tuple[LayerShare, ...] = ()
) -> ModelAssignment:
    return ModelAssignment(
        model, f"/models/{model}.gguf", GB, role, ("why",), host_node_id=host, shares=shares
    )


def test_only_solo_models_and_ready_split_hosts_get_a_llama_server() -> None:
    plan = [
        assignment("small", Role.SOLO),
        assignment("big", Role.SPLIT_HOST, HOST, SHARES),
        assignment("other", Role.STANDBY),
        assignment("huge", Role.WAITING),
    ]
    waiting_for_workers = desired_processes(plan, 2048, {"big": ["127.0.0.1:7001"]})  # one of two
    assert [s.key for s in waiting_for_workers] == ["llama-server/small"]
    specs = desired_processes(plan, 2048, {"big": ["127.0.0.1:7001", "127.0.0.1:7002"]})
    assert [s.key for s in specs] == ["llama-server/big", "llama-server/small"]
    big = specs[0]
    assert list(big.rpc_endpoints) == ["127.0.0.1:7001", "127.0.0.1:7002"]
    # --tensor-split order: the RPC workers as listed, then the host's own share.
    assert list(big.tensor_split) == [0.3, 0.2, 0.5]
    assert big.model_path == "/models/big.gguf" and big.context_size == 2048


def test_a_split_worker_runs_an_rpc_server_on_its_own_copy() -> None:
    [spec] = desired_processes([assignment("big", Role.SPLIT_WORKER, HOST, SHARES)], 2048)
    assert spec.key == "rpc-server/big" and spec.kind == runner_pb2.PROCESS_KIND_RPC_SERVER
    assert spec.model == "big" and spec.model_path == "/models/big.gguf"
    assert spec.host_node_id == HOST  # the mesh lets only this node reach it
    assert not spec.rpc_endpoints


def sized(model: str, role: Role, model_bytes: int, shares: tuple[LayerShare, ...] = ()) -> ModelAssignment:
    host = shares[0].node_id if shares else ""
    return ModelAssignment(model, f"/m/{model}.gguf", model_bytes, role, ("why",), host, shares)


def test_a_nodes_memory_left_after_the_weights_is_split_over_its_servers() -> None:
    plan = [
        sized("a", Role.SOLO, 4 * GB),
        sized("b", Role.SOLO, 2 * GB),
        sized("c", Role.STANDBY, 7 * GB),  # runs nothing, holds nothing
        sized("d", Role.WAITING, 7 * GB),
    ]
    assert memory_budgets(plan, HOST, 16 * GB) == {"a": 5 * GB, "b": 5 * GB}


def test_a_split_host_budgets_for_the_whole_group() -> None:
    """Shares follow free memory: the host had 8 GB, W1 4.8 GB, W2 3.2 GB for a 10 GB model. They
    keep 3, 1.8 and 1.2 GB: 6 GB for a cache that spreads over the group with the layers."""
    shares = (LayerShare(HOST, 0.5, 5 * GB), LayerShare(W1, 0.3, 3 * GB), LayerShare(W2, 0.2, 2 * GB))
    plan = [sized("big", Role.SPLIT_HOST, 10 * GB, shares)]
    assert memory_budgets(plan, HOST, 8 * GB) == {"big": 6 * GB}


def test_a_worker_keeps_room_for_the_cache_of_its_layers() -> None:
    shares = (LayerShare(HOST, 0.5, 5 * GB), LayerShare(W1, 0.5, 5 * GB))
    plan = [sized("small", Role.SOLO, 2 * GB), sized("big", Role.SPLIT_WORKER, 10 * GB, shares)]
    # 12 GB - 2 - 5 = 5 GB over two processes; the rpc-server's half is for the host's cache.
    assert memory_budgets(plan, W1, 12 * GB) == {"small": 5 * GB // 2}


def test_no_memory_known_means_no_budget_and_none_left_means_the_least() -> None:
    assert memory_budgets([sized("a", Role.SOLO, GB)], HOST, 0) == {}
    assert memory_budgets([], HOST, 8 * GB) == {}
    assert memory_budgets([sized("a", Role.SOLO, 9 * GB)], HOST, 8 * GB) == {"a": 1}


def test_the_budget_goes_to_llama_servers_unless_the_user_set_the_context() -> None:
    shares = (LayerShare(HOST, 0.5, 5 * GB), LayerShare(W1, 0.5, 5 * GB))
    plan = [sized("solo", Role.SOLO, GB), sized("big", Role.SPLIT_HOST, 10 * GB, shares)]
    endpoints = {"big": ["127.0.0.1:7001"]}
    budgets = {"solo": 3 * GB, "big": 6 * GB}
    auto = {s.key: s for s in desired_processes(plan, 0, endpoints, budgets)}
    assert auto["llama-server/solo"].memory_budget_bytes == 3 * GB
    assert auto["llama-server/big"].memory_budget_bytes == 6 * GB
    assert all(s.context_size == 0 for s in auto.values())
    fixed = desired_processes(plan, 8192, endpoints, budgets)
    assert [(s.context_size, s.memory_budget_bytes) for s in fixed] == [(8192, 0), (8192, 0)]


def status(*processes: tuple[str, int]) -> runner_pb2.RunnerStatus:
    return runner_pb2.RunnerStatus(
        processes=[
            runner_pb2.ProcessStatus(spec=runner_pb2.ProcessSpec(key=k), state=s) for k, s in processes
        ]
    )


def test_served_list_reports_roles_states_and_shares() -> None:
    plan = [
        assignment("small", Role.SOLO),
        assignment("big", Role.SPLIT_HOST, HOST, SHARES),
        assignment("mid", Role.SPLIT_WORKER, W1, SHARES),
        assignment("other", Role.STANDBY),
    ]
    running = status(
        ("llama-server/small", runner_pb2.PROCESS_STATE_READY),
        ("rpc-server/mid", runner_pb2.PROCESS_STATE_FAILED),
    )
    served = {s.name: s for s in served_models(plan, running, HOST)}
    assert set(served) == {"small", "big", "mid"}
    assert served["small"].state == gossip_pb2.SERVE_STATE_READY and served["small"].host_node_id == HOST
    assert served["big"].role == gossip_pb2.MODEL_ROLE_SPLIT_HOST
    assert served["big"].state == gossip_pb2.SERVE_STATE_LOADING  # no llama-server yet
    assert [(s.node_id, s.fraction) for s in served["big"].shares] == [(HOST, 0.5), (W1, 0.3), (W2, 0.2)]
    assert served["mid"].role == gossip_pb2.MODEL_ROLE_SPLIT_WORKER
    assert served["mid"].state == gossip_pb2.SERVE_STATE_FAILED and served["mid"].host_node_id == W1


def test_a_worker_counts_as_ready_only_for_its_own_host_and_model() -> None:
    def record(node: str, *served: tuple[str, int, int, str]) -> gossip_pb2.NodeRecord:
        return gossip_pb2.NodeRecord(
            node_id=node,
            served=[
                gossip_pb2.ServedModel(name=n, role=r, state=st, host_node_id=h) for n, r, st, h in served
            ],
        )

    worker, ready = gossip_pb2.MODEL_ROLE_SPLIT_WORKER, gossip_pb2.SERVE_STATE_READY
    view = gossip_pb2.MeshView(
        nodes=[
            record(W1, ("big", worker, ready, HOST)),
            record(W2, ("big", worker, gossip_pb2.SERVE_STATE_LOADING, HOST)),
            record("3" * 64, ("big", worker, ready, "someone else")),
            record(
                "4" * 64, ("small", worker, ready, HOST), ("big", gossip_pb2.MODEL_ROLE_SOLO, ready, HOST)
            ),
        ]
    )
    assert ready_workers(view, "big", HOST) == {W1}


def test_served_list_carries_the_kind_and_context_the_runner_reports() -> None:
    plan = [
        assignment("chat", Role.SOLO),
        assignment("embed", Role.SOLO),
        assignment("rerank", Role.SOLO),
        assignment("new", Role.SOLO),
        assignment("big", Role.SPLIT_WORKER, HOST, SHARES),
        assignment("asked", Role.SOLO),
    ]

    def process(key: str, kind: int, context: int, trained: int = 0) -> runner_pb2.ProcessStatus:
        return runner_pb2.ProcessStatus(
            spec=runner_pb2.ProcessSpec(key=key),
            state=runner_pb2.PROCESS_STATE_READY,
            model_kind=kind,
            context_tokens=context,
            trained_context_tokens=trained,
        )

    running = runner_pb2.RunnerStatus(
        processes=[
            process("llama-server/chat", runner_pb2.MODEL_KIND_CHAT, 32768),
            process("llama-server/embed", runner_pb2.MODEL_KIND_EMBEDDING, 512),
            process("llama-server/rerank", runner_pb2.MODEL_KIND_RERANK, 512),
            process("rpc-server/big", runner_pb2.MODEL_KIND_UNSPECIFIED, 0),
            # --ctx-size past the trained context: llama-server caps each request at the trained one.
            process("llama-server/asked", runner_pb2.MODEL_KIND_CHAT, 65536, trained=32768),
        ]
    )
    served = {s.name: (s.kind, s.context_tokens) for s in served_models(plan, running, HOST)}
    assert served == {
        "chat": (gossip_pb2.MODEL_KIND_CHAT, 32768),
        "embed": (gossip_pb2.MODEL_KIND_EMBEDDING, 512),
        "rerank": (gossip_pb2.MODEL_KIND_RERANK, 512),
        "new": (gossip_pb2.MODEL_KIND_UNSPECIFIED, 0),  # no process yet: not known
        "big": (gossip_pb2.MODEL_KIND_UNSPECIFIED, 0),
        "asked": (gossip_pb2.MODEL_KIND_CHAT, 32768),
    }
