"""A split across two machines whose only path runs through our link simulator (issue 12): the host
and the worker are on one LAN but cut apart, and a third host in between relays UDP (QUIC) and TCP
(the RPC fast path) with 5 ms each way. The split must load with zero weight bytes on the wire and
answer exactly like the same split loaded the stock way."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.link_simulator import LinkConditions, LinkSimulator
from tests.support.netns import Testbed
from tests.support.netns_mesh import launch, node_id, peers_of, wait_path
from tests.support.node import RunningNode, wait_until
from tests.support.split import SPLIT_READY_TIMEOUT_S, copies_of, max_vram, plan_text, tunnels
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.integration

MODEL = "tiny-netsplit"
WORKER_PORT = 40211
ONE_WAY_DELAY_MS = 5.0
PROMPT = "The lighthouse keeper climbed the stairs as the storm rolled in, and"


def completion(node: RunningNode) -> str:
    response = node.http(
        "POST",
        f"{node.api_base}/completions",
        json={"model": MODEL, "prompt": PROMPT, "max_tokens": 12, "temperature": 0, "seed": 1},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["text"])


def test_a_split_across_two_namespaces_through_the_link_simulator(
    testbed: Testbed, nodes: list[RunningNode], tmp_path: Path
) -> None:
    lan = testbed.lan("lan")
    host_ns, worker_ns, link_ns = testbed.host("host"), testbed.host("worker"), testbed.host("link")
    host_ns.attach(lan, "10.77.60.1/24")
    worker_ip = worker_ns.attach(lan, "10.77.60.2/24")
    link_ip = link_ns.attach(lan, "10.77.60.3/24")
    testbed.cut(host_ns, worker_ns)  # the only way between them is the simulator

    model = write_tiny_llama_gguf(tmp_path / f"{MODEL}.gguf", n_layers=8, seed=7)
    disks = copies_of(model, tmp_path, ["host", "worker"])
    simulator = LinkSimulator(
        WORKER_PORT,
        LinkConditions(delay_ms=ONE_WAY_DELAY_MS),
        target_host=worker_ip,
        host=link_ip,
        port=WORKER_PORT,
        tcp=True,
        netns=link_ns.ns,
    ).start()
    try:
        worker = launch(
            nodes,
            worker_ns,
            tmp_path,
            "worker",
            ["--model", str(disks["worker"]), "--max-vram", max_vram(model, 0.6),
             "--bind-port", str(WORKER_PORT), "--advertise", f"{link_ip}:{WORKER_PORT}"],
        )  # fmt: skip
        host = launch(
            nodes,
            host_ns,
            tmp_path,
            "host",
            ["--join", worker.invite(), "--model", str(disks["host"]), "--max-vram", max_vram(model, 0.7)],
        )
        wait_path(host, worker, "direct")
        wait_until(lambda: completion(host), SPLIT_READY_TIMEOUT_S, "the split to answer")
        assert "split_host" in plan_text(host) and "split_worker" in plan_text(worker)
        text = completion(host)
        assert text and completion(worker) == text  # the worker's API routes to the host
        # Through the simulator: its delay is in the RTT, its counters saw the traffic.
        assert peers_of(host)[node_id(worker)].rtt_ms >= 2 * ONE_WAY_DELAY_MS
        assert simulator.packets_forwarded > 0 and simulator.tcp_bytes_forwarded > 0
        [host_side] = [t for t in tunnels(host) if t.host_side]
        assert host_side.weight_bytes_raw == 0 and host_side.weight_bytes_by_reference > 0
        assert host_side.fast_path_connections > 0  # TLS over the simulator's TCP relay
    finally:
        simulator.close()
