"""Stream handling: observe chunks as they pass, finish the call exactly once, hide the usage chunk we asked for.

The finalize-once machinery (exhaustion, ``close()``, ``with`` exit, errors, garbage collection) is the core's
:class:`SyncStreamProxy` / :class:`AsyncStreamProxy`; this module adds only the OpenAI-specific parts:

* the per-stream state that remembers usage, model, id and tier from the chunks (``on_chunk`` / ``on_end`` hooks);
* for chat streams where *we* injected ``stream_options.include_usage``, proxies that drop the extra usage-only
  chunk (``choices == []``) so the caller sees exactly the chunks it would have seen without instrumentation.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Any

from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseCompletedEvent, ResponseFailedEvent, ResponseIncompleteEvent

from paygentic_costs.instrumentation import AsyncStreamProxy, CallHandle, SyncStreamProxy

from ._extract import chat_usage, chunk_is_usage_only, detail, responses_usage

__all__ = [
    "AsyncHidingChatStream",
    "ChatStreamState",
    "ResponsesStreamState",
    "StreamState",
    "SyncHidingChatStream",
]

# The three events that end a Responses stream; each carries the full ``response`` with its ``usage``.
_TERMINAL_EVENTS = (ResponseCompletedEvent, ResponseIncompleteEvent, ResponseFailedEvent)
_TERMINAL_TYPES = frozenset({"response.completed", "response.incomplete", "response.failed"})
_NOTHING: Any = object()
# SDK event class -> isinstance(event, _TERMINAL_EVENTS), filled as the classes are first seen.
_TERMINAL_CLASSES: dict[type, bool] = {}


class StreamState:
    """What one stream has reported so far, and how to finish its call.

    Args:
        call: The open call; finished exactly once from :meth:`on_end`.
        call_site: Where the user started the stream (named in the ``usage_missing`` warning).
    """

    __slots__ = ("call", "call_site", "model", "request_id", "service_tier", "usage")

    def __init__(self, call: CallHandle, call_site: str) -> None:
        self.call = call
        self.call_site = call_site
        self.usage: Any = None
        self.model: str | None = None
        self.request_id: str | None = None
        self.service_tier: str | None = None

    def on_chunk(self, chunk: Any) -> None:
        """Observe one item (implemented per API)."""

    def normalised(self) -> Any:
        """The usage seen so far as a ``Usage``, or None."""
        return None

    def on_end(self, error: BaseException | None) -> None:
        """Finish the call with whatever usage already arrived; with none, the core counts ``usage_missing``."""
        # An error or an early exit is not a reason to drop usage the provider already reported: the tokens were
        # billed by OpenAI either way. Without usage nothing is invented (finish(None) warns, naming the call site).
        self.call.finish(
            self.normalised(),
            model=self.model,
            request_id=self.request_id,
            service_tier=self.service_tier,
            call_site=self.call_site,
        )


class ChatStreamState(StreamState):
    """Chat-completions stream: id/model/tier from the first chunk, usage from the usage chunk."""

    __slots__ = ()

    def on_chunk(self, chunk: Any) -> None:
        """Remember the id, model and tier once, and the usage when the usage chunk passes."""
        try:  # one attribute read on the common path (a content chunk without usage); try costs nothing until raised
            usage = chunk.usage
        except AttributeError:
            usage = None
        if self.request_id is None and isinstance(chunk, ChatCompletionChunk):
            self.request_id = chunk.id or None
            self.model = chunk.model or None
            self.service_tier = chunk.service_tier
        if usage is not None and isinstance(chunk, ChatCompletionChunk):
            self.usage = chunk.usage
            # The usage chunk repeats model and tier; they are the ones the price must use.
            self.model = chunk.model or self.model
            self.service_tier = chunk.service_tier or self.service_tier

    def normalised(self) -> Any:
        """The usage chunk's usage, normalised."""
        return chat_usage(self.usage)


class ResponsesStreamState(StreamState):
    """Responses stream: everything comes from the terminal event's ``response`` (``response.completed``...)."""

    __slots__ = ()

    def on_chunk(self, chunk: Any) -> None:
        """Take usage, model, id and tier from ``response.completed`` / ``.incomplete`` / ``.failed``."""
        # isinstance on the SDK's models is slow (their metaclass is an ABC): its answer is kept per SDK class.
        cls = type(chunk)
        terminal = _TERMINAL_CLASSES.get(cls)
        if terminal is None:
            terminal = isinstance(chunk, _TERMINAL_EVENTS)
            if cls.__module__.startswith("openai."):  # a bounded set of classes that never fake their __class__
                _TERMINAL_CLASSES[cls] = terminal
        if terminal:
            response: Any = chunk.response
        elif getattr(chunk, "type", None) in _TERMINAL_TYPES:
            # Version branch: older SDKs (seen on 1.66) cannot build the terminal event when the API sends output
            # items they do not know yet; the SDK then falls back to another union member that keeps ``response``
            # as a plain dict. Read it anyway: the usage in it is what OpenAI billed.
            response = getattr(chunk, "response", None)
        else:
            return
        self.usage = detail(response, "usage")
        self.model = detail(response, "model") or None
        self.request_id = detail(response, "id") or None
        self.service_tier = detail(response, "service_tier")

    def normalised(self) -> Any:
        """The terminal response's usage, normalised."""
        return responses_usage(self.usage)


