"""From assignments to the llama.cpp processes this node should run, and what it tells gossip (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.placement.plan import ModelAssignment, Role
from services.placement.split import tensor_split_for
from services.proto.meshllm.gossip.v1 import gossip_pb2
from services.proto.meshllm.runner.v1 import runner_pb2
from services.runner.speculation import gossip_label


def llama_server_key(model: str) -> str:
    return f"llama-server/{model}"


def rpc_server_key(model: str) -> str:
    return f"rpc-server/{model}"


def split_workers(assignment: ModelAssignment) -> tuple[str, ...]:
    """The host's workers in --rpc order (the shares list the host first, then the workers)."""
    return tuple(share.node_id for share in assignment.shares[1:])


_RUNS_A_PROCESS = (Role.SOLO, Role.SPLIT_HOST, Role.SPLIT_WORKER)


def _weights_here(a: ModelAssignment, node_id: str) -> int:
    """The bytes of `a`'s weights this node holds: all of a solo model, its own share of a split."""
    if a.role is Role.SOLO:
        return a.bytes
    return sum(share.bytes for share in a.shares if share.node_id == node_id)


def memory_budgets(
    assignments: Sequence[ModelAssignment], node_id: str, node_memory_bytes: int
) -> dict[str, int]:
    """By model: the memory its llama-server may use beyond the weights (KV cache, compute buffers).

    What the node's budget (vram_bytes, after --max-vram) leaves once every model placed here has
    its weights, split evenly over this node's processes. An rpc-server counts: its free memory
    holds the cache of the layers it computes for its host. A split host's cache spreads over the
    group with the layers, and every member's leftover is the same fraction of its free memory
    (shares are proportional to free memory), so the host's budget is its own part divided by its
    fraction: the whole group's. Empty (no limit) when the node's memory is not known.
    """
    running = [a for a in assignments if a.role in _RUNS_A_PROCESS]
    if node_memory_bytes <= 0 or not running:
        return {}
    left = node_memory_bytes - sum(_weights_here(a, node_id) for a in running)
    # Nothing left still is a budget (the smallest context), never 0, which would mean "no limit".
    each = max(1, left // len(running))
    budgets = {}
    for a in running:
        if a.role is Role.SOLO:
            budgets[a.model] = each
        elif a.role is Role.SPLIT_HOST and a.shares and a.shares[0].fraction > 0:
            budgets[a.model] = int(each / a.shares[0].fraction)
    return budgets


def desired_processes(
    assignments: Sequence[ModelAssignment],
    context_size: int,
    rpc_endpoints: Mapping[str, Sequence[str]] | None = None,
    budgets: Mapping[str, int] | None = None,
    device: str = "",
    parallel_slots: int = 0,
    max_output_tokens: int = 0,
    threads: int = 0,
) -> list[runner_pb2.ProcessSpec]:
    """The runner's desired set.

    `rpc_endpoints`: by model, the host's loopback tunnel endpoint for each of its workers, in
    --rpc order. A split host starts llama-server only once every worker's endpoint is known
    (its rpc-server is up and the tunnel open): llama-server aborts on an unreachable --rpc.
    `context_size`: --ctx-size, 0 for the runner to choose from the model and `budgets`
    (memory_budgets: by model, the memory its llama-server may use beyond the weights).
    `device`: --device, for every process (the llama.cpp device(s) it may use).
    `parallel_slots`: --parallel, for every llama-server; 0 for the runner to choose from the context.
    `max_output_tokens`: --max-output-tokens, for every llama-server; 0 for none.
    `threads`: --threads, for every process; 0 for one per physical core.
    """
    endpoints = rpc_endpoints or {}
    memory = budgets or {}
    specs = []
    for a in assignments:
        if a.role is Role.SOLO:
            specs.append(_llama_server(a, context_size, memory.get(a.model, 0)))
        elif a.role is Role.SPLIT_HOST:
            workers = split_workers(a)
            ready = tuple(endpoints.get(a.model, ()))
            if workers and len(ready) == len(workers):
                split = tensor_split_for(a.shares, workers, a.host_node_id)
                specs.append(_llama_server(a, context_size, memory.get(a.model, 0), ready, split))
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
    for spec in specs:
        spec.device = device
        spec.threads = threads
        if spec.kind == runner_pb2.PROCESS_KIND_LLAMA_SERVER:
            spec.parallel_slots = parallel_slots
            spec.max_output_tokens = max_output_tokens
    return sorted(specs, key=lambda spec: spec.key)


def _llama_server(
    a: ModelAssignment,
    context_size: int,
    memory_budget_bytes: int,
    rpc: Sequence[str] = (),
    split: Sequence[float] = (),
) -> runner_pb2.ProcessSpec:
    return runner_pb2.ProcessSpec(
        key=llama_server_key(a.model),
        kind=runner_pb2.PROCESS_KIND_LLAMA_SERVER,
        model=a.model,
        model_path=a.path,
        context_size=context_size,
        rpc_endpoints=list(rpc),
        tensor_split=list(split),
        # Only read when the runner chooses the context; left out otherwise, so a budget that moves
        # with the node's other models does not change the spec.
        memory_budget_bytes=0 if context_size else memory_budget_bytes,
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
# runner.proto and gossip.proto each define ModelKind (each contract stands alone).
_KIND_IN_GOSSIP = {
    runner_pb2.MODEL_KIND_CHAT: gossip_pb2.MODEL_KIND_CHAT,
    runner_pb2.MODEL_KIND_EMBEDDING: gossip_pb2.MODEL_KIND_EMBEDDING,
    runner_pb2.MODEL_KIND_RERANK: gossip_pb2.MODEL_KIND_RERANK,
}


def request_context_tokens(process: runner_pb2.ProcessStatus) -> int:
    """The most context one request gets: the pinned llama-server caps each slot at the trained
    context (n_ctx_slot()), so a --ctx-size past it only adds room for parallel requests."""
    trained = process.trained_context_tokens
    return min(process.context_tokens, trained) if trained else process.context_tokens


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
        kind, context_tokens, slots = gossip_pb2.MODEL_KIND_UNSPECIFIED, 0, 0
        if process is not None:
            state = _PROCESS_TO_SERVE_STATE.get(process.state, gossip_pb2.SERVE_STATE_LOADING)
            kind = _KIND_IN_GOSSIP.get(process.model_kind, gossip_pb2.MODEL_KIND_UNSPECIFIED)
            context_tokens = request_context_tokens(process)
            slots = process.slots
        served.append(
            gossip_pb2.ServedModel(
                name=a.model,
                role=role,
                state=state,
                host_node_id=a.host_node_id or node_id,
                shares=[gossip_pb2.LayerShare(node_id=s.node_id, fraction=s.fraction) for s in a.shares],
                kind=kind,
                context_tokens=context_tokens,
                slots=slots,
                # "ngram", "draft NAME+ngram", "off"; "" until its llama-server has started.
                speculation=gossip_label(process.speculation, process.draft_model_path) if process else "",
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
