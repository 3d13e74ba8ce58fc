"""A mesh of five hosts on one LAN survives partitions (issue 12): two hosts cut apart keep serving
each other through a relay with no flapping in /v1/models; a host cut off from everyone comes back
within 15 s of the heal, links, gossip and routes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netns import Host, Testbed
from tests.support.netns_mesh import (
    answers,
    launch,
    listed_models,
    model_copy,
    path_to,
    start_on,
    stop_all,
    wait_answers,
    wait_path,
    wait_started,
)
from tests.support.node import RunningNode, wait_until

pytestmark = pytest.mark.integration

NODES = 5
CUT_S = 20.0
HEALED_WITHIN_S = 15.0
RELAYED_WITHIN_S = 10.0  # dead-link detection (3.5 s) + a relay round
SAMPLE_EVERY_S = 0.5


class ModelsSampler:
    """Polls a node's /v1/models in the background: every listing a client would have seen."""

    def __init__(self, node: RunningNode) -> None:
        self.node = node
        self.samples: list[set[str]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            try:
                self.samples.append(listed_models(self.node))
            except Exception:
                self.errors += 1

    def __enter__(self) -> ModelsSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def mesh(testbed: Testbed, tmp_path: Path, tiny_gguf: Path) -> Iterator[tuple[list[Host], list[RunningNode]]]:
    lan = testbed.lan("lan")
    hosts = [testbed.host(f"h{i}") for i in range(NODES)]
    for i, host in enumerate(hosts):
        host.attach(lan, f"10.77.40.{i + 1}/24")
    nodes: list[RunningNode] = []
    try:
        first = launch(
            nodes, hosts[0], tmp_path, "n0", ["--model", str(model_copy(tiny_gguf, tmp_path, "tiny-p0"))]
        )
        token = first.invite()
        for i in range(1, NODES):
            # n0..n2 serve a model each; n3 and n4 only join (they still relay and route).
            serve = ["--model", str(model_copy(tiny_gguf, tmp_path, f"tiny-p{i}"))] if i < 3 else []
            nodes.append(start_on(hosts[i], tmp_path, f"n{i}", ["--join", token, *serve]))
        for node in nodes:
            wait_started(node)
        for node in nodes:
            for model in ("tiny-p0", "tiny-p1", "tiny-p2"):
                wait_answers(node, model)
        for node in nodes:
            for other in nodes:
                if other is not node:
                    wait_path(node, other, "direct")
        yield hosts, nodes
    finally:
        stop_all(nodes)


def test_two_hosts_cut_apart_keep_serving_each_other_through_a_relay(
    testbed: Testbed, mesh: tuple[list[Host], list[RunningNode]]
) -> None:
    hosts, nodes = mesh
    a, b = nodes[1], nodes[2]
    with ModelsSampler(a) as seen_by_a, ModelsSampler(b) as seen_by_b:
        testbed.cut(hosts[1], hosts[2])
        cut_at = time.monotonic()
        wait_path(a, b, "relayed", RELAYED_WITHIN_S)
        wait_path(b, a, "relayed", RELAYED_WITHIN_S)
        failures = 0
        while time.monotonic() - cut_at < CUT_S:
            failures += not answers(a, "tiny-p2")
            failures += not answers(b, "tiny-p1")
            time.sleep(1.0)
        testbed.heal(hosts[1], hosts[2])
        healed_at = time.monotonic()
        wait_path(a, b, "direct", HEALED_WITHIN_S)
        wait_path(b, a, "direct", HEALED_WITHIN_S - (time.monotonic() - healed_at))
    # Requests from the moment the relay took over: every one answered.
    assert failures == 0
    # No flapping: every listing either side showed had the other's model.
    assert seen_by_a.samples and all("tiny-p2" in s for s in seen_by_a.samples), seen_by_a.samples
    assert seen_by_b.samples and all("tiny-p1" in s for s in seen_by_b.samples), seen_by_b.samples
    assert seen_by_a.errors == 0 and seen_by_b.errors == 0
    assert answers(a, "tiny-p2") and answers(b, "tiny-p1")


def test_a_host_cut_off_from_everyone_converges_within_15s_of_the_heal(
    testbed: Testbed, mesh: tuple[list[Host], list[RunningNode]]
) -> None:
    hosts, nodes = mesh
    lonely, others = nodes[1], [n for i, n in enumerate(nodes) if i != 1]
    for i in range(NODES):
        if i != 1:
            testbed.cut(hosts[1], hosts[i])
    for node in others:
        wait_until(lambda n=node: "tiny-p1" not in listed_models(n), 15, f"{node.home.name} to drop tiny-p1")
    wait_until(lambda: not any(path_to(lonely, n) for n in others), 15, "the lonely node to lose its peers")
    time.sleep(max(0.0, CUT_S - 15))
    for i in range(NODES):
        if i != 1:
            testbed.heal(hosts[1], hosts[i])
    healed_at = time.monotonic()

    def converged() -> bool:
        linked = all(path_to(lonely, n) == "direct" and path_to(n, lonely) == "direct" for n in others)
        routed = all(answers(n, "tiny-p1") for n in others) and answers(lonely, "tiny-p0")
        return linked and routed and {"tiny-p0", "tiny-p1", "tiny-p2"} <= listed_models(lonely)

    wait_until(converged, HEALED_WITHIN_S, "the mesh to converge after the heal")
    assert time.monotonic() - healed_at <= HEALED_WITHIN_S
