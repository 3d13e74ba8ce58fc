"""argparse that speaks in one line: a user mistake is `mesh-llm: <what is wrong>` and exit code 2."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from services.gateway.host_check import host_pattern
from services.node.config import API_KEY_ENV, InvalidApiKey, check_api_key
from services.runner.speculation import SpeculationError, parse_mode

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


def allowed_host(text: str) -> str:
    """--allow-host: a DNS name, an IP address, or `*.` and a domain (every name under it)."""
    name = host_pattern(text)
    if name is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a host name, IP address or *.domain")
    return name


def positive_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _whole_number(
    text: str, low: int, high: int | None, out_of_range: str, unit: str = "whole number"
) -> int:
    """An argparse value between `low` and `high` (None: no upper bound), else a one-line error."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {unit}") from exc
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(out_of_range)
    return value


def context_tokens(text: str) -> int:
    """--ctx-size: a whole number of tokens, 0 for automatic."""
    return _whole_number(text, 0, None, "must be 0 (automatic) or more tokens", "number of tokens")


# llama.cpp's LLAMA_MAX_SEQ (services/runner/slots.py MAX_SLOTS): the most sequences one context holds.
MAX_PARALLEL_SLOTS = 256


def parallel_slots(text: str) -> int:
    """--parallel: requests each llama-server decodes at once, 0 for automatic."""
    return _whole_number(text, 0, MAX_PARALLEL_SLOTS, f"must be 0 (automatic) to {MAX_PARALLEL_SLOTS}")


def max_output_tokens(text: str) -> int:
    """--max-output-tokens: the cap for a request that names none, 0 for none."""
    return _whole_number(text, 0, None, "must be 0 (no cap) or more tokens")


# No machine llama.cpp runs on has more cores than this; a bigger number is a typo.
MAX_THREADS = 1024


def thread_count(text: str) -> int:
    """--threads: llama.cpp threads per process, 0 for one per physical core."""
    return _whole_number(text, 0, MAX_THREADS, f"must be 0 (one per physical core) to {MAX_THREADS}")


def speculation_mode(text: str) -> str:
    """--speculation: auto, draft, ngram or off."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must be one of auto, draft, ngram, off")
    try:
        return parse_mode(text).value
    except SpeculationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


class ApiKeyChoiceError(Exception):
    """The API key flags, their file or the environment do not give one usable key."""


def add_api_key_arguments(parser: argparse.ArgumentParser) -> None:
    keys = parser.add_mutually_exclusive_group()  # two of them: argparse's one-line error, exit 2
    keys.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"clients must send this key (Authorization: Bearer KEY or x-api-key); also ${API_KEY_ENV}",
    )
    keys.add_argument(
        "--api-key-file", type=Path, metavar="PATH", help="the same, read from a file (kept out of `ps`)"
    )
    keys.add_argument(
        "--no-api-key",
        action="store_true",
        help="with --listen-all, serve the API to other machines without a key",
    )


def api_key_from_args(
    api_key: str | None, key_file: Path | None, no_api_key: bool, environ: Mapping[str, str]
) -> str | None:
    """The key the node will require, None for none; raises ApiKeyChoiceError (one line for the user).
    A flag wins over the environment; an empty environment variable counts as unset."""
    if key_file is not None:
        try:
            text = key_file.expanduser().read_text()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not a text file"
            raise ApiKeyChoiceError(f"--api-key-file {key_file}: cannot read it ({why})") from exc
        return _checked(text.strip(), f"--api-key-file {key_file}")
    if api_key is not None:
        return _checked(api_key, "--api-key")
    from_environment = environ.get(API_KEY_ENV, "")
    if not from_environment:
        return None
    if no_api_key:
        raise ApiKeyChoiceError(f"--no-api-key, but {API_KEY_ENV} is set: unset it or drop --no-api-key")
    return _checked(from_environment.strip(), API_KEY_ENV)


def _checked(key: str, source: str) -> str:
    try:
        return check_api_key(key)
    except InvalidApiKey as exc:
        raise ApiKeyChoiceError(f"{source}: {exc}") from exc
