"""The pure usage translation, on the SDK's own types (no runtime, no HTTP)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from anthropic.types import Message, MessageDeltaUsage, RawMessageDeltaEvent, RawMessageStartEvent
from anthropic.types import Usage as AnthropicUsage
from anthropic.types.beta import BetaMessage
from paygentic_costs_anthropic._extract import StreamAccumulator, message_info, normalise, service_tier_of

from paygentic_costs.instrumentation import Usage

FIXTURES = Path(__file__).parent / "fixtures"


def _message(name: str) -> Message:
    return Message.model_validate(json.loads((FIXTURES / name).read_text()))


def _events(name: str) -> list[object]:
    """The message_start / message_delta events of an SSE fixture, as SDK types."""
    events: list[object] = []
    for block in (FIXTURES / name).read_text().split("\n\n"):
        data = next((line[6:] for line in block.splitlines() if line.startswith("data: ")), None)
        if data is None:
            continue
        payload = json.loads(data)
        if payload["type"] == "message_start":
            events.append(RawMessageStartEvent.model_validate(payload))
        elif payload["type"] == "message_delta":
            events.append(RawMessageDeltaEvent.model_validate(payload))
    return events


def test_cache_tokens_are_moved_inside_input() -> None:
    info = message_info(_message("messages.json"))
    assert info.usage == Usage(input_tokens=12 + 2051, output_tokens=12, cache_write_tokens=2051)
    assert info.model == "claude-sonnet-4-5-20250929"
    assert info.request_id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert info.service_tier == "standard"


def test_reads_and_both_write_ttls_are_separate_buckets() -> None:
    usage = normalise(_message("messages_cache_mix.json").usage)
    assert usage == Usage(input_tokens=1000 + 200 + 300, output_tokens=100, cache_read_tokens=200,
                          cache_write_tokens=200, cache_write_1h_tokens=100)


def test_writes_without_ttl_breakdown_count_as_five_minute_writes() -> None:
    usage = AnthropicUsage(input_tokens=10, output_tokens=5, cache_creation_input_tokens=40, cache_read_input_tokens=7)
    assert normalise(usage) == Usage(input_tokens=57, output_tokens=5, cache_read_tokens=7, cache_write_tokens=40)


def test_web_search_requests_are_counted() -> None:
    usage = normalise(_message("messages_web_search.json").usage)
    assert usage == Usage(input_tokens=6039, output_tokens=931, web_search_requests=1)


def test_beta_message_and_raw_json_give_the_same_result() -> None:
    body = json.loads((FIXTURES / "messages_cache_mix.json").read_text())
    expected = message_info(_message("messages_cache_mix.json"))
    assert message_info(BetaMessage.model_validate(body)) == expected
    assert message_info(body) == expected


def test_nothing_reported_is_none() -> None:
    assert normalise(None) is None
    assert normalise({}) is None
    assert message_info({"id": "msg_1", "model": "m"}).usage is None


def test_service_tier() -> None:
    assert service_tier_of(AnthropicUsage(input_tokens=1, output_tokens=1, service_tier="batch")) == "batch"
    assert service_tier_of(MessageDeltaUsage(output_tokens=1)) is None


def test_stream_usage_is_message_start_overwritten_by_the_last_delta() -> None:
    accumulator = StreamAccumulator()
    for event in _events("messages_stream_server_tools.sse"):
        accumulator.add(event)
    info = accumulator.result()
    # Deltas are running totals: 100 output tokens and 2 searches, not 1 + 50 + 100 and 1 + 2.
    assert info.usage == Usage(input_tokens=1500, output_tokens=100, cache_read_tokens=200, cache_write_tokens=200,
                               cache_write_1h_tokens=100, web_search_requests=2)
    assert info.service_tier == "standard"  # only message_start carries it
    assert info.request_id == "msg_01StreamTools000000000000"


def test_stream_stopped_after_message_start_keeps_input_usage() -> None:
    accumulator = StreamAccumulator()
    accumulator.add(_events("messages_stream.sse")[0])
    assert accumulator.result().usage == Usage(input_tokens=2063, output_tokens=1, cache_write_tokens=2051)


def test_stream_without_usage_events() -> None:
    accumulator = StreamAccumulator()
    accumulator.add({"type": "ping"})
    assert not accumulator.seen_usage
    assert accumulator.result().usage is None


@pytest.mark.parametrize("delta_written", [2051, 1000])
def test_one_hour_part_never_exceeds_the_updated_total(delta_written: int) -> None:
    accumulator = StreamAccumulator()
    accumulator.add({"type": "message_start", "message": {"id": "msg_x", "model": "m", "usage": {
        "input_tokens": 1, "output_tokens": 1, "cache_creation_input_tokens": 2051,
        "cache_creation": {"ephemeral_5m_input_tokens": 51, "ephemeral_1h_input_tokens": 2000}}}})
    accumulator.add({"type": "message_delta",
                     "usage": {"output_tokens": 3, "cache_creation_input_tokens": delta_written}})
    usage = accumulator.result().usage
    assert usage is not None
    assert usage.cache_write_1h_tokens == min(2000, delta_written)
    assert (usage.cache_write_tokens or 0) + (usage.cache_write_1h_tokens or 0) == delta_written
    assert usage.input_tokens == 1 + delta_written
