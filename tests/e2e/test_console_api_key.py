"""The console of a node started with `--api-key`, in real headless Chromium (issue 13): its built-in
chat still works for the person at the machine, with no key typed in. The page, opened by a
loopback name, carries a console session cookie that only the console's own `/v1` accepts."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.node import RunningNode, free_port
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.integration

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -e .[dev] brings playwright")
expect = playwright_api.expect

# As tests/e2e/test_console_browser.py: Debian's chromium, never a Playwright-downloaded one.
CHROMIUM_PATH = Path(os.environ.get("MESH_LLM_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PAGE_LIVE_TIMEOUT_MS = 15_000
KEY = "sk-console-test-0123456789"
MODEL = "tiny-keyed"
REPLY_TIMEOUT_MS = 60_000
# The chat's own request, as chat.js makes it: a same-origin fetch with no key.
FETCH_CHAT_JS = """async (model) => {
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: {"content-type": "application/json"},
    body: JSON.stringify({model, messages: [{role: "user", content: "hi"}], max_tokens: 4}),
  });
  return response.status;
}"""


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    model = write_tiny_llama_gguf(tmp_path_factory.mktemp("models") / f"{MODEL}.gguf", seed=3)
    root = tmp_path_factory.mktemp("keyed")
    node = RunningNode(root / "keyed", free_port(), free_port(), ["--model", str(model), "--api-key", KEY])
    node.start()
    try:
        node.wait_ready([MODEL])
        yield node
    finally:
        node.stop()


def test_the_chat_of_a_keyed_nodes_console_works_without_the_key(keyed: RunningNode) -> None:
    if not CHROMIUM_PATH.exists():
        pytest.fail(f"{CHROMIUM_PATH} not found: install Debian's chromium (apt-get install chromium)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM_PATH), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.goto(f"http://localhost:{keyed.console_port}/")
            expect(page.locator("#conn")).to_have_text("live", timeout=PAGE_LIVE_TIMEOUT_MS)
            assert page.evaluate(FETCH_CHAT_JS, MODEL) == 200
            page.locator("#chat-input").fill("hello")
            page.locator("#chat-send").click()
            reply = page.locator(".bubble-assistant").last
            expect(reply).not_to_have_class(re.compile(r"\bstreaming\b"), timeout=REPLY_TIMEOUT_MS)
            expect(reply).not_to_have_class(re.compile(r"\bbubble-error\b"))
            expect(reply.locator(".bubble-note")).to_have_count(0)  # no "error: …", no "stopped"
        finally:
            browser.close()
    # The same request from outside the page, without the key or the cookie, is refused.
    refused = httpx.post(
        f"http://127.0.0.1:{keyed.console_port}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert refused.status_code == 401
