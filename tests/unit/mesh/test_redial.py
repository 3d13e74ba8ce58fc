"""When lost links are redialed (services/mesh/redial.py): a pure schedule driven by a fake clock."""

from __future__ import annotations

import itertools
import random

from services.mesh.redial import (
    BROKE_PROTOCOL_COOLDOWN_S,
    DIRECT_RETRY_S,
    FORGET_LOST_WHILE_ALONE_S,
    FORGET_LOST_WHILE_LINKED_S,
    REDIAL_FIRST_S,
    REDIAL_JITTER_RATIO,
    REDIAL_MAX_S,
    RedialSchedule,
)

ME, A, B = "me" * 32, "a" * 64, "b" * 64
SLACK = 1 + REDIAL_JITTER_RATIO


def schedule() -> RedialSchedule:
    s = RedialSchedule(ME, random.Random(7))
    s.learn(A, ["10.0.0.1:4000"])
    return s


def attempts_at(s: RedialSchedule, now: float) -> list[str]:
    return [a.node_id for a in s.due(now)]


def test_a_lost_peer_is_redialed_soon_and_keeps_its_addresses() -> None:
    s = schedule()
    s.set_links({A: False}, 0.0)
    assert attempts_at(s, 1.0) == []  # linked directly: nothing to do
    s.set_links({}, 10.0)
    assert attempts_at(s, 10.0) == []
    [attempt] = s.due(10.0 + REDIAL_FIRST_S * SLACK)
    assert attempt.addresses == ("10.0.0.1:4000",) and not attempt.direct_only


def test_failures_back_off_up_to_the_cap_and_never_beyond() -> None:
    s = schedule()
    s.set_links({A: False}, 0.0)
    s.set_links({}, 0.0)
    now, gaps = 0.0, []
    for _ in range(8):
        while not attempts_at(s, now):
            now += 0.05
        gaps.append(now)
        s.finished(A, False, now)
    deltas = [b - a for a, b in itertools.pairwise(gaps)]
    assert deltas[0] < deltas[2]  # backing off
    assert max(deltas) <= REDIAL_MAX_S * SLACK + 0.05  # capped: a healed link is found within seconds


def test_one_attempt_at_a_time_per_peer() -> None:
    s = schedule()
    s.set_links({A: False}, 0.0)
    s.set_links({}, 0.0)
    assert attempts_at(s, 5.0) == [A]
    assert attempts_at(s, 50.0) == []  # still in flight
    s.finished(A, True, 50.0)


def test_a_relayed_peer_is_retried_directly_and_only_directly() -> None:
    s = schedule()
    s.set_links({A: True}, 0.0)
    assert attempts_at(s, DIRECT_RETRY_S * (1 - REDIAL_JITTER_RATIO) - 0.01) == []
    [attempt] = s.due(DIRECT_RETRY_S * SLACK)
    assert attempt.direct_only


def test_a_peer_alive_in_the_view_is_dialed_even_if_never_linked() -> None:
    s = RedialSchedule(ME, random.Random(1))
    s.set_view({B: ["10.0.0.2:4000"], ME: ["10.0.0.9:4000"]})
    assert attempts_at(s, 0.0) == [B]  # never ourselves


def test_heard_of_but_not_alive_anywhere_is_not_dialed() -> None:
    s = schedule()  # learned from an announce, never linked, absent from the view
    assert attempts_at(s, 100.0) == []


def test_a_lost_peer_nobody_vouches_for_is_forgotten_sooner_when_others_are_linked() -> None:
    s = schedule()
    s.learn(B, ["10.0.0.2:4000"])
    s.set_links({A: False, B: False}, 0.0)
    s.set_links({B: False}, 0.0)  # lost A; B still linked and A is in nobody's view
    s.due(FORGET_LOST_WHILE_LINKED_S + 1)
    assert A not in s.wanted()


def test_a_node_cut_off_from_everyone_keeps_trying_for_long() -> None:
    s = schedule()
    s.set_links({A: False}, 0.0)
    s.set_links({}, 0.0)
    now = FORGET_LOST_WHILE_LINKED_S + 1
    assert A in [a.node_id for a in s.due(now)]
    s.finished(A, False, now)
    s.due(FORGET_LOST_WHILE_ALONE_S + 1)
    assert A not in s.wanted()


def test_a_peer_in_the_view_is_never_forgotten() -> None:
    s = schedule()
    s.set_view({A: ["10.0.0.1:4000"]})
    s.set_links({A: False}, 0.0)
    s.set_links({}, 0.0)
    s.due(FORGET_LOST_WHILE_ALONE_S * 10)
    assert A in s.wanted()


def test_addresses_learned_later_come_first_and_stay_bounded() -> None:
    s = schedule()
    for i in range(20):
        s.learn(A, [f"10.9.0.{i}:1"])
    s.set_view({A: []})
    [attempt] = s.due(0.0)
    assert attempt.addresses[0] == "10.9.0.19:1" and len(attempt.addresses) <= 8


def test_a_peer_dropped_for_breaking_the_protocol_is_left_alone_for_a_while() -> None:
    s = schedule()
    s.set_view({A: ["10.0.0.1:4000"]})
    s.set_links({A: False}, 0.0)
    s.broke_protocol(A, 0.0)
    s.set_links({}, 0.0)
    assert attempts_at(s, 10.0) == []
    assert attempts_at(s, BROKE_PROTOCOL_COOLDOWN_S + 1) == [A]
