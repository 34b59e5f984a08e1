"""The stream proxies driven directly: what the caller sees, what the state records, when the call finishes.

The SDK-level tests (test_openai_streams.py) cover the real wire format; these pin the edge cases of the per-chunk
path that a fixture rarely produces: several choices, usage on a content chunk, an error right after the finish chunk,
a first chunk without an id, items of other types, a hook that fails.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

pytest.importorskip("openai")

from openai.types.chat import ChatCompletionChunk
from paygentic_costs_openai._stream import (
    AsyncHidingChatStream,
    ChatStreamState,
    SyncHidingChatStream,
)

from paygentic_costs import testing
from paygentic_costs.instrumentation import AsyncStreamProxy, SyncStreamProxy

USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def chunk(
    *choices: tuple[int, str | None],
    usage: dict[str, int] | None = None,
    id: str = "chatcmpl-1",
    model: str = "gpt-4o-2024-08-06",
    tier: str | None = "default",
    cls: type[ChatCompletionChunk] = ChatCompletionChunk,
) -> ChatCompletionChunk:
    """A chunk with one choice per ``(index, finish_reason)``; none at all for the usage-only chunk."""
    return cls.model_validate(
        {
            "id": id,
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "service_tier": tier,
            "choices": [{"index": i, "delta": {"content": "x"}, "finish_reason": finish} for i, finish in choices],
            "usage": usage,
        }
    )


class FakeCall:
    def __init__(self) -> None:
        self.finished: list[tuple[Any, dict[str, Any]]] = []

    def finish(self, usage: Any, **kwargs: Any) -> None:
        self.finished.append((usage, kwargs))


class Source:
    """An SDK-style stream: ``__iter__`` is a generator over one shared iterator; ``fail`` raises after the items."""

    def __init__(self, items: list[Any], fail: BaseException | None = None) -> None:
        self.items = items
        self.fail = fail
        self.iterated = 0
        self.closed = False
        self.label = "source"

    def _gen(self) -> Iterator[Any]:
        yield from self.items
        if self.fail is not None:
            raise self.fail

    def __iter__(self) -> Iterator[Any]:
        self.iterated += 1
        return self._gen()

    def close(self) -> None:
        self.closed = True


class ASource(Source):
    async def _agen(self) -> AsyncIterator[Any]:
        for item in self.items:
            yield item
        if self.fail is not None:
            raise self.fail

    def __aiter__(self) -> AsyncIterator[Any]:
        self.iterated += 1
        return self._agen()

    async def close(self) -> None:  # type: ignore[override]
        self.closed = True


def hiding(items: list[Any], fail: BaseException | None = None) -> tuple[Any, FakeCall, ChatStreamState]:
    call = FakeCall()
    state = ChatStreamState(call, "test site")  # type: ignore[arg-type]
    return SyncHidingChatStream(Source(items, fail), state), call, state


def ahiding(items: list[Any], fail: BaseException | None = None) -> tuple[Any, FakeCall, ChatStreamState]:
    call = FakeCall()
    state = ChatStreamState(call, "test site")  # type: ignore[arg-type]
    return AsyncHidingChatStream(ASource(items, fail), state), call, state


def test_only_the_usage_only_chunk_is_hidden_and_it_is_recorded() -> None:
    items = [chunk((0, None)), chunk((0, None)), chunk((0, "stop")), chunk(usage=USAGE, model="gpt-4o-x", tier="flex")]
    stream, call, _ = hiding(items)
    assert list(stream) == items[:3]
    assert len(call.finished) == 1
    usage, kwargs = call.finished[0]
    assert (usage.input_tokens, usage.output_tokens) == (10, 5)
    # The usage chunk's model and tier are the ones priced; the id comes from the first chunk.
    assert kwargs == {"model": "gpt-4o-x", "request_id": "chatcmpl-1", "service_tier": "flex", "call_site": "test site"}


async def test_async_only_the_usage_only_chunk_is_hidden_and_it_is_recorded() -> None:
    items = [chunk((0, None)), chunk((0, "stop")), chunk(usage=USAGE)]
    stream, call, _ = ahiding(items)
    assert [c async for c in stream] == items[:2]
    assert len(call.finished) == 1 and call.finished[0][0] is not None


def test_break_on_finish_reason_already_recorded_the_usage() -> None:
    items = [chunk((0, None)), chunk((0, "stop")), chunk(usage=USAGE)]
    stream, call, state = hiding(items)
    for item in stream:
        if item.choices[0].finish_reason:
            break
    assert state.usage is not None and not call.finished  # read ahead, not finished yet
    with pytest.raises(StopIteration):
        next(stream)
    with pytest.raises(StopIteration):
        next(stream)
    stream.close()
    assert len(call.finished) == 1


async def test_async_break_on_finish_reason_already_recorded_the_usage() -> None:
    items = [chunk((0, None)), chunk((0, "stop")), chunk(usage=USAGE)]
    stream, call, state = ahiding(items)
    async for item in stream:
        if item.choices[0].finish_reason:
            break
    assert state.usage is not None and not call.finished
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    await stream.close()
    assert len(call.finished) == 1


def test_an_item_read_ahead_is_handed_out_next_in_order() -> None:
    # Choice 0 finishes while choice 1 goes on: the proxy reads ahead, finds a content chunk, and hands it out next.
    items = [chunk((0, "stop"), (1, None)), chunk((1, None)), chunk((1, "stop")), chunk(usage=USAGE)]
    stream, call, _ = hiding(items)
    assert list(stream) == items[:3]
    assert len(call.finished) == 1


def test_an_error_after_the_finish_chunk_is_raised_on_the_next_next() -> None:
    boom = ValueError("connection dropped")
    items = [chunk((0, None)), chunk((0, "stop"))]
    stream, call, _ = hiding(items, fail=boom)
    seen = [next(stream), next(stream)]
    assert seen == items
    assert len(call.finished) == 1  # ended by the read-ahead, with no usage to report
    with pytest.raises(ValueError) as raised:
        next(stream)
    assert raised.value is boom
    with pytest.raises(StopIteration):
        next(stream)
    assert len(call.finished) == 1


async def test_async_an_error_after_the_finish_chunk_is_raised_on_the_next_next() -> None:
    boom = ValueError("connection dropped")
    items = [chunk((0, None)), chunk((0, "stop"))]
    stream, call, _ = ahiding(items, fail=boom)
    assert [await stream.__anext__(), await stream.__anext__()] == items
    with pytest.raises(ValueError) as raised:
        await stream.__anext__()
    assert raised.value is boom
    assert len(call.finished) == 1


def test_an_error_mid_stream_propagates_and_ends_once() -> None:
    boom = ValueError("bad event")
    stream, call, _ = hiding([chunk((0, None))], fail=boom)
    assert next(stream) is not None
    with pytest.raises(ValueError) as raised:
        next(stream)
    assert raised.value is boom
    stream.close()
    assert len(call.finished) == 1 and call.finished[0][0] is None


def test_id_model_and_tier_come_from_the_first_chunk_that_has_an_id() -> None:
    items = [
        chunk((0, None), id="", model="m-first", tier=None),
        chunk((0, None), id="chatcmpl-2", model="m-second"),
        chunk((0, None), id="chatcmpl-3", model="m-third", tier="flex"),
        chunk((0, "stop")),
    ]
    stream, call, state = hiding(items)
    assert list(stream) == items
    assert (state.request_id, state.model, state.service_tier) == ("chatcmpl-2", "m-second", "default")
    assert call.finished[0][0] is None  # no usage arrived: nothing is invented


def test_usage_on_a_content_chunk_is_recorded_and_the_chunk_shown() -> None:
    items = [chunk((0, None)), chunk((0, "stop"), usage=USAGE)]
    stream, call, _ = hiding(items)
    assert list(stream) == items
    assert call.finished[0][0] is not None


def test_an_empty_chunk_without_usage_is_shown() -> None:
    items = [chunk((0, None)), chunk(), chunk((0, "stop"))]
    stream, _, _ = hiding(items)
    assert list(stream) == items


def test_items_of_other_types_pass_through_the_hook() -> None:
    class Sub(ChatCompletionChunk):
        pass

    other = {"not": "a chunk"}
    sub_usage = chunk(usage=USAGE, cls=Sub)  # not the exact type: shown (only our own usage chunk is hidden)...
    items = [other, chunk((0, None)), sub_usage, chunk((0, "stop"))]
    stream, call, _ = hiding(items)
    assert list(stream) == items
    assert call.finished[0][0] is not None  # ...and still recorded, as the state reads any ChatCompletionChunk


@pytest.mark.allow_internal_errors
def test_a_failing_hook_is_reported_and_the_stream_goes_on() -> None:
    class Unreadable:
        def __bool__(self) -> bool:
            raise RuntimeError("hook bug")

    # A usage-only chunk whose id cannot be read: the hook fails on it, reports, and the stream goes on.
    no_id = ChatCompletionChunk.model_construct(
        id=Unreadable(), object="chat.completion.chunk", created=1, choices=[], usage=USAGE
    )
    items = [no_id, chunk((0, None)), chunk((0, "stop"))]
    stream, call, state = hiding(items)
    with testing.internal_errors() as errors:
        seen = list(stream)
    assert [type(e) for e in errors] == [RuntimeError]
    assert seen == items[1:]  # still a usage-only chunk: ours to hide
    assert state.request_id == "chatcmpl-1" and state.usage is None
    assert len(call.finished) == 1


def test_core_proxy_iterates_lazily_and_ends_once() -> None:
    source = Source([1, 2, 3])
    ends: list[BaseException | None] = []
    seen: list[Any] = []
    proxy = SyncStreamProxy(source, on_chunk=seen.append, on_end=ends.append)
    items = iter(proxy)
    assert items is not proxy  # a generator, like the SDKs' Stream.__iter__
    assert source.iterated == 0  # nothing is read before the caller iterates
    assert list(items) == [1, 2, 3] == seen
    with pytest.raises(StopIteration):
        next(proxy)
    proxy.close()
    assert ends == [None] and source.closed and source.iterated == 1


def test_core_proxy_stays_transparent() -> None:
    source = Source([1])
    proxy = SyncStreamProxy(source, on_chunk=lambda item: None, on_end=lambda error: None)
    assert isinstance(proxy, Source)
    assert proxy.label == "source"
    proxy.label = "changed"
    assert source.label == "changed"
    stream, _, _ = hiding([])
    assert isinstance(stream, Source) and stream.label == "source"


async def test_async_core_proxy_ends_once_on_error() -> None:
    boom = RuntimeError("stream broke")
    ends: list[BaseException | None] = []
    proxy = AsyncStreamProxy(ASource([1], fail=boom), on_chunk=lambda item: None, on_end=ends.append)
    assert await proxy.__anext__() == 1
    with pytest.raises(RuntimeError):
        await proxy.__anext__()
    await proxy.close()
    assert ends == [boom]


def test_an_abandoned_hiding_stream_ends_once_when_collected() -> None:
    stream, call, _ = hiding([chunk((0, None)), chunk((0, "stop")), chunk(usage=USAGE)])
    next(stream)
    del stream
    gc.collect()
    assert len(call.finished) == 1 and call.finished[0][0] is None


def test_responses_state_reads_terminal_events_of_any_shape() -> None:
    from unittest import mock

    from openai.types.responses import ResponseCompletedEvent, ResponseTextDeltaEvent
    from paygentic_costs_openai._stream import ResponsesStreamState

    response = {
        "id": "resp_1",
        "model": "gpt-4o",
        "service_tier": "default",
        "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
    }
    delta = ResponseTextDeltaEvent.model_construct(type="response.output_text.delta", delta="x")
    completed = ResponseCompletedEvent.model_construct(type="response.completed", response=response)

    class Fallback:  # an older SDK's stand-in union member: the terminal type string, ``response`` left a dict
        type = "response.completed"

        def __init__(self) -> None:
            self.response = response

    spec_mock = mock.Mock(spec=ResponseCompletedEvent)  # fakes __class__: isinstance still recognises it
    spec_mock.response = response
    for event in (completed, Fallback(), spec_mock):
        state = ResponsesStreamState(FakeCall(), "test site")  # type: ignore[arg-type]
        for item in (delta, delta, event, delta):
            state.on_chunk(item)
        assert (state.request_id, state.model, state.service_tier) == ("resp_1", "gpt-4o", "default"), event
        assert state.normalised() is not None
    state = ResponsesStreamState(FakeCall(), "test site")  # type: ignore[arg-type]
    state.on_chunk(delta)
    assert state.usage is None and state.request_id is None


# -- iteration through the proxies' generators (for / async for) ---------------------------------------------------


def core(items: list[Any], fail: BaseException | None = None) -> tuple[SyncStreamProxy, list[Any], list[Any]]:
    seen: list[Any] = []
    ends: list[BaseException | None] = []
    return SyncStreamProxy(Source(items, fail), on_chunk=seen.append, on_end=ends.append), seen, ends


def acore(items: list[Any], fail: BaseException | None = None) -> tuple[AsyncStreamProxy, list[Any], list[Any]]:
    seen: list[Any] = []
    ends: list[BaseException | None] = []
    return AsyncStreamProxy(ASource(items, fail), on_chunk=seen.append, on_end=ends.append), seen, ends


def test_for_loop_and_next_share_one_iterator_and_a_break_ends_nothing() -> None:
    proxy, seen, ends = core([1, 2, 3, 4, 5, 6])
    assert next(proxy) == 1
    for item in proxy:
        assert item == 2
        break
    assert ends == []  # leaving the loop is not the end of the stream
    assert next(proxy) == 3
    items = iter(proxy)
    assert next(items) == 4
    assert next(proxy) == 5  # while that generator is suspended
    assert list(items) == [6]
    assert seen == [1, 2, 3, 4, 5, 6] and ends == [None]
    assert list(proxy) == [] and ends == [None]
    with pytest.raises(StopIteration):
        next(proxy)
    proxy.close()
    assert ends == [None] and proxy.__wrapped__.iterated == 1


def test_for_loop_error_propagates_unchanged_and_ends_once() -> None:
    boom = ValueError("connection dropped")
    proxy, seen, ends = core([1, 2], fail=boom)
    got = []
    with pytest.raises(ValueError) as raised:
        for item in proxy:
            got.append(item)
    assert raised.value is boom and got == [1, 2] == seen
    assert ends == [boom]
    assert list(proxy) == [] and ends == [boom]
    proxy.close()
    assert ends == [boom]


def test_a_closed_or_dropped_generator_ends_nothing() -> None:
    proxy, _, ends = core([1, 2, 3])
    items = iter(proxy)
    assert next(items) == 1
    items.close()
    assert ends == []
    items = iter(proxy)
    assert next(items) == 2
    del items
    gc.collect()
    assert ends == []
    assert list(proxy) == [3] and ends == [None]


@pytest.mark.allow_internal_errors
def test_for_loop_reports_a_failing_hook_and_goes_on() -> None:
    def bad(item: Any) -> None:
        raise RuntimeError("hook bug")

    ends: list[BaseException | None] = []
    proxy = SyncStreamProxy(Source([1, 2]), on_chunk=bad, on_end=ends.append)
    with testing.internal_errors() as errors:
        assert list(proxy) == [1, 2]
    assert [type(e) for e in errors] == [RuntimeError, RuntimeError] and ends == [None]


def test_a_stream_only_its_generator_references_is_not_finalized_early() -> None:
    # for chunk in client...create(stream=True): the loop holds the generator, nothing holds the proxy.
    ends: list[BaseException | None] = []
    items = iter(SyncStreamProxy(Source([1, 2, 3]), on_chunk=lambda item: None, on_end=ends.append))
    gc.collect()
    assert next(items) == 1
    gc.collect()
    assert ends == []
    assert list(items) == [2, 3] and ends == [None]


def test_a_stream_abandoned_in_a_loop_is_finalized_when_collected() -> None:
    ends: list[BaseException | None] = []
    for _ in SyncStreamProxy(Source([1, 2, 3]), on_chunk=lambda item: None, on_end=ends.append):
        break
    assert ends == [None]  # nothing else referenced it: collected (by reference count) as the loop ended
    proxy, _, ends = core([1, 2, 3])
    for _ in proxy:
        break
    del proxy
    gc.collect()
    assert ends == [None]


async def test_async_for_and_anext_share_one_iterator_and_a_break_ends_nothing() -> None:
    proxy, seen, ends = acore([1, 2, 3, 4, 5, 6])
    assert await proxy.__anext__() == 1
    async for item in proxy:
        assert item == 2
        break
    assert ends == []
    assert await proxy.__anext__() == 3
    items = proxy.__aiter__()
    assert items is not proxy
    assert await items.__anext__() == 4
    assert await proxy.__anext__() == 5
    assert [item async for item in items] == [6]
    assert seen == [1, 2, 3, 4, 5, 6] and ends == [None]
    assert [item async for item in proxy] == [] and ends == [None]
    with pytest.raises(StopAsyncIteration):
        await proxy.__anext__()
    await proxy.close()
    assert ends == [None] and proxy.__wrapped__.iterated == 1


async def test_async_for_error_propagates_unchanged_and_ends_once() -> None:
    boom = ValueError("connection dropped")
    proxy, seen, ends = acore([1, 2], fail=boom)
    got = []
    with pytest.raises(ValueError) as raised:
        async for item in proxy:
            got.append(item)
    assert raised.value is boom and got == [1, 2] == seen
    assert ends == [boom]
    await proxy.aclose()
    assert ends == [boom]


async def test_async_an_abandoned_loop_is_finalized_when_collected_not_later_by_the_loop() -> None:
    import asyncio
    import sys

    hooks = sys.get_asyncgen_hooks()
    assert hooks.finalizer is not None  # asyncio's: it would aclose() a dropped generator in a later task
    ends: list[BaseException | None] = []
    source = ASource([1, 2, 3])
    async for _ in AsyncStreamProxy(source, on_chunk=lambda item: None, on_end=ends.append):
        break
    gc.collect()
    assert ends == [None]  # at once, with no turn of the event loop in between
    assert sys.get_asyncgen_hooks() == hooks  # the thread's hooks are left as they were
    proxy, _, ends = acore([1, 2, 3])
    items = proxy.__aiter__()
    assert proxy.__wrapped__.iterated == 0  # starting the generator reads nothing
    assert await items.__anext__() == 1
    await items.aclose()
    del items
    assert ends == []  # a closed generator ends nothing
    async for _ in proxy:
        break
    del proxy
    gc.collect()
    assert ends == [None]
    await asyncio.sleep(0)
    assert ends == [None]


async def test_async_a_stream_only_its_generator_references_is_not_finalized_early() -> None:
    ends: list[BaseException | None] = []
    items = AsyncStreamProxy(ASource([1, 2, 3]), on_chunk=lambda item: None, on_end=ends.append).__aiter__()
    gc.collect()
    assert await items.__anext__() == 1
    gc.collect()
    assert ends == []
    assert [item async for item in items] == [2, 3] and ends == [None]


@pytest.mark.allow_internal_errors
async def test_async_for_reports_a_failing_hook_and_goes_on() -> None:
    def bad(item: Any) -> None:
        raise RuntimeError("hook bug")

    ends: list[BaseException | None] = []
    proxy = AsyncStreamProxy(ASource([1, 2]), on_chunk=bad, on_end=ends.append)
    with testing.internal_errors() as errors:
        assert [item async for item in proxy] == [1, 2]
    assert [type(e) for e in errors] == [RuntimeError, RuntimeError] and ends == [None]


def test_hiding_loop_and_next_hand_out_an_item_read_ahead_once_in_order() -> None:
    # Choice 0 finishes while choice 1 goes on: the loop reads ahead; a next() after the break gets that item.
    items = [chunk((0, None), (1, None)), chunk((0, "stop"), (1, None)), chunk((1, None)), chunk((1, "stop")),
             chunk(usage=USAGE)]
    stream, call, state = hiding(items)
    for item in stream:
        if item.choices[0].finish_reason:
            break
    assert item is items[1]
    assert next(stream) is items[2]
    assert list(stream) == [items[3]]
    assert state.usage is not None and len(call.finished) == 1
    # The reverse: a next() reads ahead, the next loop hands the item out first.
    stream, call, _ = hiding(items)
    assert [next(stream), next(stream)] == items[:2]
    assert list(stream) == items[2:4]
    assert len(call.finished) == 1 and call.finished[0][0] is not None


def test_hiding_next_while_the_loop_is_suspended_keeps_the_order() -> None:
    items = [chunk((0, None)), chunk((0, "stop"), (1, None)), chunk((1, None)), chunk((1, "stop")), chunk(usage=USAGE)]
    stream, call, _ = hiding(items)
    loop = iter(stream)
    assert next(loop) is items[0]
    assert next(stream) is items[1]  # reads items[2] ahead, into the shared record
    assert list(loop) == items[2:4]  # the suspended loop hands it out first
    assert len(call.finished) == 1 and call.finished[0][0] is not None


def test_hiding_loop_raises_a_deferred_error_once_and_ends_once() -> None:
    boom = ValueError("connection dropped")
    items = [chunk((0, None)), chunk((0, "stop"))]
    stream, call, _ = hiding(items, fail=boom)
    got = []
    with pytest.raises(ValueError) as raised:
        for item in stream:
            got.append(item)
    assert raised.value is boom and got == items
    assert list(stream) == []
    assert len(call.finished) == 1


def test_hiding_loop_broken_out_of_and_collected_ends_once() -> None:
    stream, call, state = hiding([chunk((0, None)), chunk((0, "stop")), chunk(usage=USAGE)])
    for item in stream:
        if item.choices[0].finish_reason:
            break
    assert not call.finished and state.usage is not None
    del stream
    gc.collect()
    assert len(call.finished) == 1 and call.finished[0][0] is not None


async def test_async_hiding_loop_and_anext_hand_out_an_item_read_ahead_once_in_order() -> None:
    items = [chunk((0, None), (1, None)), chunk((0, "stop"), (1, None)), chunk((1, None)), chunk((1, "stop")),
             chunk(usage=USAGE)]
    stream, call, state = ahiding(items)
    async for item in stream:
        if item.choices[0].finish_reason:
            break
    assert item is items[1]
    assert await stream.__anext__() is items[2]
    assert [c async for c in stream] == [items[3]]
    assert state.usage is not None and len(call.finished) == 1
    stream, call, _ = ahiding(items)
    assert [await stream.__anext__(), await stream.__anext__()] == items[:2]
    assert [c async for c in stream] == items[2:4]
    assert len(call.finished) == 1 and call.finished[0][0] is not None


async def test_async_hiding_loop_raises_a_deferred_error_and_an_abandoned_loop_ends_when_collected() -> None:
    boom = ValueError("connection dropped")
    items = [chunk((0, None)), chunk((0, "stop"))]
    stream, call, _ = ahiding(items, fail=boom)
    got = []
    with pytest.raises(ValueError) as raised:
        async for item in stream:
            got.append(item)
    assert raised.value is boom and got == items and len(call.finished) == 1
    stream, call, _ = ahiding([chunk((0, None)), chunk((0, "stop")), chunk(usage=USAGE)])
    async for _ in stream:
        break
    del stream
    gc.collect()
    assert len(call.finished) == 1
