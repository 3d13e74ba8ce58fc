"""`python -m services.runner --home DIR`: the node's llama.cpp process supervisor."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from services.node.config import ConfigError, NodeConfig
from services.node.fd_limit import raise_open_files_limit
from services.node.home import default_home
from services.node.logs import configure_logging
from services.runner.app import SERVICE_NAME, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.runner", description=__doc__)
    parser.add_argument("--home", type=Path, default=None, help="node home dir (default: ~/.mesh-llm)")
    args = parser.parse_args(argv)
    home = (args.home or default_home()).expanduser()
    try:
        cfg = NodeConfig.load(home)
    except ConfigError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return 2
    configure_logging(SERVICE_NAME, cfg.log_format, cfg.log_level)
    raise_open_files_limit()  # for itself and the llama-servers it starts (they inherit it)
    asyncio.run(run(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
