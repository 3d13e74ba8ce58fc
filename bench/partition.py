#!/usr/bin/env python3
"""Join, dead-peer and partition-heal times of real nodes on real, separate addresses.

Each round builds a fresh network-namespace test bed (tests/support/netns.py: one LAN, three hosts,
own IPv4 addresses) and runs real nodes in it, with no networking flags: `a` serves a tiny model,
`b` joins with the token and serves another, `c` joins. Measured per round, all from the outside
(ListPeers over the node's gRPC socket, /v1/models and chat over HTTP inside the namespace):

- join: `b` launched → `b` linked to `a` (join_link_s) and → `a` answers for b's model (join_served_s);
  both include starting b's five services and llama-server.
- heal: `b` cut off from every host for --cut-s, until `a` no longer lists b's model; then the cut is
  lifted → `b` linked directly to `a` and `c` again and `a` answers b's model (heal_s; goal ≤ 15 s).
- drop: `b` killed with SIGKILL (a machine losing power) → `a` and `c` no longer list it as a peer and
  b's model leaves a's /v1/models (drop_s; detection alone is PEER_DEAD_AFTER_S of silence).

Prints one JSON object: per-round times and, per measure, the median, min and max, plus each median
over its goal (heal vs 15 s, drop vs 5 s: < 1 is inside the goal). Needs root (namespaces), nftables
and the llama.cpp build (`make install`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.mesh.link import PEER_DEAD_AFTER_S
from tests.support.netns import Testbed, netns_unavailable_reason
from tests.support.netns_mesh import (
    answers,
    listed_models,
    model_copy,
    node_id,
    path_to,
    peers_of,
    start_on,
    stop_all,
    wait_started,
)
from tests.support.node import RunningNode
from tests.support.tiny_gguf import write_tiny_llama_gguf

HEAL_GOAL_S = 15.0
DROP_GOAL_S = 5.0
POLL_S = 0.05
STEP_TIMEOUT_S = 60.0


def timed(predicate, what: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds until `predicate()` holds, polled every POLL_S."""
    started = time.monotonic()
    deadline = started + STEP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if predicate():
                return time.monotonic() - started
        except Exception:  # not there yet (a socket not up, a request refused)
            pass
        time.sleep(POLL_S)
    raise TimeoutError(f"timed out waiting for {what}")


def one_round(root: Path, model: Path, cut_s: float) -> dict[str, float]:
    nodes: list[RunningNode] = []
    with Testbed() as bed:
        lan = bed.lan("lan")
        hosts = {name: bed.host(name) for name in "abc"}
        for i, host in enumerate(hosts.values()):
            host.attach(lan, f"10.77.90.{i + 1}/24")
        try:
            a = start_on(hosts["a"], root, "a", ["--model", str(model_copy(model, root, "bench-a"))])
            nodes.append(a)
            wait_started(a)
            token = a.invite()
            c = start_on(hosts["c"], root, "c", ["--join", token])
            nodes.append(c)
            wait_started(c)

            launched = time.monotonic()
            b = start_on(
                hosts["b"], root, "b", ["--join", token, "--model", str(model_copy(model, root, "bench-b"))]
            )
            nodes.append(b)
            timed(lambda: path_to(b, a) == "direct", "b to link to a")
            join_link_s = time.monotonic() - launched
            timed(lambda: answers(a, "bench-b"), "a to serve b's model")
            join_served_s = time.monotonic() - launched
            timed(lambda: path_to(c, b) == "direct", "c to link to b")
            b_id = node_id(b)

            for other in ("a", "c"):
                bed.cut(hosts["b"], hosts[other])
            timed(lambda: "bench-b" not in listed_models(a), "a to drop b's model during the cut")
            time.sleep(max(0.0, cut_s - PEER_DEAD_AFTER_S))
            for other in ("a", "c"):
                bed.heal(hosts["b"], hosts[other])
            heal_s = timed(
                lambda: path_to(b, a) == "direct" and path_to(b, c) == "direct" and answers(a, "bench-b"),
                "the heal to converge",
            )

            b.kill_hard()
            drop_s = timed(
                lambda: (
                    b_id not in peers_of(a) and b_id not in peers_of(c) and "bench-b" not in listed_models(a)
                ),
                "a and c to drop the dead node",
            )
            return {
                "join_link_s": round(join_link_s, 3),
                "join_served_s": round(join_served_s, 3),
                "heal_s": round(heal_s, 3),
                "drop_s": round(drop_s, 3),
            }
        finally:
            stop_all(nodes)


def summary(rounds: list[dict[str, float]]) -> dict[str, object]:
    out: dict[str, object] = {"rounds": rounds}
    for measure in ("join_link_s", "join_served_s", "heal_s", "drop_s"):
        values = [r[measure] for r in rounds]
        out[measure] = {
            "median": round(statistics.median(values), 3),
            "min": min(values),
            "max": max(values),
        }
    medians = {m: out[m]["median"] for m in ("heal_s", "drop_s")}  # type: ignore[index]
    out["heal_median_over_goal"] = round(medians["heal_s"] / HEAL_GOAL_S, 3)
    out["drop_median_over_goal"] = round(medians["drop_s"] / DROP_GOAL_S, 3)
    out["goals_s"] = {"heal": HEAL_GOAL_S, "drop": DROP_GOAL_S, "peer_dead_after": PEER_DEAD_AFTER_S}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cut-s", type=float, default=10.0, help="how long b stays cut off")
    args = parser.parse_args()
    reason = netns_unavailable_reason()
    if reason is not None:
        sys.exit(f"partition bench: {reason}")
    with tempfile.TemporaryDirectory(prefix="mesh-partition-") as tmp:
        root = Path(tmp)
        model = write_tiny_llama_gguf(root / "tiny.gguf")
        rounds = []
        for index in range(args.rounds):
            rounds.append(one_round(root / f"r{index}", model, args.cut_s))
            print(f"round {index + 1}/{args.rounds}: {rounds[-1]}", file=sys.stderr, flush=True)
    print(json.dumps(summary(rounds), indent=2))


if __name__ == "__main__":
    main()
