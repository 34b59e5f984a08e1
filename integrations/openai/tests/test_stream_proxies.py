"""The core stream proxies and the Responses stream state driven directly: what the caller sees, what the state
records, when the call finishes.

The SDK-level tests (test_openai_streams.py, test_sse_watch.py) cover the real wire format; these pin edge cases a
fixture rarely produces: loops mixed with ``next()``, errors, a hook that fails, terminal events of every shape.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

pytest.importorskip("openai")


from paygentic_costs import testing
from paygentic_costs.instrumentation import AsyncStreamProxy, SyncStreamProxy


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


async def test_async_core_proxy_ends_once_on_error() -> None:
    boom = RuntimeError("stream broke")
    ends: list[BaseException | None] = []
    proxy = AsyncStreamProxy(ASource([1], fail=boom), on_chunk=lambda item: None, on_end=ends.append)
    assert await proxy.__anext__() == 1
    with pytest.raises(RuntimeError):
        await proxy.__anext__()
    await proxy.close()
    assert ends == [boom]


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


