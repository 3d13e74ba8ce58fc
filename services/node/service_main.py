"""The shared `__main__` of every service: parse --home, load node.toml, set up logs, run."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from services.node.config import ConfigError, NodeConfig
from services.node.home import default_home
from services.node.logs import configure_logging


def service_main(service: str, run: Callable[[NodeConfig], Coroutine[Any, Any, None]]) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m services.{service}")
    parser.add_argument("--home", type=Path, default=default_home())
    args = parser.parse_args()
    try:
        config = NodeConfig.load(args.home)
    except ConfigError as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging(service, config.log_format, config.log_level)
    asyncio.run(run(config))
