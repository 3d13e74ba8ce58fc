"""Two machines on one LAN, the headline flow with no extra flags (issue 12): `mesh-llm --model X` on
one, `mesh-llm --join <token>` on the other. Each node runs in its own network namespace with its
own address on a bridge, so nothing here can pass through a shared loopback."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from services.mesh.addresses import is_loopback
from tests.support.netns import Testbed
from tests.support.netns_mesh import (
    launch,
    listed_models,
    meshctl,
    model_copy,
    token_of,
    wait_answers,
    wait_path,
)
from tests.support.node import RunningNode

pytestmark = pytest.mark.integration


def test_the_second_machine_joins_with_only_the_token(
    testbed: Testbed, nodes: list[RunningNode], tmp_path: Path, tiny_gguf: Path
) -> None:
    lan = testbed.lan("lan")
    one, two = testbed.host("one"), testbed.host("two")
    ip_one = one.attach(lan, "10.77.1.1/24")
    two.attach(lan, "10.77.1.2/24")
    model = model_copy(tiny_gguf, tmp_path, "tiny-lan")

    first = launch(nodes, one, tmp_path, "one", ["--model", str(model)])
    token = token_of(first)
    assert any(a.startswith(f"{ip_one}:") for a in token.addresses), token.addresses
    assert not any(is_loopback(a) for a in token.addresses), "loopback only as a last resort"
    assert f"{ip_one}:" in first.cli_output()  # the ready screen says where others can reach it
    assert "warning" not in first.cli_output()

    second = launch(nodes, two, tmp_path, "two", ["--join", first.invite()])
    wait_path(second, first, "direct")
    wait_path(first, second, "direct")
    wait_answers(second, "tiny-lan")
    assert "tiny-lan" in listed_models(second)
    assert "direct" in meshctl(second, "peers")


def test_the_api_and_console_stay_on_loopback_while_the_mesh_port_is_open(
    testbed: Testbed, nodes: list[RunningNode], tmp_path: Path, tiny_gguf: Path
) -> None:
    lan = testbed.lan("lan")
    one, two = testbed.host("one"), testbed.host("two")
    ip_one = one.attach(lan, "10.77.2.1/24")
    two.attach(lan, "10.77.2.2/24")
    first = launch(nodes, one, tmp_path, "one", ["--model", str(model_copy(tiny_gguf, tmp_path, "tiny-sec"))])
    assert first.http("GET", f"http://127.0.0.1:{first.api_port}/v1/models", timeout=5).status_code == 200
    for port in (first.api_port, first.console_port):
        with pytest.raises(httpx.ConnectError):
            two.http("GET", f"http://{ip_one}:{port}/", timeout=3)


def test_a_machine_without_network_warns_that_its_token_only_works_here(
    testbed: Testbed, nodes: list[RunningNode], tmp_path: Path, tiny_gguf: Path
) -> None:
    lone = testbed.host("lone")  # loopback only
    node = launch(
        nodes, lone, tmp_path, "lone", ["--model", str(model_copy(tiny_gguf, tmp_path, "tiny-lone"))]
    )
    assert all(is_loopback(a) for a in token_of(node).addresses)
    output = node.cli_output()
    assert "warning" in output and "only loopback" in output, output