def _finishes_a_choice(chunk: Any) -> bool:
    # A plain loop (not any() over a generator): this runs for every chunk of every stream.
    if isinstance(chunk, ChatCompletionChunk):
        for choice in chunk.choices:
            if choice.finish_reason is not None:
                return True
    return False


class _Lookahead:
    """A hiding proxy's own per-stream record, read once per item through its slot (proxy attributes are slow).

    ``final`` is the core proxy's record (the shared iterator, ``chunk`` and the once-only ``end``); ``ahead`` is the
    item (or deferred exception) read past a ``finish_reason`` chunk, handed out next by whichever path pulls next
    (a loop's generator or ``next()``).
    """

    __slots__ = ("ahead", "final", "state")

    def __init__(self, final: Any, state: ChatStreamState) -> None:
        self.final = final
        self.state = state
        self.ahead: Any = _NOTHING


class SyncHidingChatStream(SyncStreamProxy):
    """A chat stream whose request we extended with ``include_usage``: the usage-only chunk is consumed, not shown.

    OpenAI sends the usage chunk right after the last ``finish_reason`` chunk. Callers often ``break`` on
    ``finish_reason``; so after such a chunk the proxy reads one item ahead. When it is the usage chunk it is recorded
    and dropped; anything else (another choice's chunk, the end, an error) is handed out next, by the loop when it
    goes on or by whatever iterates the stream after a ``break``.

    ``state`` is a :class:`ChatStreamState`: its hook changes nothing for a chunk without usage once the id is known,
    so the per-item path calls it only for the first chunks and the usage chunk.
    """

    __slots__ = ("_self_hide",)

    def __init__(self, stream: Any, state: ChatStreamState) -> None:
        super().__init__(stream, on_chunk=state.on_chunk, on_end=state.on_end)
        self._self_hide = _Lookahead(self._self_final, state)

    def __iter__(self) -> Generator[Any, None, None]:
        # The per-item path of every instrumented chat stream (see SyncStreamProxy.__iter__): one generator resume
        # per item, the hook called only when it can change something. ``ahead`` lives in the shared record, not in
        # this frame, so explicit ``next()`` calls and later loops see an item read ahead here, and the reverse.
        hide = _sync_hide(self)
        final = hide.final
        state = hide.state
        iterator = final.iterator
        if iterator is None:
            iterator = final.iterator = iter(self.__wrapped__)
        chunk = final.chunk
        while True:
            ahead = hide.ahead
            if ahead is not _NOTHING:
                hide.ahead = _NOTHING
                if isinstance(ahead, StopIteration):
                    return
                if isinstance(ahead, BaseException):
                    raise ahead
                yield ahead
                continue
            try:
                for item in iterator:
                    if type(item) is ChatCompletionChunk:  # exact type: this loop runs per chunk
                        try:
                            usage = item.usage
                        except AttributeError:
                            usage = None
                        if usage is not None or state.request_id is None:
                            chunk(item)  # the id, model and tier of the first chunk; the usage of the usage chunk
                        choices = item.choices
                        if not choices:
                            if usage is not None:
                                continue  # ours: the caller did not ask for it
                        elif choices[-1].finish_reason is not None or (len(choices) > 1 and _finishes_a_choice(item)):
                            hide.ahead = self._read_ahead()
                    else:
                        chunk(item)
                    yield item
                    if hide.ahead is not _NOTHING:
                        break  # hand out the item read ahead (here, or by a next() call while suspended) first
                else:
                    final.end(None)
                    return
            except GeneratorExit:
                raise  # the caller left the loop: not the end of the stream
            except BaseException as exc:
                final.end(exc)
                raise

    def __next__(self) -> Any:
        # Explicit next(): the same steps as __iter__'s generator, on the same record.
        hide = _sync_hide(self)
        ahead = hide.ahead
        if ahead is not _NOTHING:
            hide.ahead = _NOTHING
            if isinstance(ahead, BaseException):
                raise ahead
            return ahead
        final = hide.final
        iterator = final.iterator
        if iterator is None:
            iterator = final.iterator = iter(self.__wrapped__)
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                final.end(None)
                raise
            except BaseException as exc:
                final.end(exc)
                raise
            if type(item) is not ChatCompletionChunk:  # exact type: this loop runs per chunk, keep it to one check
                final.chunk(item)
                return item
            try:
                usage = item.usage
            except AttributeError:
                usage = None
            if usage is not None or hide.state.request_id is None:
                final.chunk(item)  # the id, model and tier of the first chunk; the usage of the usage chunk
            choices = item.choices
            if not choices:
                if usage is not None:
                    continue  # ours: the caller did not ask for it
                return item
            if choices[-1].finish_reason is not None or (len(choices) > 1 and _finishes_a_choice(item)):
                hide.ahead = self._read_ahead()
            return item

    def _read_ahead(self) -> Any:
        # KeyboardInterrupt and friends are not deferred (only Exception is): they propagate now, as they would have.
        try:
            item = SyncStreamProxy.__next__(self)
        except StopIteration:
            return StopIteration()
        except Exception as exc:  # re-raised unchanged when the caller pulls the next item
            return exc
        return _NOTHING if chunk_is_usage_only(item) else item


