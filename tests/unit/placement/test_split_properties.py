"""Properties of the mesh plan over generated meshes: agreement, capacity, latency, identity."""

from __future__ import annotations

import math
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from services.placement.plan import ModelAssignment, Role, needed_bytes
from services.placement.split import SPLIT_RTT_CAP_MS, plan_mesh, rtt_between, tensor_split_for
from services.placement.view import UNHASHED, DiskFile, MeshNode
from tests.unit.placement.split_fixtures import GB, SHA_A, SHA_B

MODEL_BYTES = {"m1": 6 * GB, "m2": 10 * GB, "m3": 3 * GB}
RTTS_MS = st.sampled_from([0.0, 1.0, 5.0, 5.0, 40.0, SPLIT_RTT_CAP_MS, 80.5, 150.0]) | st.floats(0, 200)
HALF_GB = GB // 2
Plan = dict[str, list[ModelAssignment]]


@st.composite
def mesh_nodes(
    draw: st.DrawFn,
    models: tuple[str, ...] = tuple(MODEL_BYTES),
    shas: tuple[str, ...] = (SHA_A, SHA_A, SHA_A, SHA_B, UNHASHED),
) -> list[MeshNode]:
    ids = draw(
        st.lists(st.text("0123456789abcdef", min_size=1, max_size=3), min_size=1, max_size=8, unique=True)
    )
    nodes = []
    for node_id in ids:
        wanted = tuple(draw(st.lists(st.sampled_from(models), unique=True, max_size=2)))
        # Mostly the wanted files and then some: splits need copies on nodes that do not want them.
        on_disk = [m for m in models if (m in wanted and draw(st.integers(0, 4))) or draw(st.booleans())]
        files = {m: DiskFile(draw(st.sampled_from(shas)), MODEL_BYTES[m], f"/{node_id}/{m}") for m in on_disk}
        measured = [peer for peer in ids if peer != node_id and draw(st.integers(0, 4))]
        nodes.append(
            MeshNode(
                node_id=node_id,
                vram_bytes=draw(st.integers(0, 24)) * HALF_GB,  # coarse steps make ties common
                is_client=draw(st.integers(0, 5)) == 0,
                models_on_disk=files,
                models_wanted=wanted,
                rtt_ms={peer: draw(RTTS_MS) for peer in measured},
                leaving=draw(st.integers(0, 7)) == 0,
                force_split=draw(st.integers(0, 5)) == 0,
            )
        )
    return nodes


def reordered(node: MeshNode) -> MeshNode:
    """The same node with every mapping built in the opposite order."""
    return MeshNode(
        node.node_id,
        node.vram_bytes,
        node.is_client,
        dict(reversed(list(node.models_on_disk.items()))),
        node.models_wanted,
        dict(reversed(list(node.rtt_ms.items()))),
        node.leaving,
        node.force_split,
    )


@settings(max_examples=200)
@given(st.data())
def test_every_node_computes_the_same_plan_whatever_the_order(data: st.DataObject) -> None:
    nodes = data.draw(mesh_nodes())
    shuffled = [reordered(node) for node in data.draw(st.permutations(nodes))]
    assert plan_mesh(nodes) == plan_mesh(shuffled)


def check_groups(nodes: list[MeshNode], plan: Plan) -> None:
    by_id = {node.node_id: node for node in nodes}
    for host_id, row in plan.items():
        for a in (a for a in row if a.role is Role.SPLIT_HOST):
            host = by_id[host_id]
            assert a.model in host.models_wanted and a.host_node_id == host_id
            assert a.shares[0].node_id == host_id and len(a.shares) >= 2
            assert math.isclose(math.fsum(s.fraction for s in a.shares), 1.0, abs_tol=1e-9)
            assert all(s.fraction > 0 for s in a.shares)
            assert sum(s.bytes for s in a.shares) == a.bytes == MODEL_BYTES[a.model]
            members = [by_id[s.node_id] for s in a.shares]
            assert sum(m.vram_bytes for m in members) >= needed_bytes(a.bytes)
            sha = host.models_on_disk[a.model].sha256
            assert sha != UNHASHED
            workers = [s.node_id for s in a.shares[1:]]
            assert len(tensor_split_for(a.shares, workers, host_id)) == len(a.shares)
            for worker in members[1:]:
                assert not (worker.is_client or worker.leaving)
                assert worker.models_on_disk[a.model].sha256 == sha
                rtt = rtt_between(host, worker)
                assert rtt is not None and rtt <= SPLIT_RTT_CAP_MS
                [mirror] = [w for w in plan[worker.node_id] if w.model == a.model]
                assert mirror.role is Role.SPLIT_WORKER
                assert (mirror.host_node_id, mirror.shares) == (host_id, a.shares)


def check_budgets(nodes: list[MeshNode], plan: Plan) -> None:
    for node in nodes:
        spent, memberships = 0, 0
        for a in plan.get(node.node_id, []):
            if a.role is Role.SOLO:
                spent += needed_bytes(a.bytes)
            elif a.role in (Role.SPLIT_HOST, Role.SPLIT_WORKER):
                [share] = [s for s in a.shares if s.node_id == node.node_id]
                spent += math.ceil(share.fraction * needed_bytes(a.bytes))
                memberships += 1
        assert spent <= node.vram_bytes + memberships  # ceil() may round a float up by a byte


@settings(max_examples=300)
@given(mesh_nodes())
def test_plans_keep_every_rule(nodes: list[MeshNode]) -> None:
    plan = plan_mesh(nodes)
    taking_part = {n.node_id for n in nodes if not (n.is_client or n.leaving)}
    assert set(plan) == taking_part
    for node in nodes:
        if node.node_id not in taking_part:
            continue
        models = [a.model for a in plan[node.node_id]]
        assert len(models) == len(set(models))
        assert set(node.models_wanted) <= set(models)
        for a in plan[node.node_id]:
            if a.model not in node.models_wanted:
                assert a.role is Role.SPLIT_WORKER  # the only role a node takes unasked
            if a.role is Role.SOLO:
                assert not node.force_split
    check_groups(nodes, plan)
    check_budgets(nodes, plan)


@settings(max_examples=200)
@given(mesh_nodes(models=("m2",), shas=(SHA_A,)))
def test_one_model_hosts_on_the_most_vram_and_shares_follow_vram(nodes: list[MeshNode]) -> None:
    nodes = [MeshNode(**{**vars(n), "force_split": False}) for n in nodes]
    plan = plan_mesh(nodes)
    roles = defaultdict(list)
    for node_id, row in plan.items():
        for a in row:
            roles[a.role].append(node_id)
    if not roles[Role.SPLIT_HOST]:
        return
    assert not roles[Role.SOLO]  # a split only when nobody can run it alone
    [host_id] = roles[Role.SPLIT_HOST]
    hosts = [
        n
        for n in nodes
        if not (n.is_client or n.leaving) and "m2" in n.models_wanted and "m2" in n.models_on_disk
    ]
    best = max(hosts, key=lambda n: (n.vram_bytes, n.node_id))
    assert host_id == best.node_id
    [a] = plan[host_id]
    vram = {n.node_id: n.vram_bytes for n in nodes}
    total = sum(vram[s.node_id] for s in a.shares)
    for share in a.shares:
        assert math.isclose(share.fraction, vram[share.node_id] / total)
