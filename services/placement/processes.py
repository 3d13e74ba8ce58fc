"""From assignments to the llama.cpp processes this node should run, and what it tells gossip (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.placement.plan import ModelAssignment, Role
from services.placement.split import tensor_split_for
from services.proto.meshllm.gossip.v1 import gossip_pb2
from services.proto.meshllm.runner.v1 import runner_pb2


def llama_server_key(model: str) -> str:
    return f"llama-server/{model}"


def rpc_server_key(model: str) -> str:
    return f"rpc-server/{model}"


def split_workers(assignment: ModelAssignment) -> tuple[str, ...]:
    """The host's workers in --rpc order (the shares list the host first, then the workers)."""
    return tuple(share.node_id for share in assignment.shares[1:])


def desired_processes(
    assignments: Sequence[ModelAssignment],
    context_size: int,
    rpc_endpoints: Mapping[str, Sequence[str]] | None = None,
) -> list[runner_pb2.ProcessSpec]:
    """The runner's desired set.

    `rpc_endpoints`: by model, the host's loopback tunnel endpoint for each of its workers, in
    --rpc order. A split host starts llama-server only once every worker's endpoint is known
    (its rpc-server is up and the tunnel open): llama-server aborts on an unreachable --rpc.
    """
    endpoints = rpc_endpoints or {}
    specs = []
    for a in assignments:
        if a.role is Role.SOLO:
            specs.append(_llama_server(a, context_size))
        elif a.role is Role.SPLIT_HOST:
            workers = split_workers(a)
            ready = tuple(endpoints.get(a.model, ()))
            if workers and len(ready) == len(workers):
                split = tensor_split_for(a.shares, workers, a.host_node_id)
                specs.append(_llama_server(a, context_size, ready, split))
        elif a.role is Role.SPLIT_WORKER:
            specs.append(
                runner_pb2.ProcessSpec(
                    key=rpc_server_key(a.model),
                    kind=runner_pb2.PROCESS_KIND_RPC_SERVER,
                    model=a.model,
                    model_path=a.path,
                    host_node_id=a.host_node_id,
                )
            )
    return sorted(specs, key=lambda spec: spec.key)


def _llama_server(
    a: ModelAssignment, context_size: int, rpc: Sequence[str] = (), split: Sequence[float] = ()
) -> runner_pb2.ProcessSpec:
    return runner_pb2.ProcessSpec(
        key=llama_server_key(a.model),
        kind=runner_pb2.PROCESS_KIND_LLAMA_SERVER,
        model=a.model,
        model_path=a.path,
        context_size=context_size,
        rpc_endpoints=list(rpc),
        tensor_split=list(split),
    )


_ROLE_IN_GOSSIP = {
    Role.SOLO: gossip_pb2.MODEL_ROLE_SOLO,
    Role.SPLIT_HOST: gossip_pb2.MODEL_ROLE_SPLIT_HOST,
    Role.SPLIT_WORKER: gossip_pb2.MODEL_ROLE_SPLIT_WORKER,
}
_PROCESS_TO_SERVE_STATE = {
    runner_pb2.PROCESS_STATE_READY: gossip_pb2.SERVE_STATE_READY,
    runner_pb2.PROCESS_STATE_FAILED: gossip_pb2.SERVE_STATE_FAILED,
}


def process_key_for(assignment: ModelAssignment) -> str:
    if assignment.role is Role.SPLIT_WORKER:
        return rpc_server_key(assignment.model)
    return llama_server_key(assignment.model)


def served_models(
    assignments: Sequence[ModelAssignment], status: runner_pb2.RunnerStatus, node_id: str
) -> list[gossip_pb2.ServedModel]:
    """What this node tells the mesh it runs: solo servers, split hosts and split workers, with state.

    Only a READY split host is routed to; a READY worker tells its host that its rpc-server is up.
    """
    by_key = {p.spec.key: p for p in status.processes}
    served = []
    for a in assignments:
        role = _ROLE_IN_GOSSIP.get(a.role)
        if role is None:
            continue
        process = by_key.get(process_key_for(a))
        state = gossip_pb2.SERVE_STATE_LOADING
        if process is not None:
            state = _PROCESS_TO_SERVE_STATE.get(process.state, gossip_pb2.SERVE_STATE_LOADING)
        served.append(
            gossip_pb2.ServedModel(
                name=a.model,
                role=role,
                state=state,
                host_node_id=a.host_node_id or node_id,
                shares=[gossip_pb2.LayerShare(node_id=s.node_id, fraction=s.fraction) for s in a.shares],
            )
        )
    return served


def ready_workers(view: gossip_pb2.MeshView, model: str, host_id: str) -> set[str]:
    """Peers whose rpc-server for `model` is up and serving this host, by their own gossip record."""
    ready = set()
    for record in view.nodes:
        for served in record.served:
            if (
                served.name == model
                and served.role == gossip_pb2.MODEL_ROLE_SPLIT_WORKER
                and served.state == gossip_pb2.SERVE_STATE_READY
                and served.host_node_id == host_id
            ):
                ready.add(record.node_id)
    return ready