class AsyncHidingChatStream(AsyncStreamProxy):
    """The async twin of :class:`SyncHidingChatStream`."""

    __slots__ = ("_self_hide",)

    def __init__(self, stream: Any, state: ChatStreamState) -> None:
        super().__init__(stream, on_chunk=state.on_chunk, on_end=state.on_end)
        self._self_hide = _Lookahead(self._self_final, state)

    async def _self_items(self) -> AsyncGenerator[Any, None]:
        # As in SyncHidingChatStream.__iter__ (AsyncStreamProxy.__aiter__ starts this generator).
        hide = _async_hide(self)
        final = hide.final
        state = hide.state
        iterator = final.iterator
        if iterator is None:
            iterator = final.iterator = self.__wrapped__.__aiter__()
        chunk = final.chunk
        while True:
            ahead = hide.ahead
            if ahead is not _NOTHING:
                hide.ahead = _NOTHING
                if isinstance(ahead, StopAsyncIteration):
                    return
                if isinstance(ahead, BaseException):
                    raise ahead
                yield ahead
                continue
            try:
                async for item in iterator:
                    if type(item) is ChatCompletionChunk:
                        try:
                            usage = item.usage
                        except AttributeError:
                            usage = None
                        if usage is not None or state.request_id is None:
                            chunk(item)
                        choices = item.choices
                        if not choices:
                            if usage is not None:
                                continue  # ours: the caller did not ask for it
                        elif choices[-1].finish_reason is not None or (len(choices) > 1 and _finishes_a_choice(item)):
                            hide.ahead = await self._read_ahead()
                    else:
                        chunk(item)
                    yield item
                    if hide.ahead is not _NOTHING:
                        break
                else:
                    final.end(None)
                    return
            except GeneratorExit:
                raise
            except BaseException as exc:
                final.end(exc)
                raise

    async def __anext__(self) -> Any:
        hide = _async_hide(self)
        ahead = hide.ahead
        if ahead is not _NOTHING:
            hide.ahead = _NOTHING
            if isinstance(ahead, BaseException):
                raise ahead
            return ahead
        final = hide.final
        iterator = final.iterator
        if iterator is None:
            iterator = final.iterator = self.__wrapped__.__aiter__()
        while True:
            try:
                item = await iterator.__anext__()
            except StopAsyncIteration:
                final.end(None)
                raise
            except BaseException as exc:
                final.end(exc)
                raise
            if type(item) is not ChatCompletionChunk:
                final.chunk(item)
                return item
            try:
                usage = item.usage
            except AttributeError:
                usage = None
            if usage is not None or hide.state.request_id is None:
                final.chunk(item)
            choices = item.choices
            if not choices:
                if usage is not None:
                    continue  # ours: the caller did not ask for it
                return item
            if choices[-1].finish_reason is not None or (len(choices) > 1 and _finishes_a_choice(item)):
                hide.ahead = await self._read_ahead()
            return item

    async def _read_ahead(self) -> Any:
        # CancelledError is not deferred (only Exception is): cancellation takes effect at this await, as it would have.
        try:
            item = await AsyncStreamProxy.__anext__(self)
        except StopAsyncIteration:
            return StopAsyncIteration()
        except Exception as exc:  # re-raised unchanged when the caller pulls the next item
            return exc
        return _NOTHING if chunk_is_usage_only(item) else item


# Slot readers for the per-item paths: they skip the proxy's own attribute lookup.
_sync_hide = SyncHidingChatStream.__dict__["_self_hide"].__get__
_async_hide = AsyncHidingChatStream.__dict__["_self_hide"].__get__
