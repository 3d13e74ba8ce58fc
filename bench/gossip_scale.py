#!/usr/bin/env python3
"""Gossip convergence and cost at scale, simulated: N real GossipProtocol/GossipState nodes in one process.

Every message goes through encode -> bytes -> decode on a simulated clock (one-way delay
LINK_LATENCY_S, each node's round at its own phase). Liveness is simulated the way the mesh feeds it:
each node pings WATCH_DEGREE direct peers every round (`mark_heard`); nothing else refreshes a record.

    .venv/bin/python bench/gossip_scale.py            # N = 100 and 1000
    .venv/bin/python bench/gossip_scale.py 300 --seed 7

Prints one JSON object: per N, (a) one change reaching every node, (b) cold start, (c) steady-state
payload bytes per node per second (idle, and 1% of nodes changing per second), (d) a silent death.
Bytes are gossip payloads as handed to the mesh (no QUIC/frame overhead).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.gossip.digest import NUM_DIGEST_BUCKETS
from services.gossip.dissemination import (
    ANTI_ENTROPY_PEERS_PER_ROUND,
    GOSSIP_ROUND_S,
    MAX_ITEMS_PER_EXCHANGE,
    PUSH_FANOUT,
    GossipProtocol,
    Outgoing,
)
from services.gossip.items import Tombstone
from services.gossip.state import PEER_DEAD_AFTER_S, GossipState
from services.proto.meshllm.gossip.v1 import gossip_pb2

LINK_LATENCY_S = 0.02
WATCH_DEGREE = 4  # direct peers each node pings (a symmetric random graph)
BOOTSTRAP_PEERS = 3  # records a cold-starting node knows: the invite token's peers
CHECK_INTERVAL_S = 0.05  # how often the simulation checks whether a scenario is done
STEADY_WINDOW_S = 10.0
CHANGE_FRACTION_PER_S = 0.01
CHANGE_TRIALS = 5
SCENARIO_CAP_S = 120.0  # give up (and say so) if a scenario has not finished by then
MODEL = "qwen2.5-7b-instruct-q4_k_m"


def make_record(node_id: str, index: int, watched: list[str]) -> gossip_pb2.NodeRecord:
    """A realistic record: one model on disk and served, RTT to each direct peer."""
    return gossip_pb2.NodeRecord(
        node_id=node_id,
        name=f"node-{index}",
        version=1,
        software_version="0.1.0",
        addresses=[f"10.{index // 65536}.{index // 256 % 256}.{index % 256}:41234"],
        region="eu-west",
        vram_bytes=24 * 10**9,
        models_on_disk=[
            gossip_pb2.ModelFile(
                name=MODEL,
                path=f"/home/user/.cache/mesh-llm/{MODEL}.gguf",
                bytes=4_683_073_184,
                sha256="ab" * 32,
            )
        ],
        models_wanted=[MODEL],
        served=[
            gossip_pb2.ServedModel(
                name=MODEL, role=gossip_pb2.MODEL_ROLE_SOLO, state=gossip_pb2.SERVE_STATE_READY
            )
        ],
        request_rate_per_min={MODEL: 3.5},
        rtt_ms={peer: 12.5 for peer in watched},
    )


# (time, sequence, node, sender, payload); sender None is the node's round tick. A plain tuple keeps
# heap comparisons in C.
_Event = tuple[float, int, str, str | None, bytes]


class Simulation:
    """N nodes, a heap of timed events, payload byte counters."""

    def __init__(self, n: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.ids = [f"{self.rng.getrandbits(128):032x}" for _ in range(n)]
        self.watch = _watch_graph(self.ids, self.rng)
        self.alive = set(self.ids)
        self.now = 0.0
        self.bytes_sent = 0
        self.bytes_by_node: dict[str, int] = dict.fromkeys(self.ids, 0)
        self.messages = 0
        self.decode_errors = 0
        self.refutes = 0
        self._events: list[_Event] = []
        self._seq = 0
        self.nodes = {
            node_id: GossipProtocol(
                GossipState(make_record(node_id, i, self.watch[node_id]), 0.0), random.Random(seed + i)
            )
            for i, node_id in enumerate(self.ids)
        }
        for node_id in self.ids:
            self._schedule(self.rng.random() * GOSSIP_ROUND_S, node_id)

    def _schedule(self, at: float, node: str, sender: str | None = None, payload: bytes = b"") -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, node, sender, payload))

    def send(self, sender: str, outgoing: list[Outgoing]) -> None:
        for out in outgoing:
            self.bytes_sent += len(out.payload)
            self.bytes_by_node[sender] += len(out.payload)
            self.messages += 1
            self._schedule(self.now + LINK_LATENCY_S, out.peer_id, sender, out.payload)

    def _handle(self, node_id: str, sender: str | None, payload: bytes) -> None:
        node = self.nodes[node_id]
        if sender is None:
            for peer in self.watch[node_id]:
                if peer in self.alive:
                    node.state.mark_heard(peer, self.now)  # the mesh's ping got an answer
            self.send(node_id, node.on_round(self.now))
            self._schedule(self.now + GOSSIP_ROUND_S, node_id)
            return
        reaction = node.receive(sender, payload, self.now)
        self.refutes += reaction.merge.local_bumped
        self.send(node_id, reaction.outgoing)

    def run(self, duration_s: float, done: Callable[[], bool] | None = None) -> float | None:
        """Advance the clock by up to `duration_s`; return the elapsed time when `done()` first holds."""
        start = self.now
        end = start + duration_s
        next_check = start
        while self._events and self._events[0][0] <= end:
            at, _, node_id, sender, payload = heapq.heappop(self._events)
            if done is not None and at >= next_check:
                self.now = next_check
                if done():
                    return self.now - start
                next_check += CHECK_INTERVAL_S
            self.now = at
            if node_id in self.alive:
                self._handle(node_id, sender, payload)
        self.now = end
        return None

    def holds(self, holder: str, node_id: str, version: int) -> bool:
        item = self.nodes[holder].state.item_for(node_id)
        return item is not None and not isinstance(item, Tombstone) and item.version >= version

    def forgot(self, holder: str, node_id: str) -> bool:
        item = self.nodes[holder].state.item_for(node_id)
        return item is None or isinstance(item, Tombstone)


def _watch_graph(ids: list[str], rng: random.Random) -> dict[str, list[str]]:
    """Each node pings about WATCH_DEGREE others; pinging is mutual, like a mesh connection."""
    links: dict[str, set[str]] = {node_id: set() for node_id in ids}
    for node_id in ids:
        while len(links[node_id]) < WATCH_DEGREE // 2 and len(ids) > WATCH_DEGREE:
            peer = rng.choice(ids)
            if peer != node_id:
                links[node_id].add(peer)
                links[peer].add(node_id)
    return {node_id: sorted(peers) for node_id, peers in links.items()}


def cold_start(sim: Simulation) -> dict[str, object]:
    """(b) Every node knows only the bootstrap peers' records, introduces itself to them, then gossips."""
    bootstrap = sim.ids[:BOOTSTRAP_PEERS]
    for node_id, node in sim.nodes.items():
        node.state.merge([sim.nodes[b].state.local for b in bootstrap if b != node_id], None, sim.now)
        sim.send(node_id, node.announce())
    everyone = len(sim.ids) - 1
    sent_before = dict(sim.bytes_by_node)
    seconds = sim.run(
        SCENARIO_CAP_S, lambda: all(len(p.state.known_peers()) == everyone for p in sim.nodes.values())
    )
    result = _timing(seconds)
    sent = [sim.bytes_by_node[node_id] - sent_before.get(node_id, 0) for node_id in sim.ids]
    result["bytes_per_node"] = round(statistics.mean(sent))
    result["max_bytes_one_node"] = max(sent)  # a bootstrap peer: everyone starts by asking it
    return result


