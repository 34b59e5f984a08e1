"""Chat streams observed where the SDK reads server-sent events, before it builds a model for each chunk.

``Stream.__stream__`` (openai 1.66 to 3.x) pulls its events from ``self._iter_events()`` lazily, on the first
iteration, so an instance attribute set right after ``request`` returned the stream puts :func:`_watch_sync` (or its
async twin) between the SSE decoder and the SDK. From there:

* the usage-only chunk that ``stream_options.include_usage`` adds is taken out before the SDK parses it (when we added
  the option), or read alongside it (when the caller asked for usage) — its JSON is decoded once, by us;
* the id, model and tier are read from the usage chunk's JSON (they repeat on every chunk; without usage there is
  no event to key), so the caller's chunks pass through untouched and the caller gets the SDK's own ``Stream``
  object back (no proxy; per chunk only this generator's resume and a substring search);
* ``[DONE]``, the end of the body, an error, ``close()`` (the ``Stream.close`` patch) and garbage collection end the
  call exactly once (``CallHandle`` is finalize-once).

Callers often ``break`` on ``finish_reason``; OpenAI sends the usage chunk right after the last one, so after an event
that finishes a choice the watcher reads one event ahead: the usage chunk is recorded (and hidden when it is ours);
anything else is handed to the SDK next.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from openai import AsyncStream, Stream
from openai._streaming import ServerSentEvent

from paygentic_costs.instrumentation import CallHandle, guard

from ._extract import chat_usage

__all__ = ["HAS_SSE_SEAM", "WATCH_ATTRIBUTE", "ChatStreamWatch", "install"]

WATCH_ATTRIBUTE = "_paygentic_costs_watch"


def _event_data_is_private_field() -> bool:
    """``ServerSentEvent.data`` is a property over ``_data`` (1.66 to 3.x); the watcher reads the field itself, since
    a property is a Python call on every chunk of every stream."""
    try:
        return ServerSentEvent(data="probe")._data == "probe"
    except Exception:
        return False


# The seam this module relies on. Without it the usage chunk could not be hidden, so it is not asked for.
HAS_SSE_SEAM = (
    hasattr(Stream, "_iter_events") and hasattr(AsyncStream, "_iter_events") and _event_data_is_private_field()
)
_END: Any = object()
_HIDDEN: Any = object()
_GUARD = guard("openai.chat.stream")


def _carries_usage(data: str) -> bool:
    """``"usage"`` with a value (every chunk of a usage stream carries ``"usage": null``); substring tests only."""
    if '"usage"' not in data or '"usage":null' in data or '"usage": null' in data:
        return False
    at = data.find('"usage"')
    return not data[at + 7:at + 16].lstrip(" :\t\r\n").startswith("null")


def _finishes_a_choice(data: str) -> bool:
    if '"finish_reason"' not in data or '"finish_reason":null' in data or '"finish_reason": null' in data:
        return False
    at = data.find('"finish_reason"')
    return not data[at + 15:at + 24].lstrip(" :\t\r\n").startswith("null")


class ChatStreamWatch:
    """What one chat stream reported, and its call. Finishes the call at most once, whichever path ends it."""

    __slots__ = ("call", "call_site", "ended", "hide", "model", "request_id", "service_tier", "usage")

    def __init__(self, call: CallHandle, call_site: str, hide: bool) -> None:
        self.call = call
        self.ended = False  # finish() ran: [DONE], the end of the body, close() and collection all call it
        self.call_site = call_site
        self.hide = hide  # the usage-only chunk is ours (we added include_usage): the SDK never sees it
        self.usage: Mapping[str, Any] | None = None
        self.model: str | None = None
        self.request_id: str | None = None
        self.service_tier: str | None = None

    def _keys(self, chunk: Mapping[str, Any]) -> None:
        request_id, model, tier = chunk.get("id"), chunk.get("model"), chunk.get("service_tier")
        if isinstance(request_id, str) and request_id:
            self.request_id = request_id
        if isinstance(model, str) and model:
            self.model = model  # the usage chunk repeats it: the served snapshot is what the price must use
        if isinstance(tier, str) and tier:
            self.service_tier = tier

    def usage_chunk(self, data: str) -> bool:
        """Record the usage in ``data``; True when it is the usage-only chunk (``choices == []``).

        That chunk is the last one with data, so the call ends here: a caller that stopped reading (an async loop
        left with ``break`` is closed only later, by the event loop) is billed now.
        """
        usage_only = False
        with _GUARD:
            chunk = json.loads(data)
            if isinstance(chunk, dict) and isinstance(chunk.get("usage"), Mapping):
                self.usage = chunk["usage"]
                self._keys(chunk)
                usage_only = chunk.get("choices") == []
        if usage_only:
            self.finish()
        return usage_only

    def finish(self) -> None:
        """End the call with the usage seen so far (none: the core counts ``usage_missing`` naming the call site)."""
        if self.ended:
            return
        self.ended = True
        call = self.call
        with _GUARD:
            if self.usage is None:
                call.finish(None, call_site=self.call_site)
            else:
                call.finish_from(
                    chat_usage,
                    self.usage,
                    model=self.model,
                    request_id=self.request_id or None,
                    service_tier=self.service_tier,
                )

    def __del__(self) -> None:
        # The stream was dropped (never iterated, or abandoned): a generator that never started runs no cleanup.
        try:
            self.finish()
        except Exception:  # nothing may escape a finalizer; finish() reports its own errors
            pass


def _take_ahead(watch: ChatStreamWatch, ahead: Any) -> Any:
    """Record the usage of an event read ahead; ``_HIDDEN`` when it was our usage-only chunk, else the event."""
    if ahead is _END or isinstance(ahead, BaseException):
        return ahead
    data = ahead._data
    if _carries_usage(data) and watch.usage_chunk(data):
        return _HIDDEN
    return ahead


def _plain(data: str) -> bool:
    # A chunk that finishes no choice: the per-chunk test, one substring search for the API's compact JSON. Usage is
    # read from the chunks that finish a choice, the usage-only chunk (no choices) and [DONE]; a server that also
    # reports running usage on content chunks (vLLM's continuous usage stats) repeats the total on the last one.
    return '"finish_reason":null' in data or '"finish_reason": null' in data


# What to do with an event that is not a plain content chunk (see _classify).
_PASS, _HIDE, _AHEAD = "pass", "hide", "ahead"


def _classify(watch: ChatStreamWatch, data: str) -> str:
    """``[DONE]`` ends the call; our usage-only chunk is hidden; after a chunk that finishes a choice, read ahead."""
    if data.startswith("[DONE]"):
        watch.finish()  # the SDK stops reading here
    elif _carries_usage(data) and watch.usage_chunk(data) and watch.hide:
        return _HIDE  # ours: the caller never sees it
    elif watch.hide and watch.usage is None and _finishes_a_choice(data):
        # The caller may stop at this chunk: read one ahead (the usage chunk follows the last one) and record it
        # before handing this chunk on, since the caller may never come back.
        return _AHEAD
    return _PASS


def _watch_sync(watch: ChatStreamWatch, events: Iterator[Any]) -> Iterator[Any]:
    try:
        for sse in events:
            data = sse._data  # the field behind the .data property (see HAS_SSE_SEAM)
            if '"finish_reason":null' in data or '"finish_reason": null' in data:  # _plain(), inlined: every chunk
                yield sse
                continue
            while True:
                action = _classify(watch, data)
                if action is not _AHEAD:
                    if action is _PASS:
                        yield sse
                    break
                try:
                    ahead = _take_ahead(watch, next(events, _END))
                except Exception as exc:  # raised after this chunk, as the SDK would have raised it then
                    ahead = exc
                yield sse
                if isinstance(ahead, BaseException):
                    raise ahead
                if ahead is _END or ahead is _HIDDEN:
                    break
                sse, data = ahead, ahead._data
                if _plain(data):
                    yield sse
                    break
    except GeneratorExit:
        watch.finish()  # abandoned: whatever usage already arrived is what the provider billed
        raise
    except BaseException:
        watch.finish()
        raise
    watch.finish()  # the body ended without [DONE]


async def _watch_async(watch: ChatStreamWatch, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    # The async twin of _watch_sync: only the reads differ.
    try:
        async for sse in events:
            data = sse._data  # the field behind the .data property (see HAS_SSE_SEAM)
            if '"finish_reason":null' in data or '"finish_reason": null' in data:
                yield sse
                continue
            while True:
                action = _classify(watch, data)
                if action is not _AHEAD:
                    if action is _PASS:
                        yield sse
                    break
                try:
                    ahead = _take_ahead(watch, await events.__anext__())
                except StopAsyncIteration:
                    ahead = _END
                except Exception as exc:
                    ahead = exc
                yield sse
                if isinstance(ahead, BaseException):
                    raise ahead
                if ahead is _END or ahead is _HIDDEN:
                    break
                sse, data = ahead, ahead._data
                if _plain(data):
                    yield sse
                    break
    except GeneratorExit:
        watch.finish()
        raise
    except BaseException:
        watch.finish()
        raise
    watch.finish()


def install(stream: Any, call: CallHandle, call_site: str, *, hide: bool, is_async: bool) -> bool:
    """Put the watcher between ``stream``'s SSE decoder and the SDK; False when this SDK's stream has no such seam."""
    original = getattr(stream, "_iter_events", None)
    if original is None or getattr(stream, WATCH_ATTRIBUTE, None) is not None:
        return False
    watch = ChatStreamWatch(call, call_site, hide)
    if is_async:
        stream._iter_events = lambda: _watch_async(watch, original())
    else:
        stream._iter_events = lambda: _watch_sync(watch, original())
    setattr(stream, WATCH_ATTRIBUTE, watch)
    return True
