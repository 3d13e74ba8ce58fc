"""argparse that speaks in one line: a user mistake is `mesh-llm: <what is wrong>` and exit code 2."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import NoReturn

USAGE_ERROR_EXIT = 2


class OneLineArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(USAGE_ERROR_EXIT)


def fail(prog: str, message: str) -> NoReturn:
    print(f"{prog}: {message}", file=sys.stderr)
    sys.exit(USAGE_ERROR_EXIT)


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from exc
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1-65535)")
    return value


def positive_gb(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of GB") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 GB")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from exc
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def host_port(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return text


def ip_address(text: str) -> str:
    """An IPv4 or IPv6 address of this machine (no name: binding needs an address)."""
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from exc


def positive_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def context_tokens(text: str) -> int:
    """--ctx-size: a whole number of tokens, 0 for automatic."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of tokens") from exc
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (automatic) or more tokens")
    return value
