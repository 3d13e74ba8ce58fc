"""Sanity limits on a NodeRecord, checked on every record a peer sends and on our own before it leaves.

A record fans out to every node, so one oversized or poisoned record (NaN rates, megabyte names) would
cost the whole mesh; rejecting it at the edge keeps a bad peer's damage to its own message.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping

from services.gossip.items import MAX_VERSION
from services.proto.meshllm.gossip.v1 import gossip_pb2

MAX_RECORD_BYTES = 64 * 1024  # several fit one gossip message (MAX_GOSSIP_MESSAGE_BYTES)
MAX_NODE_ID_CHARS = 64
MAX_TEXT_CHARS = 256  # names, versions, regions, model names, addresses, hashes
MAX_PATH_CHARS = 4096
MAX_ADDRESSES_PER_RECORD = 16
MAX_MODELS_PER_RECORD = 256  # each of: on disk, wanted, served
MAX_SHARES_PER_MODEL = 64
MAX_MAP_ENTRIES_PER_RECORD = 1024  # request rates by model, RTT by peer (~45 B per RTT entry)
# The gateway's metrics summary: request counts by model x endpoint x status, tunnels, processes.
MAX_METRICS_ENTRIES = 256
MAX_HISTOGRAM_BUCKETS = 32


class InvalidRecord(ValueError):
    """A NodeRecord breaks a sanity limit; the message says which."""


def check_node_id(node_id: str) -> None:
    if not node_id or len(node_id) > MAX_NODE_ID_CHARS:
        raise InvalidRecord(f"node id must be 1..{MAX_NODE_ID_CHARS} characters")


def check_version(version: int) -> None:
    if not 1 <= version <= MAX_VERSION:
        raise InvalidRecord(f"version {version} out of range")


def check_record(record: gossip_pb2.NodeRecord) -> None:
    """Raise InvalidRecord if `record` is too big, malformed or carries non-finite numbers."""
    # Every record a peer sends passes here (thousands a second at 1,000 nodes): checks run as
    # builtins over whole fields rather than a Python call per element.
    if record.ByteSize() > MAX_RECORD_BYTES:
        raise InvalidRecord(f"record is over {MAX_RECORD_BYTES} bytes")
    check_node_id(record.node_id)
    check_version(record.version)
    if record.vram_bytes < 0:
        raise InvalidRecord("vram_bytes is negative")
    if not math.isfinite(record.updated_unix_s):
        raise InvalidRecord("updated_unix_s is not a finite number")
    _check_count(record.addresses, MAX_ADDRESSES_PER_RECORD, "addresses")
    _check_count(record.models_wanted, MAX_MODELS_PER_RECORD, "models_wanted")
    _check_count(record.models_on_disk, MAX_MODELS_PER_RECORD, "models_on_disk")
    _check_count(record.served, MAX_MODELS_PER_RECORD, "served models")
    texts = [record.name, record.software_version, record.region, *record.addresses, *record.models_wanted]
    for model in record.models_on_disk:
        texts += (model.name, model.sha256)
        _check_texts((model.path,), "model path", MAX_PATH_CHARS)
        if model.bytes < 0:
            raise InvalidRecord("model file size is negative")
    _check_texts(texts, "text field")
    _check_served(record.served)
    _check_number_map(record.request_rate_per_min, "request_rate_per_min")
    _check_number_map(record.rtt_ms, "rtt_ms")
    _check_pool(record)
    _check_metrics(record.metrics)


def _check_metrics(summary: gossip_pb2.MetricsSummary) -> None:
    """The gateway's counters: entry counts, text sizes, finite histogram sums."""
    lists = (
        summary.requests,
        summary.models,
        summary.tunnels,
        summary.restarts,
        summary.pool_events,
        summary.gossip,
    )
    for entries in lists:
        _check_count(entries, MAX_METRICS_ENTRIES, "metrics entries")
    texts = [r.model for r in summary.requests] + [r.endpoint for r in summary.requests]
    texts += [m.model for m in summary.models] + [t.model for t in summary.tunnels]
    texts += [t.peer_node_id for t in summary.tunnels] + [p.kind for p in summary.pool_events]
    texts += [r.service for r in summary.restarts] + [r.process for r in summary.restarts]
    texts += [g.kind for g in summary.gossip]
    _check_texts(texts, "metrics text field")
    for model in summary.models:
        for histogram in (model.ttft_seconds, model.decode_tokens_per_second):
            _check_count(histogram.counts, MAX_HISTOGRAM_BUCKETS, "histogram buckets")
            if not (math.isfinite(histogram.sum) and histogram.sum >= 0.0):
                raise InvalidRecord("histogram sum must be finite and non-negative")


