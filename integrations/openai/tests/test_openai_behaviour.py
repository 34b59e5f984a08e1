"""The user's world is untouched (exceptions, identity of the originals), and each call is one event, never two."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, ClassVar

import openai
import pytest
from openai._base_client import AsyncAPIClient, SyncAPIClient
from openai._legacy_response import LegacyAPIResponse
from openai._response import APIResponse, AsyncAPIResponse
from openai._streaming import AsyncStream, Stream
from openai.lib.streaming.chat import AsyncChatCompletionStream, ChatCompletionStream
from openai.lib.streaming.responses import AsyncResponseStream, ResponseStream

import paygentic_costs as pc
from paygentic_costs.instrumentation import Instrumentor, Patch, Usage, suppressed
from paygentic_costs.testing import Capture

MESSAGES = [{"role": "user", "content": "Hi"}]
CHAT_AMOUNT = Decimal("0.0016025")
TARGETS = [
    (SyncAPIClient, "request"), (AsyncAPIClient, "request"), (Stream, "close"), (AsyncStream, "close"),
    (ChatCompletionStream, "close"), (AsyncChatCompletionStream, "close"), (ResponseStream, "close"),
    (AsyncResponseStream, "close"),
]
# Raw responses get a parse() hook of their own (an instance attribute); the classes stay untouched.
UNTOUCHED = [(LegacyAPIResponse, "parse"), (APIResponse, "parse"), (AsyncAPIResponse, "parse")]



@pytest.fixture
def transport() -> str:
    """These behaviours do not depend on the wire: MockTransport only."""
    return "mock"


def _originals() -> list[Any]:
    return [owner.__dict__[name] for owner, name in TARGETS]


def test_uninstrument_restores_the_original_functions(tmp_path: Any) -> None:
    before = _originals()
    pc.configure(state_dir=tmp_path)
    pc.instrument("openai")
    patched = _originals()
    assert all(p is not b for p, b in zip(patched, before, strict=True))
    assert all(not hasattr(owner.__dict__[name], "__wrapped__") for owner, name in UNTOUCHED)
    pc.uninstrument("openai")
    assert all(a is b for a, b in zip(_originals(), before, strict=True))
    pc.instrument("openai")  # and it can be applied again
    assert all(p is not b for p, b in zip(_originals(), before, strict=True))


def test_signatures_and_coroutine_kinds_are_kept(costs: Capture) -> None:
    assert inspect.iscoroutinefunction(AsyncAPIClient.request)
    assert inspect.iscoroutinefunction(AsyncAPIResponse.parse)
    assert not inspect.iscoroutinefunction(SyncAPIClient.request)
    assert inspect.signature(SyncAPIClient.request) == inspect.signature(SyncAPIClient.request.__wrapped__)
    # The private shapes the chokepoint relies on (pinned here so an SDK refactor fails loudly, not silently).
    params = list(inspect.signature(SyncAPIClient.request).parameters)
    assert params[:3] == ["self", "cast_to", "options"]
    fields = set(openai._models.FinalRequestOptions.model_fields)
    assert {"method", "url", "json_data", "headers", "extra_json"} <= fields


def test_instrument_twice_is_once(costs: Capture, client: Any) -> None:
    first = _originals()
    pc.instrument("openai")
    pc.instrument("openai")
    assert all(a is b for a, b in zip(_originals(), first, strict=True))
    with pc.job("j", customer="cus_1"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(costs.events) == 1


def test_user_exception_is_the_same_object(costs: Capture, fake: Any, http_lib: Any) -> None:
    boom = RuntimeError("transport exploded")

    def handler(request: Any) -> Any:
        raise boom

    sdk = openai.OpenAI(api_key="t", base_url="http://fake.test/v1", max_retries=0,
                        http_client=http_lib.Client(transport=http_lib.MockTransport(handler)))

    def raised_by_sdk() -> BaseException:
        with pytest.raises(Exception) as raised:
            sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        return raised.value

    pc.uninstrument("openai")
    bare = raised_by_sdk()
    pc.instrument("openai")
    with pc.job("j", customer="cus_1"):
        seen = raised_by_sdk()
    if bare is boom:  # openai >= 2 lets non-HTTP errors through untouched: so must we
        assert seen is boom
    else:  # 1.x wraps every transport error in APIConnectionError (from err): the same shape, nothing added
        assert type(seen) is type(bare) and seen.__cause__ is boom
    assert costs.events == []
    assert pc.stats()["usage_missing"] == 0


def _status_error(client: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="bad-model", messages=MESSAGES)
    return raised.value


def test_api_error_is_unchanged(costs: Capture, client: Any) -> None:
    pc.uninstrument("openai")
    bare = _status_error(client)
    pc.instrument("openai")
    with pc.job("j", customer="cus_1"):
        seen = _status_error(client)
    assert type(seen) is type(bare) is openai.BadRequestError
    assert (seen.status_code, seen.message, seen.body, seen.request_id) == (
        bare.status_code, bare.message, bare.body, bare.request_id)
    assert (seen.__cause__, seen.__suppress_context__) == (bare.__cause__, bare.__suppress_context__)
    assert costs.events == []
    assert pc.stats()["usage_missing"] == 0


async def test_async_api_error_is_unchanged(costs: Capture, async_client: Any) -> None:
    with pc.job("j", customer="cus_1"), pytest.raises(openai.BadRequestError) as raised:
        await async_client.chat.completions.create(model="bad-model", messages=MESSAGES)
    assert raised.value.status_code == 400 and raised.value.__cause__ is None
    assert costs.events == []


def test_retries_inside_the_sdk_are_one_event(costs: Capture, client: Any, fake: Any) -> None:
    fake.fail_first = 1
    with pc.job("j", customer="cus_1"):
        client.with_options(max_retries=1).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(fake.requests) == 2
    assert [e.amount for e in costs.events] == [CHAT_AMOUNT]


def test_other_endpoints_are_not_billed(costs: Capture, client: Any) -> None:
    with pc.job("j", customer="cus_1"):
        client.models.list()
    assert costs.events == []
    assert pc.stats()["usage_missing"] == 0


class _AgentFramework(Instrumentor):
    """A higher layer that records its own call around the SDK (e.g. an agent framework integration)."""

    name: ClassVar[str] = "agent-framework"
    distribution: ClassVar[str] = "openai"
    supported: ClassVar[str] = ">=0"
    provider: ClassVar[str] = "openai"

    def _patches(self) -> Iterable[Patch]:
        return []


def test_an_outer_layer_records_the_call_once(costs: Capture, client: Any) -> None:
    outer = _AgentFramework()
    outer.instrument()
    with pc.job("j", customer="cus_1"):
        call = outer.start_call("agent.run", model="gpt-4o-2024-08-06")
        assert call is not None
        with call:
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        call.finish(Usage(input_tokens=10, output_tokens=1))
    assert [e.data["operation"] for e in costs.events] == ["agent.run"]
    outer.uninstrument()


def test_suppressed_calls_are_not_recorded(costs: Capture, client: Any) -> None:
    with pc.job("j", customer="cus_1"), suppressed():
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert costs.events == []


def test_event_type_is_configurable(costs: Capture, client: Any) -> None:
    pc.instrument("openai", event_type="cost.llm.openai")
    try:
        with pc.job("j", customer="cus_1"):
            client.embeddings.create(model="text-embedding-3-small", input="Hi")
    finally:  # the registry keeps one instrumentor per process, and with it the override
        pc.instrument("openai", event_type="cost.ai.inference")
    assert [e.type for e in costs.events] == ["cost.llm.openai"]


def test_prompts_and_completions_are_never_captured(costs: Capture, client: Any) -> None:
    with pc.job("j", customer="cus_1"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "secret-prompt"}])
        list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    wire = json.dumps([e.to_wire() for e in costs.events], default=str)
    assert "secret-prompt" not in wire and "How can I help" not in wire
    assert len(costs.events) == 2


@pytest.mark.parametrize(("tier", "api"), [("flex", "chat"), ("priority", "chat"), ("flex", "responses")])
def test_service_tier_from_the_response_selects_the_price(
    costs: Capture, client: Any, fake: Any, tier: str, api: str
) -> None:
    def call() -> None:
        if api == "chat":
            list(client.chat.completions.create(model="gpt-5-mini", messages=MESSAGES, stream=True))
            client.chat.completions.create(model="gpt-5-mini", messages=MESSAGES)
        else:
            list(client.responses.create(model="gpt-5-mini", input="Hi", stream=True))
            client.responses.create(model="gpt-5-mini", input="Hi")

    with pc.job("j", customer="cus_1"):
        fake.overrides = {"model": "gpt-5-mini-2025-08-07", "service_tier": "default"}
        call()
        fake.overrides = {"model": "gpt-5-mini-2025-08-07", "service_tier": tier}
        call()
    default_stream, default_plain, tier_stream, tier_plain = costs.events
    assert default_stream.amount == default_plain.amount
    assert tier_stream.amount == tier_plain.amount
    assert tier_plain.data["rate"] == f"genai-prices:openai:gpt-5-mini;service_tier={tier}"
    ratio = tier_plain.amount / default_plain.amount
    assert ratio == Decimal("0.5") if tier == "flex" else ratio > 1
