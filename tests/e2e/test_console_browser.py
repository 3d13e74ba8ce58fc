"""The console in real headless Chromium (Debian's, driven by Playwright) against a real three-node mesh.

A serves tiny-x (random weights), B serves Gemma 270M (real text for the chat), C is an API-only client;
the browser watches A's console. The tests run in file order: the last ones kill B, then A.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.node import RunningNode, free_port, wait_until
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.integration

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -e .[dev] brings playwright")
expect = playwright_api.expect

# Debian's chromium (apt), never a Playwright-downloaded one; MESH_LLM_CHROMIUM points elsewhere.
CHROMIUM_PATH = Path(os.environ.get("MESH_LLM_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
LAPTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
MESH_READY_TIMEOUT_S = 60.0
PAGE_LIVE_TIMEOUT_MS = 15_000
NODE_GONE_DEADLINE_MS = 5_000
BANNER_TIMEOUT_MS = 10_000
REPLY_TIMEOUT_MS = 60_000
MIN_GROWTH_STEPS = 3
REPLY_TOKENS = 80
PROMPT = "Write a short poem about computers sharing their GPUs."
GEMMA = "gemma3-270m"
SHORT_ID_CHARS = 8

# Records the assistant bubble's text length at every DOM change, with a timestamp.
WATCH_REPLY_JS = """() => {
  window.__replySamples = [];
  const log = document.getElementById('chat-log');
  new MutationObserver(() => {
    const bubbles = log.querySelectorAll('.bubble-assistant');
    const last = bubbles[bubbles.length - 1];
    if (!last) return;
    window.__replySamples.push({
      t: performance.now(),
      len: last.querySelector('.bubble-text').textContent.length,
      streaming: last.classList.contains('streaming'),
    });
  }).observe(log, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def start_node(root: Path, name: str, args: list[str]) -> RunningNode:
    return RunningNode(root / name, free_port(), free_port(), ["--name", name, *args]).start()


def console_url(node: RunningNode) -> str:
    return f"http://127.0.0.1:{node.console_port}/"


def console_status(node: RunningNode) -> dict:
    return httpx.get(f"http://127.0.0.1:{node.console_port}/api/status", timeout=5).json()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, gemma_path: Path) -> Iterator[dict[str, RunningNode]]:
    tiny_x = write_tiny_llama_gguf(tmp_path_factory.mktemp("models") / "tiny-x.gguf", seed=1)
    root = tmp_path_factory.mktemp("mesh")
    nodes = {"a": start_node(root, "alpha", ["--model", str(tiny_x)])}
    try:
        nodes["a"].wait_ready(["tiny-x"])
        token = nodes["a"].invite()
        nodes["b"] = start_node(root, "bravo", ["--join", token, "--model", GEMMA])
        nodes["c"] = start_node(root, "charlie", ["--join", token, "--client"])
        nodes["b"].wait_ready([GEMMA])
        nodes["c"].wait_ready([])

        def mesh_complete() -> bool:
            status = console_status(nodes["a"])
            states = {m["model"]: m["state"] for m in status["mesh_models"]}
            return len(status["peers"]) == 2 and states == {"tiny-x": "ready", GEMMA: "ready"}

        wait_until(mesh_complete, MESH_READY_TIMEOUT_S, "A to see B, C and both models ready")
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM_PATH.exists():
        pytest.fail(f"{CHROMIUM_PATH} not found: install Debian's chromium (apt-get install chromium)")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM_PATH), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser, mesh: dict[str, RunningNode]) -> Iterator[object]:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport=LAPTOP)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    opened.goto(console_url(mesh["a"]))
    expect(opened.locator("#conn")).to_have_text("live", timeout=PAGE_LIVE_TIMEOUT_MS)
    yield opened
    context.close()
    # Losing the event stream when a test kills the node is expected; anything else is a bug.
    assert [e for e in errors if "ERR_" not in e and "EventSource" not in e] == []


def test_a_node_without_models_shows_the_empty_state(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lone = start_node(tmp_path, "lonely", ["--client"])
    context = browser.new_context(viewport=LAPTOP)
    try:
        lone.wait_ready([])
        page = context.new_page()
        page.goto(console_url(lone))
        expect(page.locator("#conn")).to_have_text("live", timeout=PAGE_LIVE_TIMEOUT_MS)
        expect(page.locator("#models-empty")).to_be_visible()
        expect(page.locator("#models-empty")).to_contain_text("mesh-llm --model")
        expect(page.locator("#topology g.node")).to_have_count(1)
        expect(page.locator("#topology")).to_contain_text("No peers yet")
        expect(page.locator("#chat-send")).to_be_disabled()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "empty.png"), full_page=True)
    finally:
        context.close()
        lone.stop()


def node_ids(mesh: dict[str, RunningNode]) -> dict[str, str]:
    return {key: node.status().node_id for key, node in mesh.items()}


def test_topology_shows_every_node_with_name_and_short_id(page, mesh: dict[str, RunningNode]) -> None:  # type: ignore[no-untyped-def]
    names = {"a": "alpha", "b": "bravo", "c": "charlie"}
    for key, node_id in node_ids(mesh).items():
        drawn = page.locator(f'#topology g.node[data-node-id="{node_id}"]')
        expect(drawn).to_have_count(1)
        expect(drawn.locator(".node-name")).to_have_text(names[key])
        expect(drawn.locator(".node-id")).to_have_text(node_id[:SHORT_ID_CHARS])
        expect(page.locator(f'#node-list li[data-node-id="{node_id}"]')).to_be_visible()
    expect(page.locator('#model-list li[data-model="tiny-x"] .state')).to_have_text("ready")
    expect(page.locator(f'#model-list li[data-model="{GEMMA}"] .state')).to_have_text("ready")
    expect(page.locator("#invite-token")).to_have_text(mesh["a"].invite())


