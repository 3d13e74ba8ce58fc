"""llama.cpp's own log lines as structured entries (sans-IO; services/runner/process_log.py writes them)."""

from __future__ import annotations

import re

# llama.cpp's own log lines (common/log.cpp with timestamps and prefixes, as llama-server writes them):
#   "0.00.604.047 I slot print_timing: id  3 | task 0 | prompt eval time = 1.48 ms / 25 tokens (...)"
# minutes.seconds.milliseconds.microseconds since start, a level letter, the module, the function
# (cut to 12 characters), the message.
LLAMA_LEVELS = {"D": "debug", "I": "info", "N": "info", "W": "warning", "E": "error"}
_LLAMA_LINE_RE = re.compile(
    r"^(?P<min>\d+)\.(?P<sec>\d{2})\.(?P<ms>\d{3})\.(?P<us>\d{3}) (?P<level>[A-Z]) (?P<rest>.*)$"
)
# After the level: the server's "srv    load_model: ..."; a library's own line has no module tag
# ("E llama_model_load: error loading model: ...") and keeps its level: its function names the part.
_LLAMA_SOURCE_RE = re.compile(r"^(?:(?P<module>[a-z]{2,4})\s+)?(?P<function>[^\s:]+): (?P<msg>.*)$")
_SLOT_RE = re.compile(r"^id\s+(?P<slot>-?\d+) \| task (?P<task>-?\d+) \| (?P<rest>.*)$")
_TIMING_RE = re.compile(
    r"^\s*(?P<what>prompt eval|eval|total) time =\s*(?P<ms>[\d.]+) ms /\s*(?P<tokens>\d+) tokens"
    r"(?: \(\s*[\d.]+ ms per token,\s*(?P<tps>[\d.]+) tokens per second\))?"
)
_TIMING_PREFIX = {"prompt eval": "prompt", "eval": "eval", "total": "total"}
LLAMA_SERVICE = "llama-server"


def parse_llama_line(line: str, logger_name: str, now_s: float) -> dict[str, object]:
    """One line of a llama.cpp process as a JSON log entry (the shape JsonFormatter writes).

    Sans-IO. Timings become numbers (`eval_tokens_per_s`, `prompt_tokens`, ...), slot lines carry
    `slot` and `task`; a line that is not in llama.cpp's format (ggml's own prints, our run header)
    is kept whole as the message.
    """
    entry: dict[str, object] = {"ts": round(now_s, 3), "level": "info", "service": LLAMA_SERVICE}
    entry["logger"] = logger_name
    match = _LLAMA_LINE_RE.match(line)
    if match is None:
        entry["msg"] = line
        return entry
    elapsed = int(match["min"]) * 60 + int(match["sec"]) + int(match["ms"]) / 1e3 + int(match["us"]) / 1e6
    entry["level"] = LLAMA_LEVELS.get(match["level"], "info")
    entry["elapsed_s"] = round(elapsed, 6)
    source = _LLAMA_SOURCE_RE.match(match["rest"])
    if source is None:
        entry["msg"] = match["rest"].strip()
        return entry
    function = source["function"]
    entry.update(module=source["module"] or function.split("_")[0], function=function)
    msg = source["msg"]
    slot = _SLOT_RE.match(msg)
    if slot is not None:
        entry.update(slot=int(slot["slot"]), task=int(slot["task"]))
        msg = slot["rest"]
        timing = _TIMING_RE.match(msg)
        if timing is not None:
            prefix = _TIMING_PREFIX[timing["what"]]
            entry[f"{prefix}_ms"] = float(timing["ms"])
            entry[f"{prefix}_tokens"] = int(timing["tokens"])
            if timing["tps"] is not None:
                entry[f"{prefix}_tokens_per_s"] = float(timing["tps"])
    entry["msg"] = msg.strip()
    return entry
