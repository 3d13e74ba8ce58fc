"""Structured, quiet-by-default logging for every service (pretty for people, json for machines)."""

from __future__ import annotations

import json
import logging
import sys
import time

from services.node.log_stderr import json_stderr

_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "service": record.name.split(".")[0],
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class PrettyFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS)
        line = f"{stamp} {record.levelname[:4].lower():4} {record.name}: {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(service: str, log_format: str = "pretty", level: str = "info") -> logging.Logger:
    # json: anything printed to stderr around logging becomes JSON too (log_stderr.py).
    handler = logging.StreamHandler(json_stderr(service) if log_format == "json" else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else PrettyFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logger = logging.getLogger(service)
    logger.setLevel(level.upper())
    # Third-party chatter (grpc, uvicorn access lines, aioquic) stays out unless it is a warning.
    for noisy in ("uvicorn.access", "aioquic", "quic", "httpx", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    global _configured_format
    _configured_format = log_format
    return logger


_configured_format = "pretty"


def configured_log_format() -> str:
    """What configure_logging was given: the runner writes llama.cpp's lines the same way."""
    return _configured_format
