"""Restarts of the node's services, as supervisord sees them (its XML-RPC on <home>/run/supervisor.sock).

supervisord reports each program's last start time, not a restart count: a restart is a start time
that changed between two reads, so restarts are counted while this gateway runs (several within one
read interval count once). The gateway's own restarts reset its counters anyway, as Prometheus expects
of a restarted process.
"""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from services.gateway.metrics_snapshot import ProcessKey

SUPERVISOR_SERVICE = "supervisord"


class SupervisorUnavailable(Exception):
    """supervisord did not answer (not running, or restarting)."""


def read_process_info(socket_path: Path) -> list[dict[str, Any]]:
    """supervisor.getAllProcessInfo(); blocking, so callers run it in a thread."""
    transport = SupervisorTransport(serverurl=f"unix://{socket_path}")
    proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
    try:
        return list(proxy.supervisor.getAllProcessInfo())  # type: ignore[arg-type]
    except (OSError, xmlrpc.client.Error) as exc:
        raise SupervisorUnavailable(str(exc) or type(exc).__name__) from exc


@dataclass
class ServiceRestartCounter:
    """Counts changes of each program's start time across reads."""

    counts: dict[str, int] = field(default_factory=dict)
    _started: dict[str, int] = field(default_factory=dict)

    def update(self, infos: Iterable[Mapping[str, Any]]) -> None:
        for info in infos:
            name, start = str(info.get("name", "")), int(info.get("start", 0))
            if not name:
                continue
            previous = self._started.get(name)
            self.counts.setdefault(name, 0)
            if previous is not None and start and start != previous:
                self.counts[name] += 1
            self._started[name] = start

    def restarts(self) -> dict[ProcessKey, int]:
        return {ProcessKey(SUPERVISOR_SERVICE, name): count for name, count in self.counts.items()}
