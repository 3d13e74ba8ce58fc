from services.placement.plan import LayerShare, ModelAssignment, Role, assignment_changed

GB = 10**9


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


def test_workers_trading_places_in_rtt_order_restart_nothing() -> None:
    three = (LayerShare("h", 0.5, 5), LayerShare("w1", 0.25, 2), LayerShare("w2", 0.25, 2))
    swapped = (three[0], three[2], three[1])
    old = [_assignment("a", Role.SPLIT_HOST, host="h", shares=three)]
    assert not assignment_changed(old, [_assignment("a", Role.SPLIT_HOST, host="h", shares=swapped)])


def test_share_noise_and_a_workers_share_do_not_restart_anything() -> None:
    host = [_assignment("a", Role.SPLIT_HOST, host="h", shares=SHARES)]
    noise = (LayerShare("h", 0.6 + 1e-9, 6), LayerShare("w", 0.4 - 1e-9, 4))
    assert not assignment_changed(host, [_assignment("a", Role.SPLIT_HOST, host="h", shares=noise)])
    worker = [_assignment("a", Role.SPLIT_WORKER, host="h", shares=SHARES)]
    moved = (LayerShare("h", 0.5, 5), LayerShare("w", 0.5, 5))
    assert not assignment_changed(worker, [_assignment("a", Role.SPLIT_WORKER, host="h", shares=moved)])
