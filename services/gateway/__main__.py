"""`python -m services.gateway --home DIR`: the node's OpenAI API, console and admin socket."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.gateway.app import PortUnavailable, run_gateway
from services.node.config import ConfigError, NodeConfig
from services.node.home import default_home
from services.node.logs import configure_logging
from services.node.service_main import run_event_loop

EXIT_CONFIG_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.gateway", description=__doc__)
    parser.add_argument(
        "--home", type=Path, default=default_home(), help="node home dir (default %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        config = NodeConfig.load(args.home)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    logger = configure_logging("gateway", config.log_format, config.log_level)
    try:
        run_event_loop(run_gateway(config, logger))
    except PortUnavailable as exc:
        logger.error("cannot listen: %s (choose another with --port / --console-port)", exc)
        return EXIT_CONFIG_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
