#!/usr/bin/env python3
"""Speculative decoding: decode speed with n-gram speculation vs off, solo and in a 2-node split.

`--speculation auto` is decided from these numbers (services/runner/speculation.py): the JSON says
what auto chooses (`auto_here`), and the goals are judged on that.
Solo: llama-servers on the embedded SmolLM2 135M started with the runner's own argv
(services/runner/commands.py build_argv) for `off`, `ngram` and `draft_random` (a draft: a tiny
random GGUF with SmolLM2's tokenizer, tests/support/tiny_gguf.py; no real draft with its vocabulary
is on the registries we reach), so its guesses are ~never accepted: the cost of a bad draft. Prompt
kinds (`--kinds`), temperature 0, interleaved rounds (the order alternates), medians: code-like and
free prose. Code-like is where the answer copies the input: `json_edit` (change one value in a 40-line JSON
document; the goals are judged on it), plus two function edits SmolLM2 copies loosely: `code`
(fix one line of a 40-line function: it writes a shorter, different function) and `code_rename`
(rename a parameter: every line changes). Per request it keeps
llama-server's own `timings`: decode tok/s, drafted and accepted tokens.

Split (`--split-rtts-ms`, skipped with an empty list): two real nodes split SmolLM2 through the link
simulator of bench/split.py (its `two_nodes`, `Links`, stock relay), at each RTT: ours (the host's
llama-server as the runner starts it, under the default `--speculation auto`) vs stock llama.cpp
RPC without speculation (the host's command line minus the speculation flags, --rpc through the
parsing relay to an rpc-server with the worker's command line), interleaved. Blocking round trips
per decoded token are counted by the relay, which parses llama.cpp RPC: for stock directly, and for
ours by running the host's exact command line (speculation included) through the same relay once
per prompt kind.

    .venv/bin/python bench/speculative.py [--rounds 6] [--tokens 128] [--split-rtts-ms 0,20]
Prints one JSON object; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from remote_routing import CpuMeter
from split import (
    SETTLE_S,
    Links,
    Spawned,
    cmdline,
    delta,
    drop_flags,
    free_tcp_port,
    ready_host_process,
    ready_rpc_server,
    set_flag,
    two_nodes,
    wait_healthy,
    wait_listening,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # tests.support is not installed with the project

from services.runner.commands import build_argv  # noqa: E402
from services.runner.cpu_cores import physical_cores  # noqa: E402
from services.runner.gguf_meta import read_model_traits  # noqa: E402
from services.runner.spec import ProcessKind, ProcessSpec  # noqa: E402

MODEL = "smollm2-135m"
DEFAULT_ROUNDS = 6
DEFAULT_TOKENS = 128
DEFAULT_SPLIT_RTTS_MS = "0,20"
CONTEXT_TOKENS = 4096
WARMUP_REQUESTS = 1
REQUEST_TIMEOUT_S = 600.0
CODE_GOAL, PROSE_GOAL, SPLIT_CODE_GOAL, SPLIT_PROSE_GOAL = 1.3, 0.97, 1.5, 1.0
ROUND_TRIPS_GOAL = 0.6  # blocking round trips per decoded token, split, code-like
SPECULATION_FLAGS = (
    "--spec-type",
    "--model-draft",
    "--spec-draft-p-min",
    "--spec-draft-n-max",
    "--spec-draft-device",
)
# ngram-mod keeps the n-grams of everything a server has seen: a repeated request would draft from
# the previous answer. Each round asks a variant no earlier round's text matches for 24 tokens.
PROSE_SUBJECTS = ("lighthouse keeper", "baker", "train driver", "beekeeper", "librarian", "glassblower",
                  "ferryman", "clockmaker", "shepherd", "astronomer", "potter", "cartographer")  # fmt: skip
KINDS = ("json_edit", "code", "code_rename", "prose")
# The goals' code-like kind: an edit whose answer copies the input. SmolLM2 135M does copy a JSON
# document it is asked to change one field of; asked to fix the function (`code`) it writes a
# shorter, different one (its answer is mostly not the input), and `code_rename` changes every line.
COPY_KIND = "json_edit"
JSON_ITEMS = 6  # 6 lines each: a 40-line document
JSON_FIRST_LOT = 100  # below ~50 SmolLM2 starts to rewrite the document


def code_function(variant: int) -> str:
    """40 lines; one wrong line (order 7 gets its tax subtracted); indices unique to the variant."""
    base = 100 * (variant + 1)
    lines = [
        f"    subtotal_{i} = orders[{base + i}].quantity * prices[orders[{base + i}].sku]\n"
        f"    totals.append(round(subtotal_{i} * (1 {'-' if i == 7 else '+'} tax_rate), 2))"
        for i in range(18)
    ]
    return (
        f"def order_totals_{base}(orders, prices, tax_rate):\n"
        '    """Totals per order, tax included."""\n'
        "    totals = []\n" + "\n".join(lines) + "\n    return totals"
    )


def json_document(variant: int) -> str:
    """40 lines; the SKUs unique to the variant. (SmolLM2 copies this shape faithfully; with ids and
    prices next to the SKUs it restructures the document instead.)"""
    lot = JSON_FIRST_LOT + variant
    items = [
        {"sku": f"SKU-{lot}-{i:03d}", "name": f"item {i} of batch {lot}", "qty": (i * 7) % 5 + 1,
         "status": "pending"}
        for i in range(JSON_ITEMS)
    ]  # fmt: skip
    return json.dumps({"items": items}, indent=2)


def prompt(kind: str, variant: int) -> str:
    if kind == "json_edit":  # the answer is the document with one value changed
        sku = f"SKU-{JSON_FIRST_LOT + variant}-003"
        return (
            f'Here is a JSON document. Change the "qty" of the item with sku {sku} '
            "to 9 and reply with the whole document, unchanged otherwise. JSON only.\n\n"
            f"```json\n{json_document(variant)}\n```"
        )
    if kind == "code":  # the fixed function is the input with one line changed (if the model copies)
        return (
            "This Python function has a bug: one order gets its tax subtracted instead of added. "
            f"Reply with the whole fixed function only.\n\n```python\n{code_function(variant)}\n```"
        )
    if kind == "code_rename":  # every line changes a little: no long match, n-gram drafts little
        return (
            "In this Python function, rename the parameter `orders` to `purchases` everywhere. "
            f"Reply with the whole function only.\n\n```python\n{code_function(variant)}\n```"
        )
    subject = PROSE_SUBJECTS[variant % len(PROSE_SUBJECTS)]
    return f"Write a short story about a {subject} who sees a strange light one winter night ({variant})."


def progress(message: str) -> None:
    print(f"[speculative {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def chat(
    client: httpx.Client, port: int, kind: str, variant: int, tokens: int, api_key: str = ""
) -> dict[str, Any]:
    body = {
        "messages": [{"role": "user", "content": prompt(kind, variant)}],
        "max_tokens": tokens,
        "temperature": 0,
        "cache_prompt": True,  # the shared prefix is processed once per server; decode is what is timed
    }
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    response = client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers=headers)
    response.raise_for_status()
    reply = response.json()
    timings = reply["timings"]
    return {
        "text": reply["choices"][0]["message"]["content"],
        "decode_tok_s": float(timings["predicted_per_second"]),
        "predicted_n": int(timings["predicted_n"]),
        "draft_n": int(timings.get("draft_n", 0)),
        "draft_n_accepted": int(timings.get("draft_n_accepted", 0)),
    }


# (client, prompt kind, variant, max tokens) -> one sample
Measure = Callable[[httpx.Client, str, int, int], dict[str, Any]]


def timed_chat(
    client: httpx.Client, port: int, pid: int, kind: str, variant: int, tokens: int
) -> dict[str, Any]:
    """chat(), with the CPU time the llama-server spent on it: on a shared machine its wall-clock
    tok/s swings with the neighbours' load, its CPU time per token much less."""
    meter = CpuMeter({"server": pid})
    before = meter.snapshot()
    sample = chat(client, port, kind, variant, tokens)
    sample["cpu_ms_per_token"] = meter.since(before)["server"] / 1e6 / max(1, sample["predicted_n"])
    return sample


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    drafted = sum(s["draft_n"] for s in samples)
    accepted = sum(s["draft_n_accepted"] for s in samples)
    decoded = sum(s["predicted_n"] for s in samples)
    return {
        "decode_tok_s_median": round(statistics.median(s["decode_tok_s"] for s in samples), 2),
        "decode_tok_s": [round(s["decode_tok_s"], 2) for s in samples],
        "decoded_tokens": samples[-1]["predicted_n"],
        "drafted_per_request": round(drafted / len(samples), 1),
        "acceptance_rate": round(accepted / drafted, 3) if drafted else None,
        # Forward passes of the model per decoded token: 1 without speculation.
        "steps_per_token": round((decoded - accepted) / decoded, 3) if decoded else None,
    } | _cpu(samples)


