"""deploy/node.conf as supervisord reads it: every service log and its own rotate at the node's limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from supervisor.options import ServerOptions

from services.cli.node_process import NODE_CONF, supervisord_env
from services.node.config import NodeConfig
from services.node.log_limits import LOG_BACKUPS_ENV, LOG_FILE_BACKUPS, LOG_FILE_MAX_BYTES, LOG_MAX_BYTES_ENV

SERVICES = {"mesh", "gossip", "runner", "placement", "gateway", "discovery"}


def _parsed(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ServerOptions:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    options = ServerOptions()  # reads the environment here, as supervisord does at start
    options.realize(args=["-c", str(NODE_CONF)])
    return options


def _limits(options: ServerOptions) -> set[tuple[str, int, int]]:
    programs = [p for group in options.process_group_configs for p in group.process_configs]
    assert {p.name for p in programs} == SERVICES
    found = {(p.name, p.stdout_logfile_maxbytes, p.stdout_logfile_backups) for p in programs}
    return {("supervisord", options.logfile_maxbytes, options.logfile_backups), *found}


@pytest.mark.parametrize(
    ("given", "max_bytes", "backups"),
    [
        ({}, LOG_FILE_MAX_BYTES, LOG_FILE_BACKUPS),
        ({LOG_MAX_BYTES_ENV: "4096", LOG_BACKUPS_ENV: "5"}, 4096, 5),
    ],
)
def test_every_log_file_rotates_by_size(
    given: dict[str, str], max_bytes: int, backups: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (LOG_MAX_BYTES_ENV, LOG_BACKUPS_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "logs").mkdir()
    (tmp_path / "run").mkdir()
    options = _parsed(supervisord_env(NodeConfig(home=tmp_path)), monkeypatch)
    assert {(limit, count) for _, limit, count in _limits(options)} == {(max_bytes, backups)}
