"""`/metrics` scraped from another machine (issue 15): two nodes with `--listen-all` in their own network
namespaces and a Prometheus host on the same LAN. The keyed node answers the scraper with its key only,
and its `?scope=mesh` shows both nodes, the peer's requests included as the peer gossips them; the
unkeyed node answers its own machine only, like its `/v1`."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.netns import Host, Testbed
from tests.support.netns_mesh import NODE_READY_TIMEOUT_S, launch, model_copy, wait_path
from tests.support.node import RunningNode, wait_until

pytestmark = pytest.mark.integration

KEY = "sk-metrics-0123456789"
MAX_TOKENS = 4
# Gossip of the peer's summary: at most every 10 s, then a round or two of gossip.
MESH_SCOPE_TIMEOUT_S = 60.0


def scrape(scraper: Host, url: str, key: str | None = KEY) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return scraper.http("GET", url, headers=headers)


def request_counts(text: str) -> dict[tuple[str, str, str], float]:
    """(node, model, served) -> requests answered with 200."""
    counts: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "meshllm_requests_total" and labels["status"] == "200":
                key = (labels["node"], labels["model"], labels["served"])
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def test_a_scraper_on_the_lan_reads_the_mesh_with_the_key(
    testbed: Testbed, nodes: list[RunningNode], tmp_path: Path, tiny_gguf: Path
) -> None:
    lan = testbed.lan("lan")
    one, two, prometheus = testbed.host("one"), testbed.host("two"), testbed.host("prometheus")
    ip_one = one.attach(lan, "10.77.15.1/24")
    ip_two = two.attach(lan, "10.77.15.2/24")
    prometheus.attach(lan, "10.77.15.9/24")
    first = launch(
        nodes,
        one,
        tmp_path,
        "one",
        ["--model", str(model_copy(tiny_gguf, tmp_path, "tiny-a")), "--listen-all", "--api-key", KEY],
    )
    second_args = [
        "--join",
        first.invite(),
        "--listen-all",
        "--model",
        str(model_copy(tiny_gguf, tmp_path, "tiny-b")),
    ]
    second = launch(nodes, two, tmp_path, "two", second_args)
    wait_path(first, second, "direct")
    second.wait_ready(["tiny-b"])
    one_id, two_id = first.status().node_id, second.status().node_id

    metrics_one = f"http://{ip_one}:{first.console_port}/metrics"
    assert scrape(prometheus, metrics_one, key=None).status_code == 401
    assert scrape(prometheus, metrics_one, key="sk-wrong").status_code == 401
    # Without a key the second node answers its own machine only, as its /v1 does.
    metrics_two = f"http://{ip_two}:{second.console_port}/metrics"
    assert scrape(prometheus, metrics_two, key=None).status_code == 401
    assert second.http("GET", f"http://127.0.0.1:{second.console_port}/metrics").status_code == 200

    def chat_b() -> bool:
        body = {"model": "tiny-b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_TOKENS}
        url = f"http://{ip_one}:{first.api_port}/v1/chat/completions"
        headers = {"authorization": f"Bearer {KEY}"}
        return prometheus.http("POST", url, json=body, headers=headers).status_code == 200

    wait_until(chat_b, NODE_READY_TIMEOUT_S, "the first node to forward tiny-b to the second")

    def mesh_scope_shows_the_peers_answer() -> dict[tuple[str, str, str], float] | None:
        response = scrape(prometheus, f"{metrics_one}?scope=mesh")
        assert response.status_code == 200, response.text
        counts = request_counts(response.text)
        return counts if counts.get((two_id, "tiny-b", "here"), 0) >= 1 else None

    counts = wait_until(
        mesh_scope_shows_the_peers_answer, MESH_SCOPE_TIMEOUT_S, "the mesh scope to show node two"
    )
    assert counts[(one_id, "tiny-b", "forwarded")] >= 1
    node_scope = request_counts(scrape(prometheus, metrics_one).text)
    assert {node for node, _, _ in node_scope} == {one_id}  # the default scope is this node alone
