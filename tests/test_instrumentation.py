"""The public integration API, exercised by a small integration written against it (as third parties would)."""

from __future__ import annotations

import gc
import sys
import types
from collections.abc import AsyncIterator, Iterable, Iterator
from decimal import Decimal
from typing import Any

import pytest

import paygentic_costs as pc
from paygentic_costs.export import InMemoryExporter
from paygentic_costs.instrumentation import (
    AsyncStreamProxy,
    Instrumentor,
    Patch,
    SyncStreamProxy,
    Usage,
    guard,
    suppressed,
)
from paygentic_costs.testing import capture

RATES = {"llm": {"toy:toy-1": {"input_per_mtok": "1", "output_per_mtok": "2"}}}


class Reply:
    def __init__(self, tokens: int) -> None:
        self.id = f"toy_{tokens}"
        self.model = "toy-1"
        self.usage = {"in": tokens, "out": tokens // 2}


class Stream:
    """A provider-style stream: chunks, the last one carrying usage; close() and context-manager support."""

    def __init__(self, n: int, with_usage: bool = True) -> None:
        self.chunks = [{"text": str(i)} for i in range(n)] + ([{"usage": {"in": 100, "out": 50}}] if with_usage else [])
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AStream:
    def __init__(self, n: int) -> None:
        self.chunks = [{"text": str(i)} for i in range(n)] + [{"usage": {"in": 100, "out": 50}}]

    async def _gen(self) -> AsyncIterator[dict[str, Any]]:
        for chunk in self.chunks:
            yield chunk

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._gen()


def _make_sdk() -> types.ModuleType:
    sdk = types.ModuleType("toy_sdk")

    class Client:
        def create(self, tokens: int, fail: BaseException | None = None) -> Reply:
            """Create a reply."""
            if fail is not None:
                raise fail
            return Reply(tokens)

        def stream(self, n: int, with_usage: bool = True) -> Stream:
            return Stream(n, with_usage)

        async def astream(self, n: int) -> AStream:
            return AStream(n)

        def nested(self, tokens: int) -> Reply:
            return self.create(tokens)  # an SDK helper that calls another patched method

    sdk.Client = Client  # type: ignore[attr-defined]
    return sdk


class ToyInstrumentor(Instrumentor):
    name = "toy"
    distribution = "httpx"  # any installed distribution: the range check itself is what is exercised
    supported = ">=0.1"
    provider = "toy"

    def _patches(self) -> Iterable[Patch]:
        yield Patch("toy_sdk", "Client.create", self._create, "records the reply's usage")
        yield Patch("toy_sdk", "Client.nested", self._create, "an outer call; the inner create must not add one")
        yield Patch("toy_sdk", "Client.stream", self._stream, "records usage from the final chunk")
        yield Patch("toy_sdk", "Client.astream", self._astream, "async variant")
        yield Patch("toy_sdk", "Client.missing", self._create, "absent in this version", optional=True)

    def _create(self, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = self.start_call("create")
        if call is None:
            return wrapped(*args, **kwargs)
        with call:
            reply = wrapped(*args, **kwargs)
        with guard("toy.extract"):
            call.finish(
                Usage(input_tokens=reply.usage["in"], output_tokens=reply.usage["out"]),
                model=reply.model,
                request_id=reply.id,
            )
        return reply

    def _on_stream(self, call: Any) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def on_chunk(chunk: dict[str, Any]) -> None:
            if "usage" in chunk:
                seen["usage"] = Usage(input_tokens=chunk["usage"]["in"], output_tokens=chunk["usage"]["out"])

        def on_end(error: BaseException | None) -> None:
            call.finish(seen.get("usage"), model="toy-1", call_site="toy_sdk.Client.stream")

        return {"on_chunk": on_chunk, "on_end": on_end}

    def _stream(self, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = self.start_call("stream")
        if call is None:
            return wrapped(*args, **kwargs)
        with call:
            stream = wrapped(*args, **kwargs)
        return SyncStreamProxy(stream, **self._on_stream(call))

    async def _astream(self, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = self.start_call("stream")
        if call is None:
            return await wrapped(*args, **kwargs)
        with call:
            stream = await wrapped(*args, **kwargs)
        return AsyncStreamProxy(stream, **self._on_stream(call))


@pytest.fixture
def sdk() -> Iterator[types.ModuleType]:
    module = _make_sdk()
    sys.modules["toy_sdk"] = module
    yield module
    del sys.modules["toy_sdk"]


@pytest.fixture
def toy(sdk: types.ModuleType) -> Iterator[ToyInstrumentor]:
    pc.configure(exporter=InMemoryExporter(), rates=RATES)
    instrumentor = ToyInstrumentor()
    instrumentor.instrument()
    yield instrumentor
    instrumentor.uninstrument()


def test_a_call_becomes_one_priced_event(toy: ToyInstrumentor, sdk: Any) -> None:
    with capture() as costs, pc.job("J", customer="cus_1"):
        reply = sdk.Client().create(1_000_000)
    assert isinstance(reply, Reply)
    (event,) = costs.events
    assert event.amount == Decimal(1) + Decimal(1)  # 1M input at $1 + 500k output at $2
    assert event.data["provider"] == "toy" and event.data["operation"] == "create"
    assert event.data["request_id"] == "toy_1000000" and event.data["model"] == "toy-1"


def test_instrument_twice_is_once_and_uninstrument_restores(sdk: Any) -> None:
    original = sdk.Client.__dict__["create"]
    pc.configure(exporter=InMemoryExporter(), rates=RATES)
    first, second = ToyInstrumentor(), ToyInstrumentor()
    first.instrument()
    first.instrument()
    second.instrument()  # a second instance never wraps a wrapper
    assert sdk.Client.__dict__["create"].__wrapped__ is original
    with capture() as costs, pc.customer("c"):
        sdk.Client().create(10)
    assert len(costs.events) == 1
    first.uninstrument()
    second.uninstrument()
    assert sdk.Client.__dict__["create"] is original
    assert sdk.Client.create.__doc__ == "Create a reply."


def test_user_exceptions_are_the_same_object_and_bill_nothing(toy: ToyInstrumentor, sdk: Any) -> None:
    boom = ConnectionError("provider down")
    with capture() as costs, pc.customer("c"), pytest.raises(ConnectionError) as info:
        sdk.Client().create(10, fail=boom)
    assert info.value is boom and info.value.__context__ is None
    assert costs.events == []


def test_nested_and_suppressed_calls_record_once_or_never(toy: ToyInstrumentor, sdk: Any) -> None:
    with capture() as costs, pc.customer("c"):
        sdk.Client().nested(10)
        with suppressed():
            sdk.Client().create(10)
    assert [e.data["operation"] for e in costs.events] == ["create"]
    assert len(costs.events) == 1


def test_disabled_integration_calls_through(toy: ToyInstrumentor, sdk: Any) -> None:
    toy.enabled = False
    with capture() as costs, pc.customer("c"):
        sdk.Client().create(10)
    assert costs.events == []


def test_stream_finalizes_once_on_exhaustion_close_and_with(toy: ToyInstrumentor, sdk: Any) -> None:
    with capture() as costs, pc.customer("c"):
        assert len(list(sdk.Client().stream(5))) == 6
        stream = sdk.Client().stream(5)
        next(stream)
        stream.close()
        with sdk.Client().stream(3) as s:
            for _ in s:
                pass
        assert isinstance(s, Stream)  # transparent proxy
    assert len(costs.events) == 2  # the closed-early stream never reached its usage chunk
    assert pc.stats()["usage_missing"] == 1


def test_abandoned_stream_is_finalized_when_collected(toy: ToyInstrumentor, sdk: Any) -> None:
    with capture() as costs, pc.customer("c"):
        stream = sdk.Client().stream(0)
        for chunk in stream:
            assert "usage" in chunk
            break
        del stream, chunk
        gc.collect()
        abandoned = sdk.Client().stream(3, with_usage=False)
        next(iter(abandoned))
        del abandoned
        gc.collect()
    assert len(costs.events) == 1 and costs.events[0].data["input_tokens"] == 100
    assert pc.stats()["usage_missing"] == 1


async def test_async_stream(toy: ToyInstrumentor, sdk: Any) -> None:
    with capture() as costs, pc.job("AJ", customer="c"):
        stream = await sdk.Client().astream(4)
        items = [chunk async for chunk in stream]
    assert len(items) == 5 and len(costs.events) == 1 and costs.events[0].subject == "c"


async def test_async_stream_broken_out_of_is_finalized_when_collected(toy: ToyInstrumentor, sdk: Any) -> None:
    with capture() as costs, pc.customer("c"):
        async for chunk in await sdk.Client().astream(0):
            assert "usage" in chunk
            break  # the stream's generator is dropped here; the loop is not asked to close it later
        del chunk
        gc.collect()
        assert len(costs.events) == 1
        stream = await sdk.Client().astream(3)
        async for _ in stream:
            break
        del stream
        gc.collect()
        assert pc.stats()["usage_missing"] == 1
    assert len(costs.events) == 1


def test_stream_attribution_is_captured_at_start(toy: ToyInstrumentor, sdk: Any) -> None:
    with capture() as costs:
        with pc.customer("cus_start"):
            stream = sdk.Client().stream(2)
        with pc.customer("cus_other"):
            list(stream)
    assert costs.events[0].subject == "cus_start"


@pytest.mark.allow_internal_errors
def test_hook_errors_never_break_the_stream(sdk: Any) -> None:
    pc.configure(exporter=InMemoryExporter(), rates=RATES)

    def bad_chunk(chunk: object) -> None:
        raise RuntimeError("hook bug")

    proxy = SyncStreamProxy(Stream(3), on_chunk=bad_chunk, on_end=lambda e: None)
    assert len(list(proxy)) == 4


def test_unavailable_sdk_raises_a_clear_error() -> None:
    class Missing(ToyInstrumentor):
        name = "missing"
        distribution = "definitely-not-installed-sdk"

    class OutOfRange(ToyInstrumentor):
        name = "old"
        supported = "<0.0.1"

    with pytest.raises(pc.IntegrationUnavailable, match="not installed"):
        Missing().instrument()
    with pytest.raises(pc.IntegrationUnavailable, match="outside the supported range"):
        OutOfRange().instrument()


def test_every_kind_of_target_gets_the_wrapt_calling_convention_and_is_restored_exactly() -> None:
    """Plain functions are patched with a plain function, anything else with wrapt; wrappers cannot tell them apart."""
    module = types.ModuleType("toy_kinds")

    class Client:
        def method(self, x: int, *, y: int = 0) -> tuple[Any, int]:
            """A method."""
            return self, x + y

        async def amethod(self, x: int) -> int:
            return x * 2

        @staticmethod
        def static(x: int) -> int:
            return x + 100

        @classmethod
        def klass(cls, x: int) -> tuple[type, int]:
            return cls, x

    def function(x: int) -> int:
        return x - 1

    module.Client, module.function = Client, function  # type: ignore[attr-defined]
    originals = {name: Client.__dict__[name] for name in ("method", "amethod", "static", "klass")}
    seen: list[tuple[str, Any, tuple[Any, ...], dict[str, Any]]] = []

    class Kinds(ToyInstrumentor):
        def _patches(self) -> Iterable[Patch]:
            for target in ("Client.method", "Client.static", "Client.klass", "function"):
                yield Patch("toy_kinds", target, self._record, "records how the wrapper was called")
            yield Patch("toy_kinds", "Client.amethod", self._arecord, "async")

        def _record(self, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            seen.append((wrapped.__name__, instance, args, kwargs))
            return wrapped(*args, **kwargs)

        async def _arecord(self, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            seen.append((wrapped.__name__, instance, args, kwargs))
            return await wrapped(*args, **kwargs)

    sys.modules["toy_kinds"] = module
    try:
        kinds = Kinds()
        kinds.instrument()
        client = Client()
        assert client.method(1, y=2) == (client, 3)
        assert Client.method(client, 4) == (client, 4)  # through the class: the instance is still the instance
        assert Client.static(1) == 101 and client.klass(5) == (Client, 5) and module.function(3) == 2
        import asyncio

        assert asyncio.run(client.amethod(21)) == 42
        assert seen[0] == ("method", client, (1,), {"y": 2}) and seen[1] == ("method", client, (4,), {})
        assert seen[2][:3] == ("static", None, (1,)) and seen[4] == ("function", None, (3,), {})
        assert seen[3][0] == "klass" and seen[5] == ("amethod", client, (21,), {})
        import inspect

        assert inspect.iscoroutinefunction(Client.amethod)
        assert inspect.signature(Client.method) == inspect.signature(originals["method"])
        assert Client.method.__doc__ == "A method." and Client.method.__name__ == "method"
        kinds.uninstrument()
        assert {name: Client.__dict__[name] for name in originals} == originals
        assert module.function is function
    finally:
        del sys.modules["toy_kinds"]
