"""Request counters the proxy bumps (services/gateway/metrics_requests.py)."""

from __future__ import annotations

from services.gateway.metrics_requests import (
    TAIL_CHUNKS,
    TTFT_BUCKETS_S,
    USAGE_TAIL_BYTES,
    Histogram,
    RequestKey,
    RequestMetrics,
    Served,
    Usage,
    parse_usage,
)

# What llama-server sends as the last event of a stream (captured from the pinned build).
LAST_EVENT = (
    b'data: {"choices":[{"finish_reason":"length","index":0,"delta":{}}],"object":"chat.completion.chunk",'
    b'"timings":{"cache_n":3,"prompt_n":28,"prompt_ms":386.4,"predicted_n":5,"predicted_ms":99.2,'
    b'"predicted_per_second":40.28}}\n\ndata: [DONE]\n\n'
)
NON_STREAM_BODY = (
    b'{"choices":[{"message":{"role":"assistant","content":"Hello"}}],"usage":{"completion_tokens":5,'
    b'"prompt_tokens":31,"total_tokens":36,"prompt_tokens_details":{"cached_tokens":30}},'
    b'"timings":{"cache_n":30,"prompt_n":1,"predicted_n":5,"predicted_per_second":39.5}}'
)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_timings_give_prompt_tokens_with_cached_ones_and_decode_speed() -> None:
    assert parse_usage(LAST_EVENT) == Usage(31, 5, 40.28)
    assert parse_usage(NON_STREAM_BODY) == Usage(31, 5, 39.5)


def test_usage_counters_when_there_are_no_timings() -> None:
    anthropic = b'"usage":{"input_tokens":12,"output_tokens":1}...' + b'"usage":{"output_tokens":7}'
    assert parse_usage(anthropic) == Usage(12, 7)
    assert parse_usage(b'{"usage":{"prompt_tokens":4,"completion_tokens":2}}') == Usage(4, 2)
    assert parse_usage(b"data: [DONE]") is None


def test_a_stream_records_status_ttft_tokens_and_speed() -> None:
    clock = FakeClock()
    metrics = RequestMetrics(clock=clock)
    observation = metrics.begin("gemma", "/v1/chat/completions", Served.HERE)
    assert metrics.in_flight == 1
    observation.response(200)
    clock.now_s += 0.3
    observation.chunk(b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n')
    clock.now_s += 1.0
    observation.chunk(LAST_EVENT[:60])  # the event split across two reads
    observation.chunk(LAST_EVENT[60:])
    observation.finish()
    observation.finish()  # idempotent
    assert metrics.in_flight == 0
    assert metrics.requests == {RequestKey("gemma", "/v1/chat/completions", 200, Served.HERE): 1}
    traffic = metrics.traffic["gemma"]
    assert (traffic.tokens_in, traffic.tokens_out) == (31, 5)
    assert traffic.ttft.count == 1 and abs(traffic.ttft.total - 0.3) < 1e-9
    assert traffic.decode.count == 1 and traffic.decode.total == 40.28


def test_a_whole_body_counts_tokens_but_no_ttft() -> None:
    metrics = RequestMetrics(clock=FakeClock())
    observation = metrics.begin("gemma", "/v1/chat/completions", Served.FORWARDED)
    observation.response(200)
    observation.body(NON_STREAM_BODY)
    observation.finish()
    traffic = metrics.traffic["gemma"]
    assert traffic.tokens_out == 5 and traffic.ttft.count == 0


def test_an_unreachable_upstream_is_counted_as_its_status_without_tokens() -> None:
    metrics = RequestMetrics(clock=FakeClock())
    observation = metrics.begin("gemma", "/v1/completions", Served.HERE)
    observation.response(503)
    observation.finish()
    assert metrics.requests == {RequestKey("gemma", "/v1/completions", 503, Served.HERE): 1}
    assert metrics.traffic["gemma"].tokens_in == 0


def test_decode_speed_from_usage_and_time_when_llama_server_gives_none() -> None:
    clock = FakeClock()
    metrics = RequestMetrics(clock=clock)
    observation = metrics.begin("m", "/v1/messages", Served.HERE)
    observation.response(200)
    observation.chunk(b'event: message_start\ndata: {"usage":{"input_tokens":3}}\n\n')
    clock.now_s += 2.0
    observation.chunk(b'data: {"usage":{"output_tokens":11}}\n\n')
    observation.finish()
    assert metrics.traffic["m"].decode.total == 5.0  # 10 tokens after the first, in 2 s


def test_the_kept_tail_is_bounded_and_keeps_a_long_streams_first_chunk() -> None:
    metrics = RequestMetrics(clock=FakeClock())
    observation = metrics.begin("m", "/v1/messages", Served.HERE)
    observation.response(200)
    observation.chunk(b'data: {"usage":{"input_tokens":9}}\n\n')
    for _ in range(TAIL_CHUNKS * 3):
        observation.chunk(b"y" * USAGE_TAIL_BYTES)
    observation.chunk(b'data: {"usage":{"output_tokens":4}}\n\n')
    assert len(observation.tail()) < 2 * USAGE_TAIL_BYTES
    observation.finish()
    assert (metrics.traffic["m"].tokens_in, metrics.traffic["m"].tokens_out) == (9, 4)


def test_histogram_buckets_hold_values_up_to_their_bound() -> None:
    histogram = Histogram(TTFT_BUCKETS_S)
    histogram.observe(TTFT_BUCKETS_S[0])
    histogram.observe(1000.0)
    assert histogram.counts[0] == 1 and histogram.counts[-1] == 1 and histogram.count == 2