def one_change(sim: Simulation) -> dict[str, object]:
    """(a) One node changes its record: time until every node holds the new version."""
    times = []
    for _ in range(CHANGE_TRIALS):
        node_id = sim.rng.choice(sim.ids)
        record = _changed(sim.nodes[node_id].state.local, sim.rng)
        sim.send(node_id, sim.nodes[node_id].on_local_change(record, sim.now))
        version = sim.nodes[node_id].state.local.version
        everyone_has_it = lambda n=node_id, v=version: all(sim.holds(h, n, v) for h in sim.ids)  # noqa: E731
        times.append(sim.run(SCENARIO_CAP_S, everyone_has_it))
        sim.run(2 * GOSSIP_ROUND_S)
    finished = [t for t in times if t is not None]
    return {
        "trials": CHANGE_TRIALS,
        "all_converged": len(finished) == len(times),
        "median_s": round(statistics.median(finished), 3) if finished else None,
        "max_s": round(max(finished), 3) if finished else None,
        "median_rounds": round(statistics.median(finished) / GOSSIP_ROUND_S, 2) if finished else None,
    }


def _changed(record: gossip_pb2.NodeRecord, rng: random.Random) -> gossip_pb2.NodeRecord:
    for peer in record.rtt_ms:
        record.rtt_ms[peer] = round(rng.uniform(1.0, 80.0), 1)
    record.request_rate_per_min[MODEL] = round(rng.uniform(0.0, 30.0), 2)
    return record


