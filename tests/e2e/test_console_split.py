"""The console shows a model split across nodes: who hosts, who works, and each one's share
(Debian chromium driven by Playwright, against two real nodes splitting a tiny GGUF)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.node import RunningNode
from tests.support.split import plan_text, split_mesh
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.integration

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -e .[dev] brings playwright")
expect = playwright_api.expect

CHROMIUM_PATH = Path(os.environ.get("MESH_LLM_CHROMIUM", "/usr/bin/chromium"))
MODEL = "tiny-split-console"
PAGE_TIMEOUT_MS = 15_000
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RunningNode]]:
    root = tmp_path_factory.mktemp("console-split")
    model = write_tiny_llama_gguf(root / f"{MODEL}.gguf", n_layers=8, seed=3)
    nodes: list[RunningNode] = []
    try:
        split_mesh(root, model, 2, 0.6, nodes)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def test_the_models_card_shows_the_split_with_host_and_shares(pair: list[RunningNode]) -> None:
    if not CHROMIUM_PATH.exists():
        pytest.fail(f"{CHROMIUM_PATH} not found: install Debian's chromium (apt-get install chromium)")
    [host] = [n for n in pair if "split_host" in plan_text(n)]
    [worker] = [n for n in pair if n is not host]
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM_PATH), headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{worker.console_port}/")
            item = page.locator(f'.model-item[data-model="{MODEL}"]')
            expect(item).to_have_attribute("data-state", "ready", timeout=PAGE_TIMEOUT_MS)
            # Equal memory, equal shares: the host listed first, both at 50 %.
            host_name, worker_name = host.home.name, worker.home.name
            expected = f"split: {host_name} (host) 50% + {worker_name} 50%"
            expect(item.locator(".model-meta")).to_contain_text(expected, timeout=PAGE_TIMEOUT_MS)
            expect(item.locator(".model-meta")).to_contain_text("here: split worker")
            ARTIFACTS.mkdir(exist_ok=True)
            page.set_viewport_size({"width": 1440, "height": 900})
            page.screenshot(path=str(ARTIFACTS / "split.png"), full_page=True)
        finally:
            browser.close()
