"""`/metrics` on real nodes (issue 15): a 2-node mesh on loopback, real llama-servers, real requests.

Node A runs with an API key and serves tiny-x; node B joins and serves tiny-y with n-gram
speculation. Every check scrapes the console port and reads the answer with prometheus_client's own
text parser: the values must move as requests are answered here and forwarded to the peer,
`?scope=mesh` must show both nodes with the peer's counters as it gossips them, and a scrape must
still answer while the runner is down.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.node.config import API_KEY_ENV
from tests.support.node import RunningNode, free_port, wait_until
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.integration

KEY = f"sk-mesh-{secrets.token_hex(12)}"
AUTH = {"authorization": f"Bearer {KEY}"}
HTTP_TIMEOUT_S = 30.0
# The collector refreshes every 5 s and gossips every 10 s at most; gossip then takes a moment.
COLLECTOR_WAIT_S = 30.0
MESH_WAIT_S = 60.0
CHAT = "/v1/chat/completions"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningNode]]:
    root = tmp_path_factory.mktemp("metrics")
    x = write_tiny_llama_gguf(root / "tiny-x.gguf", seed=1)
    y = write_tiny_llama_gguf(root / "tiny-y.gguf", seed=2)
    a = RunningNode(root / "a", free_port(), free_port(), ["--name", "a", "--model", str(x)])
    with pytest.MonkeyPatch.context() as env:
        env.setenv(API_KEY_ENV, KEY)
        a.start()
    nodes = {"a": a}
    try:
        a.wait_ready(["tiny-x"])
        b = RunningNode(
            root / "b",
            free_port(),
            free_port(),
            # n-gram speculation: this random model loops at temperature 0, so it drafts.
            ["--name", "b", "--join", a.invite(), "--model", str(y), "--speculation", "ngram"],
        )
        nodes["b"] = b.start()
        b.wait_ready(["tiny-y"])
        wait_until(
            lambda: "tiny-y" in {m.model for m in a.status().models if m.state == "ready"}, 60, "A routes Y"
        )
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


def scrape(node: RunningNode, query: str = "", headers: dict[str, str] | None = None) -> Samples:
    response = httpx.get(
        f"http://127.0.0.1:{node.console_port}/metrics{query}",
        headers=headers or AUTH,
        timeout=HTTP_TIMEOUT_S,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    found: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: Samples, family: str, **labels: str) -> float:
    return found.get((family, frozenset(labels.items())), 0.0)


def chat(node: RunningNode, model: str, stream: bool, headers: dict[str, str] | None = None) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 8,
        "stream": stream,
    }
    response = httpx.post(f"{node.api_base}/chat/completions", json=body, headers=headers or AUTH, timeout=60)
    response.raise_for_status()
    if stream:
        assert "data: [DONE]" in response.text


def test_metrics_need_the_key_and_health_stays_open(mesh: dict[str, RunningNode]) -> None:
    console = f"http://127.0.0.1:{mesh['a'].console_port}"
    missing = httpx.get(f"{console}/metrics", timeout=HTTP_TIMEOUT_S)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    wrong = httpx.get(
        f"{console}/metrics", headers={"authorization": "Bearer sk-wrong"}, timeout=HTTP_TIMEOUT_S
    )
    assert wrong.status_code == 401
    assert httpx.get(f"{console}/health", timeout=HTTP_TIMEOUT_S).status_code == 200
    bad_scope = httpx.get(f"{console}/metrics?scope=galaxy", headers=AUTH, timeout=HTTP_TIMEOUT_S)
    assert bad_scope.status_code == 400 and "scope must be" in bad_scope.text


def test_requests_tokens_and_ttft_move_with_real_requests(mesh: dict[str, RunningNode]) -> None:
    a = mesh["a"]
    node_id = a.status().node_id
    here = {"node": node_id, "model": "tiny-x"}
    before = scrape(a)
    chat(a, "tiny-x", stream=True)
    chat(a, "tiny-x", stream=False)
    after = scrape(a)
    ok = {"endpoint": CHAT, "status": "200", "served": "here", **here}
    assert value(after, "meshllm_requests_total", **ok) == value(before, "meshllm_requests_total", **ok) + 2
    for family in (
        "meshllm_tokens_in_total",
        "meshllm_tokens_out_total",
        "meshllm_decode_tokens_per_second_count",
    ):
        assert value(after, family, **here) > value(before, family, **here), family
    ttft = "meshllm_time_to_first_token_seconds_count"
    assert value(after, ttft, **here) == value(before, ttft, **here) + 1  # the streamed one only
    assert value(after, "meshllm_requests_in_flight", node=node_id) == 0


def test_slot_use_comes_from_llama_servers_own_metrics(mesh: dict[str, RunningNode]) -> None:
    a = mesh["a"]
    [server] = [p for p in a.runner_status().processes if p.spec.model == "tiny-x"]
    props = httpx.get(
        f"http://{server.host}:{server.port}/props",
        headers={"authorization": f"Bearer {server.api_key}"},
        timeout=HTTP_TIMEOUT_S,
    ).json()
    here = {"node": a.status().node_id, "model": "tiny-x"}
    found = wait_until(
        lambda: (s := scrape(a)) and value(s, "meshllm_slots", **here) and s, COLLECTOR_WAIT_S, "slots"
    )
    assert value(found, "meshllm_slots", **here) == props["total_slots"]
    assert value(found, "meshllm_slots_busy", **here) == 0  # nothing is being answered now
    assert value(found, "meshllm_model_state", state="ready", **here) == 1
    assert value(found, "meshllm_model_role", role="solo", **here) == 1
    assert value(found, "meshllm_model_layer_share_ratio", **here) == 1.0


def test_drafted_and_accepted_tokens_count_here_and_in_the_mesh_scope(mesh: dict[str, RunningNode]) -> None:
    a, b = mesh["a"], mesh["b"]
    body = {
        "model": "tiny-y",
        "messages": [{"role": "user", "content": "hello world"}],
        "max_tokens": 200,
        "ignore_eos": True,
        "temperature": 0,  # greedy: the random model loops, and n-gram drafts the loop
    }
    answer = httpx.post(f"{b.api_base}/chat/completions", json=body, timeout=60).json()
    drafted = answer["timings"].get("draft_n", 0)  # llama-server's own count for this request
    assert drafted > 0, answer["timings"]
    here = {"node": b.status().node_id, "model": "tiny-y"}
    found = wait_until(
        lambda: (
            (s := scrape(b)) and value(s, "meshllm_speculative_draft_tokens_total", **here) >= drafted and s
        ),
        COLLECTOR_WAIT_S,
        "b's /metrics to count the drafted tokens",
    )
    accepted = value(found, "meshllm_speculative_accepted_tokens_total", **here)
    assert 0 < accepted <= value(found, "meshllm_speculative_draft_tokens_total", **here)
    wait_until(
        lambda: value(scrape(a, "?scope=mesh"), "meshllm_speculative_draft_tokens_total", **here) >= drafted,
        MESH_WAIT_S,
        "a's mesh scope to show b's drafted tokens",
    )


def test_a_forwarded_request_counts_on_both_nodes_and_the_mesh_scope_shows_both(
    mesh: dict[str, RunningNode],
) -> None:
    a, b = mesh["a"], mesh["b"]
    a_id, b_id = a.status().node_id, b.status().node_id
    forwarded = {"node": a_id, "model": "tiny-y", "endpoint": CHAT, "status": "200", "served": "forwarded"}
    served_on_b = {"node": b_id, "model": "tiny-y", "endpoint": CHAT, "status": "200", "served": "here"}
    before_a = value(scrape(a), "meshllm_requests_total", **forwarded)
    chat(a, "tiny-y", stream=True)
    assert value(scrape(a), "meshllm_requests_total", **forwarded) == before_a + 1
    assert value(scrape(b, headers={}), "meshllm_requests_total", **served_on_b) >= 1
    assert value(scrape(a), "meshllm_peers", node=a_id) == 1

    def mesh_shows_b() -> Samples | None:
        found = scrape(a, "?scope=mesh")
        streamed = value(found, "meshllm_time_to_first_token_seconds_count", node=b_id, model="tiny-y")
        return found if value(found, "meshllm_requests_total", **served_on_b) >= 1 and streamed else None

    found = wait_until(mesh_shows_b, MESH_WAIT_S, "A's mesh scope to show B's counters")
    for node_id, name in ((a_id, "a"), (b_id, "b")):
        assert value(found, "meshllm_node_info", node=node_id, name=name, client="false") == 1
    assert value(found, "meshllm_model_state", node=b_id, model="tiny-y", state="ready") == 1
    assert value(found, "meshllm_requests_total", **forwarded) == before_a + 1
    assert value(found, "meshllm_peer_rtt_seconds", node=b_id, peer=a_id) > 0


GOSSIP_FAMILIES = (
    "meshllm_gossip_sent_bytes_total",
    "meshllm_gossip_received_bytes_total",
    "meshllm_gossip_sent_messages_total",
    "meshllm_gossip_received_messages_total",
)


def gossip_totals(found: Samples, node_id: str) -> tuple[float, ...]:
    """Each gossip family summed over message kinds, for one node."""
    return tuple(
        sum(v for (name, labels), v in found.items() if name == family and ("node", node_id) in labels)
        for family in GOSSIP_FAMILIES
    )


def check_own_gossip_grows(node: RunningNode, headers: dict[str, str], node_id: str) -> None:
    def totals() -> tuple[float, ...]:
        return gossip_totals(scrape(node, headers=headers), node_id)

    first = wait_until(lambda: min(t := totals()) > 0 and t, COLLECTOR_WAIT_S, f"gossip of {node_id}")
    wait_until(
        lambda: all(now > then for now, then in zip(totals(), first, strict=True)),
        COLLECTOR_WAIT_S,
        f"gossip counters of {node_id} to grow",
    )
    found = scrape(node, headers=headers)
    assert value(found, "meshllm_gossip_sent_messages_total", node=node_id, kind="summary") > 0  # each round
    assert value(found, "meshllm_gossip_received_bytes_total", node=node_id, kind="malformed") == 0


def test_gossip_bytes_and_messages_count_on_both_nodes_and_grow(mesh: dict[str, RunningNode]) -> None:
    """Gossip runs every second whatever else happens: each node's counters (read from its gossip
    service by the collector) are above zero and keep growing, in both directions."""
    a, b = mesh["a"], mesh["b"]
    b_id = b.status().node_id
    check_own_gossip_grows(a, AUTH, a.status().node_id)
    check_own_gossip_grows(b, {}, b_id)
    chat(b, "tiny-y", stream=False)  # a counter besides gossip moves: B republishes its summary
    wait_until(
        lambda: min(gossip_totals(scrape(a, "?scope=mesh"), b_id)) > 0,
        MESH_WAIT_S,
        "A's mesh scope to show B's gossip counters",
    )


def test_killed_processes_count_as_restarts_and_a_scrape_answers_while_the_runner_is_down(
    mesh: dict[str, RunningNode],
) -> None:
    a = mesh["a"]
    process = {"node": a.status().node_id, "service": "runner", "process": "llama-server/tiny-x"}
    before = value(scrape(a), "meshllm_process_restarts_total", **process)
    os.kill(a.llama_server_pid(), signal.SIGKILL)
    slots = {"node": process["node"], "model": "tiny-x"}
    # The restart shows first; the restarted server's slots only once it is ready and scraped again.
    wait_until(
        lambda: (
            (found := scrape(a))
            and value(found, "meshllm_process_restarts_total", **process) == before + 1
            and value(found, "meshllm_slots", **slots) > 0
        ),
        COLLECTOR_WAIT_S,
        "the restart to show and the restarted llama-server's slots to be read",
    )
    os.kill(a.service_pid("runner"), signal.SIGKILL)
    found = scrape(a)  # the runner is restarting (supervisord): the scrape answers with what it knows
    assert value(found, "meshllm_process_restarts_total", **process) == before + 1
    assert value(found, "meshllm_slots", **slots) > 0
    runner = {"node": process["node"], "service": "supervisord", "process": "runner"}
    wait_until(
        lambda: value(scrape(a), "meshllm_process_restarts_total", **runner) == 1,
        COLLECTOR_WAIT_S,
        "supervisord's restart of the runner to show",
    )
