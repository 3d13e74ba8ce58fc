from services.placement.plan import (
    SOLO_HEADROOM,
    LayerShare,
    ModelAssignment,
    ModelWant,
    NodeCapacity,
    Role,
    assignment_changed,
    plan_local_models,
)
from services.placement.processes import desired_processes

GB = 10**9


def node(vram: int, capped: bool = False) -> NodeCapacity:
    return NodeCapacity("a" * 32, vram, capped)


def test_model_that_fits_with_headroom_runs_solo() -> None:
    [assignment] = plan_local_models(node(int(2 * GB * SOLO_HEADROOM)), [ModelWant("m", "/m.gguf", 2 * GB)])
    assert assignment.role is Role.SOLO
    assert "fits" in assignment.reasons[0]


def test_model_without_headroom_does_not_fit_and_says_why() -> None:
    [assignment] = plan_local_models(
        node(int(2 * GB * 1.05), capped=True), [ModelWant("m", "/m.gguf", 2 * GB)]
    )
    assert assignment.role is Role.DOES_NOT_FIT
    assert "--max-vram" in assignment.reasons[0]
    assert "2.20 GB" in assignment.reasons[0]


def test_second_model_counts_against_what_the_first_used() -> None:
    wants = [ModelWant("a", "/a", 1 * GB), ModelWant("b", "/b", 1 * GB)]
    roles = [a.role for a in plan_local_models(node(int(1.5 * GB)), wants)]
    assert roles == [Role.SOLO, Role.DOES_NOT_FIT]
    roles = [a.role for a in plan_local_models(node(int(2.2 * GB)), wants)]
    assert roles == [Role.SOLO, Role.SOLO]


def test_forced_split_never_runs_solo() -> None:
    [assignment] = plan_local_models(node(100 * GB), [ModelWant("m", "/m", GB)], force_split=True)
    assert assignment.role is Role.WAITING


def test_plan_is_deterministic_and_only_solo_models_get_a_server() -> None:
    wants = [ModelWant("big", "/big", 50 * GB), ModelWant("small", "/small", GB)]
    first = plan_local_models(node(10 * GB), wants)
    assert first == plan_local_models(node(10 * GB), wants)
    specs = desired_processes(first, context_size=2048)
    assert [s.model for s in specs] == ["small"]
    assert specs[0].key == "llama-server/small" and specs[0].context_size == 2048


def _assignment(
    model: str, role: Role, *, host: str = "", shares: tuple[LayerShare, ...] = (), reason: str = "r"
) -> ModelAssignment:
    return ModelAssignment(model, f"/{model}", GB, role, (reason,), host_node_id=host, shares=shares)


SHARES = (LayerShare("h", 0.6, 6), LayerShare("w", 0.4, 4))


def test_assignment_changes_that_start_nothing_new_are_ignored() -> None:
    old = [_assignment("a", Role.SOLO), _assignment("b", Role.WAITING)]
    assert not assignment_changed(old, [_assignment("a", Role.SOLO, reason="other words"), *old[1:]])
    assert not assignment_changed(old, [_assignment("b", Role.STANDBY), old[0]])
    assert not assignment_changed(old, old[:1])  # a model that ran nothing is gone: still nothing
    assert not assignment_changed([], [_assignment("x", Role.DOES_NOT_FIT)])


def test_assignment_changes_that_alter_processes_count() -> None:
    solo = [_assignment("a", Role.SOLO)]
    host = [_assignment("a", Role.SPLIT_HOST, host="h", shares=SHARES)]
    assert assignment_changed(solo, host)
    assert assignment_changed(solo, [])
    assert assignment_changed(host, [_assignment("a", Role.SPLIT_HOST, host="h", shares=SHARES[::-1])])
    moved = (LayerShare("h", 0.5, 5), LayerShare("w", 0.5, 5))
    assert assignment_changed(host, [_assignment("a", Role.SPLIT_HOST, host="h", shares=moved)])
    worker = [_assignment("a", Role.SPLIT_WORKER, host="h", shares=SHARES)]
    assert assignment_changed(worker, [_assignment("a", Role.SPLIT_WORKER, host="g", shares=SHARES)])


def test_share_noise_and_a_workers_share_do_not_restart_anything() -> None:
    host = [_assignment("a", Role.SPLIT_HOST, host="h", shares=SHARES)]
    noise = (LayerShare("h", 0.6 + 1e-9, 6), LayerShare("w", 0.4 - 1e-9, 4))
    assert not assignment_changed(host, [_assignment("a", Role.SPLIT_HOST, host="h", shares=noise)])
    worker = [_assignment("a", Role.SPLIT_WORKER, host="h", shares=SHARES)]
    moved = (LayerShare("h", 0.5, 5), LayerShare("w", 0.5, 5))
    assert not assignment_changed(worker, [_assignment("a", Role.SPLIT_WORKER, host="h", shares=moved)])
