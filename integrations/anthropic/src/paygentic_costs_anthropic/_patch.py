"""What is patched in the ``anthropic`` SDK, and the wrappers that open one billable call per API request.

Hook choice: **method patching, not the SDK's middleware.** anthropic 2.14 has client middleware
(``Anthropic(middleware=[...])``), but it is per client (a global ``instrument()`` would miss clients built before it
or by other libraries), it does not exist in older supported versions, and it runs once per HTTP *attempt* inside the
retry loop, before the response is parsed. Patching the resource classes is global (existing clients, copies from
``with_options()``, Bedrock/Vertex clients share them) and fully revertible by the core's ``Instrumentor``.

One event per API request, never two: ``messages.create`` / ``parse`` run inside ``with call:`` (so any inner layer
sees an active call and records nothing); ``messages.stream()`` does not go through ``create`` (it calls ``_post``
itself), so it is recorded where its request is made, in the stream manager's ``__enter__`` / ``__aenter__``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from typing import Any

import anthropic

from paygentic_costs.instrumentation import CallHandle, Instrumentor, Patch, guard

from ._stream import AsyncRawResponseProxy, SyncRawResponseProxy, finish_parsed_message, finish_raw_now, wrap_stream

__all__ = ["OPERATION", "patches"]

OPERATION = "messages"
Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]

_STABLE = "anthropic.resources.messages"
_BETA = "anthropic.resources.beta.messages"
_STREAMING = "anthropic.lib.streaming"
_STREAM_MANAGERS = (
    (_STREAMING, "MessageStreamManager", "messages"),
    (_STREAMING, "AsyncMessageStreamManager", "messages"),
    (f"{_STREAMING}._beta_messages", "BetaMessageStreamManager", "beta.messages"),
    (f"{_STREAMING}._beta_messages", "BetaAsyncMessageStreamManager", "beta.messages"),
)
_CLOUD_BETA = ("anthropic.lib.bedrock._beta_messages", "anthropic.lib.vertex._beta_messages")


def _requested_model(kwargs: dict[str, Any]) -> str | None:
    # Every messages method is keyword-only, so the request's model is always a kwarg; the reported model wins later.
    model = kwargs.get("model")
    return model if isinstance(model, str) else None


def _observe(call: CallHandle, result: Any, site: str, *, is_async: bool) -> Any:
    """Finish ``call`` from a returned message, or hand back a proxy that finishes it later. Returns what to return."""
    stream_type = anthropic.AsyncStream if is_async else anthropic.Stream
    if isinstance(result, stream_type):
        # stream=True: usage arrives in message_start / message_delta events as the caller reads them.
        return wrap_stream(call, result, site, is_async=is_async)
    raw_type = anthropic.AsyncAPIResponse if is_async else anthropic.APIResponse
    if isinstance(result, raw_type):
        # with_raw_response / with_streaming_response: the message (or stream) exists only once parse() runs.
        if finish_raw_now(call, result, site):
            return result
        proxy_type = AsyncRawResponseProxy if is_async else SyncRawResponseProxy
        return proxy_type(result, call, site)
    finish_parsed_message(call, result, site)
    return result


class _Wrappers:
    """Builds the wrapt-style wrappers; each gates on the instrumentor at call time (``start_call`` → None)."""

    def __init__(self, instrumentor: Instrumentor) -> None:
        self._instrumentor = instrumentor

    def call(self, site: str) -> Wrapper:
        """Sync ``create`` / ``parse``: one call around the SDK method; streams are finished by their proxy."""
        instrumentor = self._instrumentor

        def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            call = instrumentor.start_call(OPERATION, model=_requested_model(kwargs))
            if call is None:  # disabled, suppressed, or an outer layer already records this request
                return wrapped(*args, **kwargs)
            # The SDK call runs inside the call, so an exception marks it failed and propagates untouched.
            with call:
                result = wrapped(*args, **kwargs)
            with guard(f"anthropic.{site}"):
                return _observe(call, result, _site(site, kwargs), is_async=False)
            # Reached only when reading the result failed internally: the caller still gets its result, and the call
            # is closed as missing usage rather than left open (finish is a no-op if it already ran).
            call.finish(None, call_site=_site(site, kwargs))
            return result

        return wrapper

    def async_call(self, site: str) -> Wrapper:
        """Async ``create`` / ``parse``: an ``async def`` wrapper, so the caller still awaits a coroutine."""
        instrumentor = self._instrumentor

        async def wrapper(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            call = instrumentor.start_call(OPERATION, model=_requested_model(kwargs))
            if call is None:
                return await wrapped(*args, **kwargs)
            with call:
                result = await wrapped(*args, **kwargs)
            with guard(f"anthropic.{site}"):
                return _observe(call, result, _site(site, kwargs), is_async=True)
            # Reached only when reading the result failed internally: the caller still gets its result, and the call
            # is closed as missing usage rather than left open (finish is a no-op if it already ran).
            call.finish(None, call_site=_site(site, kwargs))
            return result

        return wrapper

    def stream_enter(self, site: str) -> Wrapper:
        """``MessageStreamManager.__enter__``: the HTTP request of ``messages.stream()`` happens here."""
        instrumentor = self._instrumentor

        def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            call = instrumentor.start_call(OPERATION)
            if call is None:
                return wrapped(*args, **kwargs)
            with call:
                message_stream = wrapped(*args, **kwargs)
            _swap_raw_stream(call, message_stream, site, is_async=False)
            return message_stream

        return wrapper

    def stream_aenter(self, site: str) -> Wrapper:
        """``AsyncMessageStreamManager.__aenter__``: awaits the request coroutine built by ``messages.stream()``."""
        instrumentor = self._instrumentor

        async def wrapper(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            call = instrumentor.start_call(OPERATION)
            if call is None:
                return await wrapped(*args, **kwargs)
            with call:
                message_stream = await wrapped(*args, **kwargs)
            _swap_raw_stream(call, message_stream, site, is_async=True)
            return message_stream

        return wrapper


def _site(site: str, kwargs: dict[str, Any]) -> str:
    return f"anthropic {site}(stream=True)" if kwargs.get("stream") is True else f"anthropic {site}"


def _swap_raw_stream(call: CallHandle, message_stream: Any, site: str, *, is_async: bool) -> None:
    """Put the finalize-once proxy between the helper and its raw SSE stream.

    ``MessageStream`` reads every event from ``self._raw_stream`` (``text_stream``, ``get_final_message()``, plain
    iteration) and its ``close()`` closes ``_raw_stream``, so a proxy there sees every event and every way out. The
    helper's iterator is a generator that reads the attribute lazily, so the swap takes effect before the first event.
    """
    swapped = False
    with guard(f"anthropic.{site}"):
        message_stream._raw_stream = wrap_stream(call, message_stream._raw_stream, f"anthropic {site}",
                                                 is_async=is_async)
        swapped = True
    if not swapped:
        call.finish(None, call_site=f"anthropic {site}")  # never leave a call open: report it as missing usage


def patches(instrumentor: Instrumentor) -> Iterator[Patch]:
    """The patches, in the order they must be applied."""
    w = _Wrappers(instrumentor)
    # Bedrock's and Vertex's beta resources copy ``create`` / ``parse`` from the first-party beta class when their
    # module is imported. Import them before anything is patched, so they copy the originals (and keep them after
    # uninstrument()) instead of our wrappers; they get their own optional patches at the end.
    for module in _CLOUD_BETA:
        with contextlib.suppress(ImportError):  # absent in some SDK versions, or missing optional dependencies
            importlib.import_module(module)
    for module, prefix in ((_STABLE, "messages"), (_BETA, "beta.messages")):
        # create: Message, or a Stream with stream=True (raw/streaming-response variants go through it too).
        yield Patch(module, "Messages.create", w.call(f"{prefix}.create"),
                    f"{prefix}.create: one cost event per request, streams finished by a proxy")
        yield Patch(module, "AsyncMessages.create", w.async_call(f"{prefix}.create"),
                    f"async {prefix}.create: one cost event per request, streams finished by a proxy")
        # parse: calls _post itself, bypassing create.
        yield Patch(module, "Messages.parse", w.call(f"{prefix}.parse"),
                    f"{prefix}.parse: bypasses create, one cost event per request")
        yield Patch(module, "AsyncMessages.parse", w.async_call(f"{prefix}.parse"),
                    f"async {prefix}.parse: bypasses create, one cost event per request")
    # messages.stream(): the manager sends the request on enter (it calls _post itself, never create), so the call is
    # opened there and its raw SSE stream is swapped for a proxy.
    for module, manager, prefix in _STREAM_MANAGERS:
        if manager.startswith(("Async", "BetaAsync")):
            yield Patch(module, f"{manager}.__aenter__", w.stream_aenter(f"{prefix}.stream()"),
                        f"async {prefix}.stream(): request awaited on enter; usage read from the raw SSE events")
        else:
            yield Patch(module, f"{manager}.__enter__", w.stream_enter(f"{prefix}.stream()"),
                        f"{prefix}.stream(): request sent on enter; usage read from the raw SSE events")
    for module in _CLOUD_BETA:
        for method in ("create", "parse"):
            yield Patch(module, f"Messages.{method}", w.call(f"beta.messages.{method}"),
                        f"cloud beta messages.{method} (copied from the first-party class): one event per request",
                        optional=True)
            yield Patch(module, f"AsyncMessages.{method}", w.async_call(f"beta.messages.{method}"),
                        f"cloud async beta messages.{method} (copied from the first-party class): one event each",
                        optional=True)