def test_a_standby_node_shows_as_standby_with_its_reason(
    browser, page, mesh: dict[str, RunningNode], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    standby = start_node(tmp_path, "delta", ["--join", mesh["a"].invite()])  # no model: a standby
    context = browser.new_context(viewport=LAPTOP)
    try:
        standby.wait_ready([])
        standby_id = standby.status().node_id
        # On A's console: a badge and a line in the node list, a dashed ring in the topology.
        item = page.locator(f'#node-list li[data-node-id="{standby_id}"]')
        expect(item.locator(".badge-standby")).to_have_text("standby", timeout=PAGE_LIVE_TIMEOUT_MS)
        expect(item.locator(".node-standby")).to_contain_text("standby — ")
        drawn = page.locator(f'#topology g.node.standby[data-node-id="{standby_id}"]')
        expect(drawn.locator(".node-role")).to_have_text("standby")
        # On its own console, with the reason its plan gives.
        own = context.new_page()
        own.goto(console_url(standby))
        expect(own.locator("#conn")).to_have_text("live", timeout=PAGE_LIVE_TIMEOUT_MS)
        mine = own.locator(f'#node-list li[data-node-id="{standby_id}"]')
        expect(mine.locator(".badge-standby")).to_have_text("standby")
        reason = console_status(standby)["standby_reason"]
        assert reason
        # Said once: a reason of placement's own "standby: …" loses its prefix on the page.
        why = re.sub(r"^standby:\s*", "", reason, flags=re.IGNORECASE)
        expect(mine.locator(".node-standby")).to_have_text(f"standby — {why}")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        own.screenshot(path=str(ARTIFACTS / "standby.png"), full_page=True)
    finally:
        context.close()
        standby.stop()
    expect(page.locator(f'#node-list li[data-node-id="{standby_id}"]')).to_have_count(
        0, timeout=NODE_GONE_DEADLINE_MS
    )


def test_chat_streams_a_reply_into_the_page(page, mesh: dict[str, RunningNode]) -> None:  # type: ignore[no-untyped-def]
    sent: list[dict] = []

    def bounded_reply(route) -> None:  # type: ignore[no-untyped-def]
        # The page asks for up to 1024 tokens; on a shared CPU that is half a minute, so the test
        # caps it. The page's request is otherwise sent as it is.
        body = json.loads(route.request.post_data or "{}")
        sent.append(dict(body))
        body.update(max_tokens=REPLY_TOKENS)
        route.continue_(post_data=json.dumps(body))

    page.route("**/v1/chat/completions", bounded_reply)
    page.select_option("#model-picker", GEMMA)  # served by B: the reply crosses the mesh
    page.evaluate(WATCH_REPLY_JS)
    page.fill("#chat-input", PROMPT)
    page.click("#chat-send")
    expect(page.locator(".bubble-user")).to_have_text(PROMPT)
    done = page.locator(".bubble-assistant:not(.streaming)")
    expect(done).to_have_count(1, timeout=REPLY_TIMEOUT_MS)
    assert [(b["model"], b["stream"], b["messages"][-1]["content"]) for b in sent] == [(GEMMA, True, PROMPT)]
    samples = page.evaluate("window.__replySamples")
    growing = [s for s in samples if s["streaming"] and s["len"] > 0]
    lengths = [s["len"] for s in growing]
    assert len(set(lengths)) >= MIN_GROWTH_STEPS, f"the reply did not stream: {samples[:10]}"
    assert lengths == sorted(lengths), "the reply text shrank while streaming"
    assert growing[-1]["t"] > growing[0]["t"]
    final = done.locator(".bubble-text").inner_text()
    assert len(final) >= max(lengths) and not page.locator(".bubble-error").count()
    expect(page.locator("#chat-stats")).to_contain_text(GEMMA)
    # The dashboard with all three nodes and a conversation: laptop (light and dark) and phone.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(ARTIFACTS / "dashboard-dark.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)


def test_a_killed_node_leaves_the_page_within_5s_without_reload(page, mesh: dict[str, RunningNode]) -> None:  # type: ignore[no-untyped-def]
    b_id = mesh["b"].status().node_id
    drawn = page.locator(f'#topology g.node[data-node-id="{b_id}"]')
    expect(drawn).to_have_count(1)
    page.evaluate("window.__sameDocument = true")
    mesh["b"].kill_hard()
    killed_at = time.monotonic()
    expect(drawn).to_have_count(0, timeout=NODE_GONE_DEADLINE_MS)
    gone_after_s = time.monotonic() - killed_at
    expect(page.locator(f'#node-list li[data-node-id="{b_id}"]')).to_have_count(0)
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
    assert gone_after_s <= NODE_GONE_DEADLINE_MS / 1000
    mesh.pop("b")


def test_node_down_shows_a_banner(page, mesh: dict[str, RunningNode]) -> None:  # type: ignore[no-untyped-def]
    expect(page.locator("#banner")).to_be_hidden()
    mesh["a"].kill_hard()
    expect(page.locator("#banner")).to_be_visible(timeout=BANNER_TIMEOUT_MS)
    expect(page.locator("#conn")).to_have_text("offline")
    mesh.pop("a")