def steady_state(sim: Simulation, change_fraction_per_s: float) -> dict[str, object]:
    """(c) Payload bytes per node per second over STEADY_WINDOW_S, with random record changes."""
    bytes_before, messages_before = sim.bytes_sent, sim.messages
    changes = 0
    for _ in range(int(STEADY_WINDOW_S / GOSSIP_ROUND_S)):
        count = _poisson_free_count(len(sim.ids) * change_fraction_per_s * GOSSIP_ROUND_S, sim.rng)
        for node_id in sim.rng.sample(sim.ids, count):
            record = _changed(sim.nodes[node_id].state.local, sim.rng)
            sim.send(node_id, sim.nodes[node_id].on_local_change(record, sim.now))
        changes += count
        sim.run(GOSSIP_ROUND_S)
    per_node_s = len(sim.ids) * STEADY_WINDOW_S
    return {
        "changes_per_s": round(changes / STEADY_WINDOW_S, 2),
        "bytes_per_node_per_s": round((sim.bytes_sent - bytes_before) / per_node_s),
        "messages_per_node_per_s": round((sim.messages - messages_before) / per_node_s, 2),
    }


def _poisson_free_count(expected: float, rng: random.Random) -> int:
    """The integer part of the rate, plus one more with the fractional part's probability."""
    whole = int(expected)
    return whole + (1 if rng.random() < expected - whole else 0)


def silent_death(sim: Simulation) -> dict[str, object]:
    """(d) A node stops answering: its direct peers notice after PEER_DEAD_AFTER_S, gossip does the rest."""
    victim = sim.ids[-1]
    sim.alive.discard(victim)
    survivors = [node_id for node_id in sim.ids if node_id in sim.alive]
    # The victim's last answered ping was up to a round before it died, so detection can beat 5 s.
    detected = sim.run(SCENARIO_CAP_S, lambda: any(sim.forgot(h, victim) for h in survivors))
    spread = sim.run(SCENARIO_CAP_S, lambda: all(sim.forgot(h, victim) for h in survivors))
    result = _timing(None if detected is None or spread is None else detected + spread)
    result["peer_dead_after_s"] = PEER_DEAD_AFTER_S
    result["first_tombstone_s"] = None if detected is None else round(detected, 3)
    return result


def _timing(seconds: float | None) -> dict[str, object]:
    return {
        "converged": seconds is not None,
        "seconds": None if seconds is None else round(seconds, 3),
        "rounds": None if seconds is None else round(seconds / GOSSIP_ROUND_S, 2),
    }


def run_mesh(n: int, seed: int, finished: list[Simulation]) -> dict[str, object]:
    started = time.perf_counter()
    sim = Simulation(n, seed)
    # Kept alive until exit: freeing a million protobuf messages one by one takes ~15 s at N = 1000.
    finished.append(sim)
    result: dict[str, object] = {
        "record_bytes": round(statistics.mean(p.state.local.ByteSize() for p in sim.nodes.values()))
    }
    result["cold_start"] = cold_start(sim)
    sim.run(5 * GOSSIP_ROUND_S)
    result["steady_idle"] = steady_state(sim, 0.0)
    result["one_change"] = one_change(sim)
    result["steady_1pct_changing"] = steady_state(sim, CHANGE_FRACTION_PER_S)
    result["silent_death"] = silent_death(sim)
    survivors = [p for node_id, p in sim.nodes.items() if node_id in sim.alive]
    result["false_removals"] = sum(n - 2 - len(p.state.known_peers()) for p in survivors)
    result["refutes"] = sim.refutes
    result["simulated_s"] = round(sim.now, 1)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[100, 1000], help="mesh sizes to simulate")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    finished: list[Simulation] = []
    report = {
        "bench": "gossip_scale",
        "round_s": GOSSIP_ROUND_S,
        "link_latency_s": LINK_LATENCY_S,
        "watch_degree": WATCH_DEGREE,
        "push_fanout": PUSH_FANOUT,
        "anti_entropy_peers_per_round": ANTI_ENTROPY_PEERS_PER_ROUND,
        "digest_buckets": NUM_DIGEST_BUCKETS,
        "max_items_per_exchange": MAX_ITEMS_PER_EXCHANGE,
        "meshes": {str(n): run_mesh(n, args.seed, finished) for n in args.sizes},
    }
    print(json.dumps(report, indent=2), flush=True)
    os._exit(0)  # skip tearing the simulations down (see run_mesh)


if __name__ == "__main__":
    sys.exit(main())
