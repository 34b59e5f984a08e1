"""Every Messages endpoint x sync/async x stream/non-stream, through the real SDK, priced by a pinned rate file."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pydantic
import pytest

import paygentic_costs as pc
from paygentic_costs.testing import capture

pytestmark = pytest.mark.filterwarnings("ignore:The model 'claude-sonnet-4-5' is deprecated:DeprecationWarning")

FIXTURES = Path(__file__).parent / "fixtures"
TEXT = "Hello! How can I help you today?"
# messages.json / messages_stream.sse: 12 uncached + 2051 five-minute cache writes in, 12 out.
# 12 x $3 + 2051 x $3.75 + 12 x $15 per million tokens.
FIXTURE_AMOUNT = Decimal("0.00790725")


class Greeting(pydantic.BaseModel):
    greeting: str


def _api(client: Any, beta: bool) -> Any:
    return client.beta.messages if beta else client.messages


# Each driver makes one request the way an application would and returns the text it got back.
def create(client: Any, req: dict[str, Any], beta: bool) -> str:
    message = _api(client, beta).create(**req)
    return str(message.content[0].text)


def create_stream(client: Any, req: dict[str, Any], beta: bool) -> str:
    text = ""
    for event in _api(client, beta).create(**req, stream=True):
        if event.type == "content_block_delta":
            text += event.delta.text
    return text


def stream_helper(client: Any, req: dict[str, Any], beta: bool) -> str:
    with _api(client, beta).stream(**req) as stream:
        text = "".join(stream.text_stream)
        assert stream.get_final_message().usage.output_tokens == 12
    return text


def parse(client: Any, req: dict[str, Any], beta: bool) -> str:
    message = _api(client, beta).parse(**req, output_format=Greeting)
    return str(message.parsed_output.greeting)


async def acreate(client: Any, req: dict[str, Any], beta: bool) -> str:
    message = await _api(client, beta).create(**req)
    return str(message.content[0].text)


async def acreate_stream(client: Any, req: dict[str, Any], beta: bool) -> str:
    text = ""
    async for event in await _api(client, beta).create(**req, stream=True):
        if event.type == "content_block_delta":
            text += event.delta.text
    return text


async def astream_helper(client: Any, req: dict[str, Any], beta: bool) -> str:
    async with _api(client, beta).stream(**req) as stream:
        text = "".join([chunk async for chunk in stream.text_stream])
        assert (await stream.get_final_message()).usage.output_tokens == 12
    return text


async def aparse(client: Any, req: dict[str, Any], beta: bool) -> str:
    message = await _api(client, beta).parse(**req, output_format=Greeting)
    return str(message.parsed_output.greeting)


SYNC: dict[str, Callable[[Any, dict[str, Any], bool], str]] = {
    "create": create, "create(stream=True)": create_stream, "stream()": stream_helper, "parse": parse,
}
ASYNC: dict[str, Callable[[Any, dict[str, Any], bool], Awaitable[str]]] = {
    "create": acreate, "create(stream=True)": acreate_stream, "stream()": astream_helper, "parse": aparse,
}
CASES = [(name, beta) for name in SYNC for beta in (False, True)]
IDS = [f"{'beta.' if beta else ''}messages.{name}" for name, beta in CASES]


def _use_parse_fixture(fake: Any, name: str) -> None:
    if name == "parse":  # parse() needs JSON text to validate against Greeting
        fake.body = (FIXTURES / "messages_parse.json").read_text()


def _check_event(event: Any, *, request_id: str) -> None:
    assert event.type == "cost.ai.inference"
    assert event.customer == "cus_1"
    assert event.amount == FIXTURE_AMOUNT
    data = event.data
    assert data["provider"] == "anthropic"
    assert data["operation"] == "messages"
    assert data["model"] == "claude-sonnet-4-5-20250929"
    assert data["request_id"] == request_id
    assert data["input_tokens"] == 2063
    assert data["output_tokens"] == 12
    assert data["cache_write_tokens"] == 2051
    assert "cache_read_tokens" not in data and "cache_write_1h_tokens" not in data
    assert str(data["rate"]).startswith("file:")


def _expected_id(name: str) -> str:
    if name == "parse":
        return "msg_01Parsed0000000000000000"
    return "msg_01Fy1eSWxZ9NnCZ3DbD1Zq8T" if name != "create" else "msg_01XFDUDYJgAACzvnptvVoYEL"


@pytest.mark.parametrize(("name", "beta"), CASES, ids=IDS)
def test_sync_endpoint(
    name: str, beta: bool, client: anthropic.Anthropic, fake: Any, req: dict[str, Any], instrumented: None
) -> None:
    _use_parse_fixture(fake, name)
    with pc.job("j", customer="cus_1"), capture() as costs:
        text = SYNC[name](client, req, beta)
    assert text == TEXT
    assert len(costs.events) == 1
    _check_event(costs.events[0], request_id=_expected_id(name))
    assert len(fake.requests) == 1


@pytest.mark.parametrize(("name", "beta"), CASES, ids=IDS)
async def test_async_endpoint(
    name: str, beta: bool, async_client: anthropic.AsyncAnthropic, fake: Any, req: dict[str, Any], instrumented: None
) -> None:
    _use_parse_fixture(fake, name)
    with pc.job("j", customer="cus_1"), capture() as costs:
        text = await ASYNC[name](async_client, req, beta)
    assert text == TEXT
    assert len(costs.events) == 1
    _check_event(costs.events[0], request_id=_expected_id(name))
    assert len(fake.requests) == 1


def _left_for_the_cyclic_gc(run: Callable[[], None]) -> int:
    """Objects that ``run`` left in reference cycles (freed only by the cyclic GC, not when last used)."""
    gc.collect()
    gc.disable()
    try:
        run()
        return gc.collect()
    finally:
        gc.enable()


@pytest.mark.parametrize(("name", "beta"), CASES, ids=IDS)
def test_calls_leave_nothing_for_the_cyclic_gc_where_the_bare_sdk_leaves_nothing(
    name: str, beta: bool, client: anthropic.Anthropic, fake: Any, req: dict[str, Any], instrumented: None
) -> None:
    # A cycle through our hooks would keep each call's response alive until the next collection, and finalise a
    # dropped stream late. Each kind of call is run bare, then instrumented: where the bare SDK leaves nothing for
    # the cyclic GC, neither may we.
    _use_parse_fixture(fake, name)

    def run() -> None:
        for _ in range(5):
            assert SYNC[name](client, req, beta) == TEXT

    pc.uninstrument("anthropic")
    run()  # warm-up: first-call caches are not garbage
    bare_before = _left_for_the_cyclic_gc(run)
    pc.instrument("anthropic")
    with pc.job("j", customer="cus_1"), capture() as costs:
        run()
        instrumented_left = _left_for_the_cyclic_gc(run)
    pc.uninstrument("anthropic")
    bare_after = _left_for_the_cyclic_gc(run)  # the bare SDK again: its own cycles can come and go with its state
    pc.instrument("anthropic")
    if bare_before or bare_after:
        # The SDK keeps these objects in cycles of its own (openai 1.66 with httpx, Anthropic's stream helper over a
        # MockTransport, depending on what ran before); what we attach to them is freed with them and counts as
        # garbage too, so the comparison says nothing here.
        pytest.skip(f"the bare SDK leaves {max(bare_before, bare_after)} objects for the cyclic GC on this path")
    assert instrumented_left == 0, (name, instrumented_left)
    assert len(costs.events) == 10
