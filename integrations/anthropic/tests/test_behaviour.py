"""Pricing of every bucket, abandoned streams, errors, raw responses, and patch lifecycle."""

from __future__ import annotations

import gc
import importlib.metadata
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest
from paygentic_costs_anthropic import AnthropicInstrumentor

import paygentic_costs as pc
from paygentic_costs.testing import capture

pytestmark = [
    pytest.mark.filterwarnings("ignore:The model 'claude-sonnet-4-5' is deprecated:DeprecationWarning"),
    # Most behaviours do not depend on the transport; the endpoint matrix runs both.
    pytest.mark.parametrize("transport", ["mock_transport"], indirect=True),
]

FIXTURES = Path(__file__).parent / "fixtures"
STREAM_ID = "msg_01Fy1eSWxZ9NnCZ3DbD1Zq8T"


def _costs_of(fn: Any) -> Any:
    with pc.job("j", customer="cus_1"), capture() as costs:
        fn()
    return costs


# -- every bucket at the rate file's price ------------------------------------------------------------------------


def test_cache_read_and_both_write_ttls_are_priced_at_their_own_rates(
    client: anthropic.Anthropic, fake: Any, req: dict[str, Any], instrumented: None
) -> None:
    fake.body = (FIXTURES / "messages_cache_mix.json").read_text()
    costs = _costs_of(lambda: client.messages.create(**req))
    (event,) = costs.events
    # 1000 uncached x $3 + 200 reads x $0.30 + 200 5m writes x $3.75 + 100 1h writes x $6 + 100 out x $15, per 1M.
    assert event.amount == Decimal("0.00591")
    assert {k: event.data[k] for k in ("input_tokens", "cache_read_tokens", "cache_write_tokens",
                                       "cache_write_1h_tokens", "output_tokens")} == {
        "input_tokens": 1500, "cache_read_tokens": 200, "cache_write_tokens": 200, "cache_write_1h_tokens": 100,
        "output_tokens": 100}


def test_web_search_is_priced_per_request(
    client: anthropic.Anthropic, fake: Any, req: dict[str, Any], instrumented: None
) -> None:
    fake.body = (FIXTURES / "messages_web_search.json").read_text()
    (event,) = _costs_of(lambda: client.messages.create(**req)).events
    # 6039 in x $3 + 931 out x $15 per 1M, + 1 search x $0.01.
    assert event.amount == Decimal("0.042082")
    assert event.data["web_search_requests"] == 1


def test_stream_deltas_are_running_totals_not_increments(
    client: anthropic.Anthropic, fake: Any, req: dict[str, Any], instrumented: None
) -> None:
    fake.sse = (FIXTURES / "messages_stream_server_tools.sse").read_text()

    def run() -> None:
        with client.messages.stream(**req) as stream:
            assert stream.get_final_text() == "Searching. Found it."

    (event,) = _costs_of(run).events
    # The cache-mix usage with 100 output tokens (the last delta) and 2 searches: $0.00591 + 2 x $0.01.
    assert event.amount == Decimal("0.02591")
    assert event.data["output_tokens"] == 100
    assert event.data["web_search_requests"] == 2


# -- abandoned streams --------------------------------------------------------------------------------------------


def test_create_stream_abandoned_after_first_event_is_recorded_once(
    client: anthropic.Anthropic, req: dict[str, Any], instrumented: None
) -> None:
    def run() -> None:
        stream = client.messages.create(**req, stream=True)
        for _event in stream:
            break
        del stream
        gc.collect()

    costs = _costs_of(run)
    (event,) = costs.events
    # message_start already carried the exact input and cache tokens, and a provisional output count.
    assert event.data["input_tokens"] == 2063
    assert event.data["output_tokens"] == 1
    assert event.data["request_id"] == STREAM_ID
    gc.collect()
    assert len(costs.events) == 1


def test_stream_helper_abandoned_without_with_is_recorded_once(
    client: anthropic.Anthropic, req: dict[str, Any], instrumented: None
) -> None:
    def run() -> None:
        stream = client.messages.stream(**req).__enter__()
        next(iter(stream.text_stream))
        del stream
        gc.collect()

    (event,) = _costs_of(run).events
    assert event.data["input_tokens"] == 2063


