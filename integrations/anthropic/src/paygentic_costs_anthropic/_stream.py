"""Turning what the SDK returns into exactly one ``call.finish``: messages, streams and raw responses.

Streams go through the core's finalize-once proxies; this module only supplies the chunk and end hooks. Raw
responses (``with_raw_response`` / ``with_streaming_response``) are observed where the SDK hands out their parsed value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import anthropic
import wrapt

from paygentic_costs.instrumentation import AsyncStreamProxy, CallHandle, SyncStreamProxy, guard

from ._extract import MessageInfo, StreamAccumulator, message_info, reported_from_usage

__all__ = [
    "AsyncRawResponseProxy", "SyncRawResponseProxy", "finish_message", "finish_parsed_message", "finish_raw_now",
    "wrap_stream",
]


def finish_message(call: CallHandle, info: MessageInfo, call_site: str) -> None:
    """Hand one message's usage to the core (which prices, attributes and emits it)."""
    call.finish(info.usage, model=info.model, request_id=info.request_id, service_tier=info.service_tier,
                call_site=call_site)


def finish_parsed_message(call: CallHandle, message: Any, call_site: str) -> None:
    """:func:`finish_message` for a message the SDK parsed: its usage object is normalised off the caller's thread
    (the SDK never mutates it); only the model and id are read here. No usage object: ``usage_missing`` now, naming
    the call site."""
    usage = getattr(message, "usage", None)
    if usage is None:  # also decoded JSON (a dict has no such attribute): read at once, as before
        finish_message(call, message_info(message), call_site)
        return
    model, request_id = getattr(message, "model", None), getattr(message, "id", None)
    call.finish_from(
        reported_from_usage,
        usage,
        model=model if type(model) is str and model else None,
        request_id=request_id if type(request_id) is str and request_id else None,
    )


def wrap_stream(call: CallHandle, stream: Any, call_site: str, *, is_async: bool) -> Any:
    """A transparent proxy over an SDK ``Stream`` / ``AsyncStream`` that finishes ``call`` exactly once.

    Whatever ends the stream — exhaustion, ``close()``, ``with`` exit, an error, or garbage collection of a stream
    the caller abandoned — the usage that had arrived by then is recorded (``message_start`` alone already carries
    the exact input and cache tokens). A stream that reported no usage at all is recorded as ``usage_missing``,
    unless the API failed it, in which case nothing was billed.
    """
    accumulator = StreamAccumulator()

    def on_end(error: BaseException | None) -> None:
        info = accumulator.result()
        if info.usage is None and isinstance(error, anthropic.APIError):
            call.fail(error)  # the API rejected the stream before reporting usage: no cost, and none missing
            return
        finish_message(call, info, call_site)

    proxy_type = AsyncStreamProxy if is_async else SyncStreamProxy
    return proxy_type(stream, on_chunk=_observer(accumulator.add), on_end=on_end)


# SDK event class -> not a Mapping (its ``type`` is an attribute), filled as the classes are first seen.
_ATTRIBUTE_EVENTS: dict[type, bool] = {}


def _observer(add: Callable[[Any], None]) -> Callable[[Any], None]:
    """``StreamAccumulator.add``, skipped for the SDK's events it ignores (all but message_start / message_delta).

    Most events of a stream are content deltas; ``add`` looks each one up as a possible ``Mapping`` first (an ABC
    isinstance, the bulk of its cost) only to ignore it. Pinned against ``add`` itself by test_stream_observer.py.
    """

    def on_chunk(event: Any) -> None:
        cls = type(event)
        plain = _ATTRIBUTE_EVENTS.get(cls)
        if plain is None:
            plain = not isinstance(event, Mapping)
            if cls.__module__.startswith("anthropic."):  # a bounded set of classes, none of them a Mapping
                _ATTRIBUTE_EVENTS[cls] = plain
        if plain:
            kind = getattr(event, "type", None)
            if kind != "message_start" and kind != "message_delta":
                return
        add(event)

    return on_chunk


def _body_info(response: Any) -> MessageInfo | None:
    """The usage in a raw response's body when the body was already read (no I/O happens here), else None."""
    try:
        content = response.http_response.content
    except Exception:  # httpx raises ResponseNotRead for a body still on the wire: never read it for the caller
        return None
    try:
        return message_info(json.loads(content))
    except ValueError:
        return None


def finish_raw_now(call: CallHandle, response: Any, call_site: str) -> bool:
    """Finish at once when the raw response is a fully read, non-streamed message (``with_raw_response``)."""
    info = _body_info(response)
    if info is None:
        return False
    finish_message(call, info, call_site)
    return True


class _RawResponseMixin:
    """Shared state of the raw-response proxies: the open call and the stream proxy handed out by ``parse()``."""

    _self_call: CallHandle
    _self_site: str
    _self_stream: Any

    def _self_observe(self, parsed: Any, stream_type: type[Any], is_async: bool) -> Any:
        if isinstance(parsed, stream_type):
            # parse() caches its result, so repeated calls must hand out one proxy, not one per call.
            current = self._self_stream
            if current is None or current.__wrapped__ is not parsed:
                current = wrap_stream(self._self_call, parsed, self._self_site, is_async=is_async)
                self._self_stream = current
            return current
        with guard("anthropic.raw_response"):
            finish_parsed_message(self._self_call, parsed, self._self_site)
        return parsed

    def _self_settle(self) -> None:
        # Closed or collected without parse(): take the usage from the body if it was read, else report it missing.
        if self._self_stream is not None or self._self_call.done:
            return
        info = _body_info(getattr(self, "__wrapped__", None))
        finish_message(self._self_call, info or MessageInfo(None, None, None, None), self._self_site)


class SyncRawResponseProxy(_RawResponseMixin, wrapt.ObjectProxy[Any]):
    """A transparent ``APIResponse`` whose ``parse()`` result (message or stream) is recorded once."""

    def __init__(self, response: Any, call: CallHandle, call_site: str) -> None:
        super().__init__(response)
        self._self_call = call
        self._self_site = call_site
        self._self_stream = None

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        """The SDK's ``parse()``, observed."""
        return self._self_observe(self.__wrapped__.parse(*args, **kwargs), anthropic.Stream, False)

    def close(self) -> None:
        """Close the response, then settle the call with what was read."""
        try:
            self.__wrapped__.close()
        finally:
            self._self_settle()

    def __del__(self) -> None:
        with guard("anthropic.raw_response.gc"):
            self._self_settle()


class AsyncRawResponseProxy(_RawResponseMixin, wrapt.ObjectProxy[Any]):
    """The async twin of :class:`SyncRawResponseProxy` (``await parse()``, ``await close()``)."""

    def __init__(self, response: Any, call: CallHandle, call_site: str) -> None:
        super().__init__(response)
        self._self_call = call
        self._self_site = call_site
        self._self_stream = None

    async def parse(self, *args: Any, **kwargs: Any) -> Any:
        """The SDK's ``parse()``, observed."""
        return self._self_observe(await self.__wrapped__.parse(*args, **kwargs), anthropic.AsyncStream, True)

    async def close(self) -> None:
        """Close the response, then settle the call with what was read."""
        try:
            await self.__wrapped__.close()
        finally:
            self._self_settle()

    def __del__(self) -> None:
        with guard("anthropic.raw_response.gc"):
            self._self_settle()

