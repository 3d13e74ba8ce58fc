#!/usr/bin/env python3
"""Failover and peer file transfer of the living mesh (issue 10), on real, separate addresses.

Failover, per round (a fresh network-namespace test bed, tests/support/netns.py, three hosts on one
LAN, real nodes with no networking flags): `a` serves a tiny model, `d` is a standby that has the
same file in its own store, `c` is a client. `a` is killed with SIGKILL (a machine losing power);
measured: from the kill to the first successful chat answer through `c` (failover_s; goal ≤ 15 s;
the reference implementation takes ~60 s), and, of that, until `c` no longer lists `a` (detected_s).
The promotion is the pool's own: `d` sees the model lost its last server and takes it up.

Transfer (bench/file_transfer.py, same run): a model file fetched from a peer over the mesh (FetchFile:
TLS fast path, every chunk and the whole file verified) vs a plain TCP copy of the same file on the
same link (loopback), interleaved; the ratio of the medians (goal ≥ 0.5).

Prints one JSON object: per-round times, medians, min, max, and each median over its goal.
Needs root (namespaces), nftables and the llama.cpp build (`make install`).
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

from tests.support.netns import Testbed, netns_unavailable_reason
from tests.support.netns_mesh import (
    answers,
    node_id,
    start_on,
    stop_all,
    wait_answers,
    wait_started,
)
from tests.support.node import RunningNode
from tests.support.tiny_gguf import write_tiny_llama_gguf

FAILOVER_GOAL_S = 15.0
TRANSFER_RATIO_GOAL = 0.5
POLL_S = 0.05
STEP_TIMEOUT_S = 60.0
MODEL = "bench-x"


def timed(predicate, what: str, started: float) -> float:  # type: ignore[no-untyped-def]
    deadline = started + STEP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if predicate():
                return time.monotonic() - started
        except Exception:  # not there yet
            pass
        time.sleep(POLL_S)
    raise TimeoutError(f"timed out waiting for {what}")


def one_round(root: Path, model: Path) -> dict[str, float]:
    nodes: list[RunningNode] = []
    with Testbed() as bed:
        lan = bed.lan("lan")
        hosts = {name: bed.host(name) for name in "acd"}
        for i, host in enumerate(hosts.values()):
            host.attach(lan, f"10.77.91.{i + 1}/24")
        try:
            for name in ("a", "d"):
                store = root / name / "models"
                store.mkdir(parents=True)
                (store / f"{MODEL}.gguf").write_bytes(model.read_bytes())
            a = start_on(hosts["a"], root, "a", ["--model", str(root / "a" / "models" / f"{MODEL}.gguf")])
            nodes.append(a)
            wait_started(a)
            token = a.invite()
            c = start_on(hosts["c"], root, "c", ["--client", "--join", token])
            d = start_on(hosts["d"], root, "d", ["--join", token])
            nodes += [c, d]
            wait_started(c)
            wait_started(d)
            wait_answers(c, MODEL)
            a_id = node_id(a)
            # d must have seen the model served (and hashed its own copy) before the loss.
            time.sleep(3)
            killed = time.monotonic()
            a.kill_hard()
            detected_s = timed(lambda: a_id not in _listed_servers(c), "c to drop a", killed)
            failover_s = timed(lambda: answers(c, MODEL), "an answer through c", killed)
            return {"detected_s": round(detected_s, 3), "failover_s": round(failover_s, 3)}
        finally:
            stop_all(nodes)


def _listed_servers(node: RunningNode) -> set[str]:
    data = node.http("GET", f"{node.api_base}/models", timeout=5).json()["data"]
    return {n for entry in data if entry["id"] == MODEL for n in entry["meshllm"]["nodes"]}


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--transfer-rounds", type=int, default=3)
    parser.add_argument("--transfer-mb", type=int, default=256, help="size of the file transferred")
    args = parser.parse_args()
    reason = netns_unavailable_reason()
    if reason is not None:
        sys.exit(f"failover bench: {reason}")
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="mesh-failover-") as tmp:
        root = Path(tmp)
        model = write_tiny_llama_gguf(root / "tiny.gguf")
        rounds = []
        for index in range(args.rounds):
            rounds.append(one_round(root / f"r{index}", model))
            print(f"round {index + 1}/{args.rounds}: {rounds[-1]}", file=sys.stderr, flush=True)
        out["failover_rounds"] = rounds
        out["failover_s"] = _stats([r["failover_s"] for r in rounds])
        out["detected_s"] = _stats([r["detected_s"] for r in rounds])
        out["failover_median_over_goal"] = round(out["failover_s"]["median"] / FAILOVER_GOAL_S, 3)  # type: ignore[index]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import file_transfer  # bench/file_transfer.py: two nodes of its own, interleaved with plain TCP

    out["transfer"] = file_transfer.bench(
        argparse.Namespace(size_mb=args.transfer_mb, runs=args.transfer_rounds)
    )
    out["goals"] = {"failover_s": FAILOVER_GOAL_S, "transfer_ratio": TRANSFER_RATIO_GOAL}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