def _cpu(samples: list[dict[str, Any]]) -> dict[str, Any]:
    if "cpu_ms_per_token" not in samples[0]:
        return {}
    return {"cpu_ms_per_token_median": round(statistics.median(s["cpu_ms_per_token"] for s in samples), 2)}


def interleaved(
    paths: dict[str, Measure], rounds: int, tokens: int, kinds: list[str], first_variant: int = 0
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """By path and prompt kind: `rounds` samples, the order of paths alternating every round; every
    path gets the same variant in a round, a new one each round (a 1-token warm-up first)."""
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {p: {k: [] for k in kinds} for p in paths}
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        for kind in kinds:
            for measure in paths.values():
                for _ in range(WARMUP_REQUESTS):
                    measure(client, kind, first_variant, 1)
        for index in range(rounds):
            order = list(paths) if index % 2 == 0 else list(reversed(paths))
            for kind in kinds:
                for path in order:
                    samples[path][kind].append(paths[path](client, kind, first_variant + index, tokens))
                progress(f"round {index + 1}/{rounds} {kind}: " + ", ".join(
                    f"{p} {samples[p][kind][-1]['decode_tok_s']:.1f}" for p in order
                ))  # fmt: skip
    return samples


def compare(samples: dict[str, dict[str, list[dict[str, Any]]]], base: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, kinds in samples.items():
        out[path] = {}
        for kind, runs in kinds.items():
            entry = summarize(runs)
            entry["ratio_to_" + base] = round(
                entry["decode_tok_s_median"]
                / statistics.median(s["decode_tok_s"] for s in samples[base][kind]),
                3,
            )
            if "cpu_ms_per_token_median" in entry:  # tokens per CPU-second, relative to the base
                base_cpu = summarize(samples[base][kind])["cpu_ms_per_token_median"]
                entry["cpu_ratio_to_" + base] = round(base_cpu / entry["cpu_ms_per_token_median"], 3)
            same = [s["text"] == b["text"] for s, b in zip(runs, samples[base][kind], strict=True)]
            entry["same_text_as_" + base] = all(same)
            out[path][kind] = entry
    return out


# ---- solo


@contextmanager
def solo_server(
    model: Path, speculation: str, draft: str, log: Path, bin_dir: Path
) -> Iterator[tuple[int, int]]:
    spec = ProcessSpec(
        key=speculation,
        kind=ProcessKind.LLAMA_SERVER,
        model=MODEL,
        model_path=str(model),
        context_size=CONTEXT_TOKENS,
        parallel_slots=1,
        speculation=speculation,
        draft_model_path=draft,
    )
    port = free_tcp_port()
    argv = build_argv(spec, bin_dir, port, physical_cores(), read_model_traits(model))
    process = Spawned(argv, log)
    try:
        wait_healthy(port, process.alive)
        yield port, process.process.pid
    finally:
        process.stop()


def bench_solo(model: Path, draft: Path, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    from services.runner.binaries import find_llama_bin_dir
    from services.runner.speculation import SpeculationMode, decide

    bin_dir = find_llama_bin_dir()
    configs = {"off": ("off", ""), "ngram": ("ngram", ""), "draft_random": ("draft", str(draft))}
    with ExitStack() as stack:
        ports = {
            name: stack.enter_context(solo_server(model, mode, d, logs / f"solo-{name}.log", bin_dir))
            for name, (mode, d) in configs.items()
        }
        paths: dict[str, Measure] = {
            name: (lambda c, kind, variant, n, port=port, pid=pid: timed_chat(c, port, pid, kind, variant, n))
            for name, (port, pid) in ports.items()
        }
        samples = interleaved(paths, args.rounds, args.tokens, args.kinds)
    result = compare(samples, "off")
    result["auto_here"] = decide(SpeculationMode.AUTO, "").summary
    auto = result["ngram" if result["auto_here"] == "ngram" else "off"]
    result["meets_code_goal"] = auto[COPY_KIND]["ratio_to_off"] >= CODE_GOAL
    result["meets_prose_goal"] = auto["prose"]["ratio_to_off"] >= PROSE_GOAL
    return result


# ---- split


def host_split(split: Any) -> Measure:
    def measure(client: httpx.Client, kind: str, variant: int, tokens: int) -> dict[str, Any]:
        process = ready_host_process(split.host)
        assert process is not None
        return chat(client, process.port, kind, variant, tokens, process.api_key)

    return measure


def relayed(
    client: httpx.Client, port: int, links: Links, kind: str, variant: int, tokens: int
) -> dict[str, Any]:
    """One request through the parsing relay, with its RPC round trips."""
    before = links.stats()["stock"]
    sample = chat(client, port, kind, variant, tokens)
    traffic = delta(links.stats()["stock"], before)
    sample["round_trips"] = traffic["round_trips"]
    return sample


def round_trips_per_token(samples: list[dict[str, Any]], one_token: dict[str, Any]) -> float:
    """What one more decoded token costs in blocking round trips: (a request's round trips − those
    of a 1-token request) / (its tokens − 1), as bench/split.py counts RPC traffic per token."""
    extra = sum(s["round_trips"] - one_token["round_trips"] for s in samples)
    return round(extra / sum(s["predicted_n"] - one_token["predicted_n"] for s in samples), 3)


def stock_server(argv: list[str], logs: Path, name: str) -> tuple[Spawned, int]:
    port = free_tcp_port()
    process = Spawned(set_flag(argv, "--port", str(port)), logs / f"{name}.log")
    wait_healthy(port, process.alive)
    return process, port


def split_at(
    split: Any, rtt: float, argvs: dict[str, list[str]], args: argparse.Namespace, logs: Path, variant: int
) -> dict[str, Any]:
    """`variant`: the first prompt variant of this RTT (the host's n-gram pool has seen earlier ones)."""
    split.links.set_delay(rtt / 2)
    time.sleep(SETTLE_S)
    # The host's exact command line (speculation on) through the relay: its round trips per token.
    process, port = stock_server(argvs["ours_relayed"], logs, "ours-relayed")
    try:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            relayed(client, port, split.links, "prose", variant, 1)  # warm-up
            ours_one = relayed(client, port, split.links, "prose", variant, 1)
            ours_trips = {
                kind: [relayed(client, port, split.links, kind, variant + 1, args.tokens)]
                for kind in args.kinds
            }
    finally:
        process.stop()
    process, port = stock_server(argvs["stock"], logs, "stock")
    try:
        paths: dict[str, Measure] = {
            "ours": host_split(split),
            "stock": lambda c, kind, variant, n: relayed(c, port, split.links, kind, variant, n),
        }
        samples = interleaved(paths, args.rounds, args.tokens, args.kinds, variant + 2)
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            stock_one = relayed(client, port, split.links, "prose", variant, 1)
    finally:
        process.stop()
    result = compare(samples, "stock")
    for kind in args.kinds:
        stock_trips = round_trips_per_token(samples["stock"][kind], stock_one)
        result["stock"][kind]["round_trips_per_token"] = stock_trips
        result["ours"][kind]["round_trips_per_token"] = round_trips_per_token(ours_trips[kind], ours_one)
    ratio = {kind: result["ours"][kind]["ratio_to_stock"] for kind in args.kinds}
    result["meets_code_goal"] = ratio[COPY_KIND] >= SPLIT_CODE_GOAL
    result["meets_prose_goal"] = ratio["prose"] >= SPLIT_PROSE_GOAL
    trips = result["ours"][COPY_KIND]["round_trips_per_token"]
    result["meets_round_trip_goal"] = trips <= ROUND_TRIPS_GOAL
    progress(f"RTT {rtt:g} ms: ours/stock {COPY_KIND} {ratio[COPY_KIND]}, prose {ratio['prose']}")
    return result


def bench_split(
    model: Path, rtts: list[float], args: argparse.Namespace, root: Path, logs: Path
) -> dict[str, Any]:
    stock_rpc_port, plain_rpc_port = free_tcp_port(), free_tcp_port()
    with two_nodes(root, model, (stock_rpc_port, plain_rpc_port)) as split, ExitStack() as stack:
        host, worker = ready_host_process(split.host), ready_rpc_server(split.worker)
        assert host is not None and worker is not None
        host_argv, worker_argv = cmdline(host.pid), cmdline(worker.pid)
        rpc_server = Spawned(set_flag(worker_argv, "-p", str(stock_rpc_port)), logs / "rpc-stock.log")
        stack.callback(rpc_server.stop)
        wait_listening(stock_rpc_port)
        relay = f"127.0.0.1:{split.links.stock_relay_port}"
        ours_relayed = set_flag(host_argv, "--rpc", relay)
        argvs = {"ours_relayed": ours_relayed, "stock": drop_flags(ours_relayed, SPECULATION_FLAGS)}
        result: dict[str, Any] = {
            "host_argv": " ".join([Path(host_argv[0]).name, *host_argv[1:]]),
            "host_speculation": host.speculation,
        }
        for index, rtt in enumerate(rtts):
            first = 1000 * (index + 1)  # prompt variants no earlier RTT used
            result[f"{rtt:g}ms"] = split_at(split, rtt, argvs, args, logs, first)
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rounds", type=int, default=DEFAULT_ROUNDS, help="requests per path and prompt kind"
    )
    parser.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="max tokens per request")
    parser.add_argument(
        "--split-rtts-ms", default=DEFAULT_SPLIT_RTTS_MS, help="RTTs for the split, '' for none"
    )
    parser.add_argument("--no-solo", action="store_true", help="skip the solo part")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"prompt kinds (always with {COPY_KIND} and prose)"
    )
    args = parser.parse_args()
    asked = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(asked) - set(KINDS))
    if unknown:
        parser.error(f"unknown prompt kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    args.kinds = [k for k in KINDS if k in {*asked, COPY_KIND, "prose"}]
    return args


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from services.node.catalog import resolve_model
    from tests.support.tiny_gguf import write_tiny_draft_gguf

    model = Path(resolve_model(MODEL).path)
    root = Path(tempfile.mkdtemp(prefix="bench-speculative-"))
    logs = root / "logs"
    logs.mkdir()
    started = time.monotonic()
    result: dict[str, Any] = {"bench": "speculative", "model": model.name, "rounds": args.rounds,
                              "tokens": args.tokens, "cpus": os.cpu_count()}  # fmt: skip
    try:
        if not args.no_solo:
            progress(f"solo: writing a random draft with {model.name}'s vocabulary")
            draft = write_tiny_draft_gguf(root / "random-draft.gguf", model)
            result["draft_bytes"] = draft.stat().st_size
            result["solo"] = bench_solo(model, draft, args, logs)
        rtts = [float(r) for r in args.split_rtts_ms.split(",") if r.strip()]
        if rtts:
            progress(f"split: two nodes on {model.name} (logs in {root})")
            result["split"] = bench_split(model, rtts, args, root, logs)
    except (Exception, KeyboardInterrupt):
        print(f"bench failed; logs kept in {root}", file=sys.stderr)
        raise
    shutil.rmtree(root, ignore_errors=True)
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def main() -> None:
    print(json.dumps(bench(parse_args()), indent=2))


if __name__ == "__main__":
    main()
