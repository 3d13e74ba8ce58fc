"""After the ready screen: one line per promotion, retirement or transfer step, as they happen.

A standby can stay quiet for days and then take up a model; the terminal that started it should say
so (and how the file is coming along), not only the console.
"""

from __future__ import annotations

import time

from rich.console import Console

from services.cli.node_status import NodeNotRunning, node_plan
from services.node.home import NodeHome
from services.proto.meshllm.placement.v1 import placement_pb2

PROGRESS_LINE_EVERY_S = 5.0


class PoolLines:
    def __init__(self, home: NodeHome, console: Console) -> None:
        self._home = home
        self._console = console
        self._printed_until_s = time.time()  # events before the ready screen are in `meshctl plan`
        self._progress_at: dict[str, float] = {}

    def tick(self) -> None:
        try:
            plan = node_plan(self._home)
        except NodeNotRunning:
            return
        for event in plan.events:
            if event.at_unix_s > self._printed_until_s:
                self._console.print(f"  Pool     {event.kind} {event.model}: {event.reason}", soft_wrap=True)
                self._printed_until_s = event.at_unix_s
        now = time.monotonic()
        for assignment in plan.assignments:
            if assignment.role != placement_pb2.ASSIGNMENT_ROLE_FETCHING or len(assignment.reasons) < 2:
                continue
            if now - self._progress_at.get(assignment.model, 0.0) >= PROGRESS_LINE_EVERY_S:
                self._progress_at[assignment.model] = now
                self._console.print(
                    f"  Fetch    {assignment.model}: {assignment.reasons[-1]}", soft_wrap=True
                )
