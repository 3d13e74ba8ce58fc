"""Fixtures of the network-namespace tests: a fresh test bed per test, and the nodes a test started
(stopped together at the end, whatever happened)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.netns import netns_testbed
from tests.support.netns_mesh import stop_all
from tests.support.node import RunningNode

testbed = pytest.fixture(netns_testbed, name="testbed")


@pytest.fixture
def nodes() -> Iterator[list[RunningNode]]:
    started: list[RunningNode] = []
    yield started
    stop_all(started)