async def test_async_stream_abandoned_is_recorded_once(
    async_client: anthropic.AsyncAnthropic, req: dict[str, Any], instrumented: None
) -> None:
    with pc.job("j", customer="cus_1"), capture() as costs:
        stream = await async_client.messages.create(**req, stream=True)
        async for _event in stream:
            break
        del stream
        gc.collect()
    (event,) = costs.events
    assert event.data["input_tokens"] == 2063


def test_stream_abandoned_before_any_usage_counts_usage_missing(
    client: anthropic.Anthropic, req: dict[str, Any], instrumented: None
) -> None:
    def run() -> None:
        stream = client.messages.create(**req, stream=True)
        stream.close()  # closed before a single event was read
        del stream
        gc.collect()

    assert _costs_of(run).events == []
    assert pc.stats()["usage_missing"] == 1


def test_unread_stream_garbage_collected_counts_usage_missing_once(
    client: anthropic.Anthropic, req: dict[str, Any], instrumented: None
) -> None:
    def run() -> None:
        stream = client.messages.create(**req, stream=True)
        del stream
        gc.collect()

    assert _costs_of(run).events == []
    gc.collect()
    assert pc.stats()["usage_missing"] == 1


# -- the user's world is untouched --------------------------------------------------------------------------------


class Sentinel(BaseException):
    """Not an Exception, so the SDK lets it through untouched: what reaches the caller is exactly what was raised."""