def _check_pool(record: gossip_pb2.NodeRecord) -> None:
    """Adoptions, models seen served and file transfers: counts, text sizes, finite numbers."""
    _check_count(record.adopted, MAX_MODELS_PER_RECORD, "adopted models")
    _check_count(record.models_seen, MAX_MODELS_PER_RECORD, "models seen")
    _check_count(record.fetching, MAX_MODELS_PER_RECORD, "file transfers")
    texts = [a.model for a in record.adopted] + [m.name for m in record.models_seen]
    texts += [m.sha256 for m in record.models_seen] + [f.name for f in record.fetching]
    texts += [f.sha256 for f in record.fetching] + [f.error for f in record.fetching]
    _check_texts(texts, "pool text field")
    _check_texts([a.reason for a in record.adopted], "adoption reason", MAX_PATH_CHARS)
    numbers = [a.since_unix_s for a in record.adopted] + [m.last_served_unix_s for m in record.models_seen]
    numbers += [f.bytes_per_s for f in record.fetching]
    if numbers and not (all(map(math.isfinite, numbers)) and min(numbers) >= 0.0):
        raise InvalidRecord("pool times and rates must be finite and non-negative")
    sizes = [m.bytes for m in record.models_seen] + [f.bytes_total for f in record.fetching]
    sizes += [f.bytes_done for f in record.fetching]
    if sizes and min(sizes) < 0:
        raise InvalidRecord("pool byte counts must be non-negative")
    for transfer in record.fetching:
        _check_count(transfer.source_node_ids, MAX_ADDRESSES_PER_RECORD, "transfer sources")
        _check_texts(transfer.source_node_ids, "transfer source", MAX_NODE_ID_CHARS)


def _check_count(values: Collection[object], limit: int, what: str) -> None:
    if len(values) > limit:
        raise InvalidRecord(f"more than {limit} {what}")


def _check_texts(values: Iterable[str], what: str, limit: int = MAX_TEXT_CHARS) -> None:
    if max(map(len, values), default=0) > limit:
        raise InvalidRecord(f"{what} longer than {limit} characters")


def _check_served(served: Iterable[gossip_pb2.ServedModel]) -> None:
    for model in served:
        _check_texts((model.name,), "served model name")
        _check_texts((model.speculation,), "served model speculation")
        _check_texts((model.host_node_id,), "host node id", MAX_NODE_ID_CHARS)
        if model.shares:
            _check_count(model.shares, MAX_SHARES_PER_MODEL, "layer shares")
            _check_texts([share.node_id for share in model.shares], "share node id", MAX_NODE_ID_CHARS)
            if not all(0.0 <= share.fraction <= 1.0 for share in model.shares):  # also false for NaN
                raise InvalidRecord("layer share fraction outside 0..1")


def _check_number_map(values: Mapping[str, float], what: str) -> None:
    if len(values) > MAX_MAP_ENTRIES_PER_RECORD:
        raise InvalidRecord(f"{what} has more than {MAX_MAP_ENTRIES_PER_RECORD} entries")
    plain = dict(values)  # one pass out of the protobuf container; the builtins below run on a dict
    _check_texts(plain.keys(), f"{what} key")
    numbers = plain.values()
    if numbers and not (all(map(math.isfinite, numbers)) and min(numbers) >= 0.0):
        raise InvalidRecord(f"{what} values must be finite and non-negative")