def test_exceptions_reach_the_caller_as_the_same_object(
    client: anthropic.Anthropic, fake: Any, req: dict[str, Any], instrumented: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    raised = Sentinel("from the transport")

    def respond(*_args: Any) -> Any:
        raise raised

    monkeypatch.setattr(fake, "respond", respond)
    with pc.job("j", customer="cus_1"), capture() as costs:
        for call in (lambda: client.messages.create(**req), lambda: client.messages.stream(**req).__enter__(),
                     lambda: client.beta.messages.parse(**req)):
            with pytest.raises(Sentinel) as info:
                call()
            assert info.value is raised
    assert costs.events == []
    assert pc.stats()["usage_missing"] == 0


def test_api_errors_are_unchanged_and_record_nothing(
    client: anthropic.Anthropic, fake: Any, req: dict[str, Any], instrumented: None
) -> None:
    fake.status = 400
    with pc.job("j", customer="cus_1"), capture() as costs, pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(**req)
    assert info.value.status_code == 400
    assert info.value.__cause__ is None
    assert costs.events == []
    assert pc.stats()["usage_missing"] == 0


def test_user_exception_inside_a_stream_propagates_and_the_usage_is_still_recorded(
    client: anthropic.Anthropic, req: dict[str, Any], instrumented: None
) -> None:
    mine = ValueError("raised by the application")
    with pc.job("j", customer="cus_1"), capture() as costs:
        with pytest.raises(ValueError) as info, client.messages.stream(**req) as stream:
            for _text in stream.text_stream:
                raise mine
        assert info.value is mine
    (event,) = costs.events
    assert event.data["input_tokens"] == 2063


def test_return_types_are_the_sdk_types(client: anthropic.Anthropic, req: dict[str, Any], instrumented: None) -> None:
    with pc.job("j", customer="cus_1"), capture():
        assert type(client.messages.create(**req)) is anthropic.types.Message
        stream = client.messages.create(**req, stream=True)
        assert isinstance(stream, anthropic.Stream)
        stream.close()
        with client.messages.stream(**req) as helper:
            assert type(helper) is anthropic.lib.streaming.MessageStream


# -- raw responses ------------------------------------------------------------------------------------------------


def test_with_raw_response_is_recorded(client: anthropic.Anthropic, req: dict[str, Any], instrumented: None) -> None:
    def run() -> None:
        raw = client.messages.with_raw_response.create(**req)
        assert raw.headers["request-id"] == "req_test_1"
        assert raw.parse().usage.output_tokens == 12

    (event,) = _costs_of(run).events
    assert event.data["request_id"] == "msg_01XFDUDYJgAACzvnptvVoYEL"


def test_with_streaming_response_is_recorded_when_parsed(
    client: anthropic.Anthropic, req: dict[str, Any], instrumented: None
) -> None:
    def run() -> None:
        with client.messages.with_streaming_response.create(**req) as response:
            assert response.parse().content[0].text == "Hello! How can I help you today?"

    (event,) = _costs_of(run).events
    assert event.amount == Decimal("0.00790725")


def test_raw_stream_is_recorded_when_its_parsed_stream_is_read(
    client: anthropic.Anthropic, req: dict[str, Any], instrumented: None
) -> None:
    def run() -> None:
        raw = client.messages.with_raw_response.create(**req, stream=True)
        stream = raw.parse()
        assert raw.parse() is stream
        assert [e.type for e in stream][-1] == "message_stop"

    (event,) = _costs_of(run).events
    assert event.data["request_id"] == STREAM_ID
    assert event.data["output_tokens"] == 12


async def test_async_streaming_response_stream_is_recorded_when_read(
    async_client: anthropic.AsyncAnthropic, req: dict[str, Any], instrumented: None
) -> None:
    with pc.job("j", customer="cus_1"), capture() as costs:
        async with async_client.messages.with_streaming_response.create(**req, stream=True) as response:
            stream = await response.parse()
            assert isinstance(stream, anthropic.AsyncStream)
            assert [e.type async for e in stream][-1] == "message_stop"
    (event,) = costs.events
    assert event.data["request_id"] == STREAM_ID
    assert event.amount == Decimal("0.00790725")


# -- instrument / uninstrument ------------------------------------------------------------------------------------


def _patched_attributes() -> list[tuple[type, str]]:
    instrumentor = AnthropicInstrumentor()
    targets: list[tuple[type, str]] = []
    for patch in instrumentor._patches():
        module = importlib.import_module(patch.module)
        owner, attribute = patch.target.split(".")
        if hasattr(module, owner) and attribute in vars(getattr(module, owner)):
            targets.append((getattr(module, owner), attribute))
    return targets


def test_clients_made_before_and_after_instrument_and_their_copies_are_covered(
    make_client: Any, req: dict[str, Any], configured: Any
) -> None:
    made_before = make_client()
    pc.instrument("anthropic")
    made_after = make_client()
    costs = _costs_of(lambda: [c.messages.create(**req) for c in (made_before, made_after,
                                                                   made_before.with_options(timeout=5.0))])
    assert len(costs.events) == 3


def test_instrument_twice_records_once(client: anthropic.Anthropic, req: dict[str, Any], configured: Any) -> None:
    pc.instrument("anthropic")
    pc.instrument("anthropic")
    assert len(_costs_of(lambda: client.messages.create(**req)).events) == 1


def test_event_type_can_be_overridden(client: anthropic.Anthropic, req: dict[str, Any], configured: Any) -> None:
    pc.instrument("anthropic", event_type="cost.llm")
    try:
        (event,) = _costs_of(lambda: client.messages.create(**req)).events
        assert event.type == "cost.llm"
    finally:
        # The registry keeps one instrumentor per process and the option outlives uninstrument(): put it back.
        pc.instrument("anthropic", event_type="cost.ai.inference")


def test_uninstrument_restores_the_originals(client: anthropic.Anthropic, req: dict[str, Any], configured: Any) -> None:
    targets = _patched_attributes()
    originals = {(owner, name): vars(owner)[name] for owner, name in targets}
    assert len(originals) >= 12
    pc.instrument("anthropic")
    assert all(vars(owner)[name] is not originals[(owner, name)] for owner, name in targets if owner.__module__
               .startswith(("anthropic.resources", "anthropic.lib.streaming")))
    pc.uninstrument("anthropic")
    assert all(vars(owner)[name] is originals[(owner, name)] for owner, name in targets)
    assert _costs_of(lambda: client.messages.create(**req)).events == []


def test_instrument_again_after_uninstrument(client: anthropic.Anthropic, req: dict[str, Any], configured: Any) -> None:
    pc.instrument("anthropic")
    pc.uninstrument("anthropic")
    pc.instrument("anthropic")
    assert len(_costs_of(lambda: client.messages.create(**req)).events) == 1

