"""The patches: one request chokepoint (sync + async), ``Stream.close`` and the stream helpers' ``close()``.

Raw responses (``with_raw_response`` / ``with_streaming_response``) get a ``parse()`` hook on the instance, so the
``parse()`` the SDK runs inside every normal call stays the SDK's own. Chat streams are watched where the SDK reads
the body's bytes (``_sse``); Responses streams go through the core's stream proxy.

Why the chokepoint: every OpenAI resource method — ``create``, the ``.parse()`` helpers (which bypass ``create`` and
call ``_post`` directly), the ``.stream()`` helpers, ``with_raw_response`` and ``with_streaming_response`` — ends in
``SyncAPIClient.request`` / ``AsyncAPIClient.request`` with a ``FinalRequestOptions`` (method, url, json body).
Resource objects bind ``client.post`` at construction, but ``post`` looks ``request`` up on the class at call time, so
patching the class covers clients created before ``instrument()`` and the ``with_raw_response`` wrappers that a
``cached_property`` captured early (unlike patching ``Completions.create``). Retries happen *inside* ``request``, so
one SDK call is one wrapper invocation is one event. Verified on openai 1.66.0 and 3.57.0 by the test suite.
"""

from __future__ import annotations

import copy
import functools
import inspect
import sys
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from openai import AsyncStream, Stream, _base_client
from openai._base_client import AsyncAPIClient, SyncAPIClient
from openai._legacy_response import LegacyAPIResponse
from openai._response import BaseAPIResponse
from openai.types.chat import ChatCompletion

from paygentic_costs.instrumentation import (
    AsyncStreamProxy,
    CallHandle,
    Instrumentor,
    Patch,
    SyncStreamProxy,
    guard,
)

from ._extract import chat_usage, reported_from_result
from ._sse import HAS_SSE_SEAM, WATCH_ATTRIBUTE
from ._sse import install as install_watch
from ._stream import ResponsesStreamState

__all__ = ["patches"]

# Billable routes (POST, path as the resource methods pass it — Azure rewrites it to /deployments/... later, in
# _build_request, so the bare path is what the wrapper sees for every client flavour).
_OPERATIONS: dict[str, str] = {
    "/chat/completions": "chat.completions",
    "/responses": "responses",
    "/embeddings": "embeddings",
}
# Header the SDK sets for with_raw_response ("true") and with_streaming_response ("stream"); openai._constants.
_RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"
# Frames that belong to the SDK or to us; the first frame outside them is the user's call site.
_OWN_MODULES = ("openai.", "paygentic_costs.", "paygentic_costs_openai.", "wrapt.", "httpx.", "httpx2.", "asyncio.")
_OWN_EXACT = frozenset({"openai", "paygentic_costs", "paygentic_costs_openai", "wrapt", "contextlib", "functools"})


# Code objects of frames that belong to the SDK or to us, and of the user's call sites; bounded by the code that ever
# calls the SDK. Sets, so the walk over the SDK's frames is a membership test per frame.
_OWN_CODES: set[Any] = set()
_USER_CODES: set[Any] = set()


# How far up the stack the last walk met the user's frame (counted from _call_site's caller, the last SDK-or-our
# frame below it). Checked first: a kind of call reaches the chokepoint through the same frames every time, and two
# frames checked cost less than a walk, which also makes a frame object of every frame it passes.
_user_depth = 0


def _call_site(operation: str, what: str) -> str:
    global _user_depth
    frame = None
    if _user_depth:  # is the user's frame where the last walk found it, below it one of ours or the SDK's?
        try:
            below = sys._getframe(_user_depth)  # from here: +1 for this frame, -1 for the frame below the user's
        except ValueError:  # a shallower stack
            below = None
        if below is not None and below.f_code in _OWN_CODES:
            frame = below.f_back
            if frame is not None and frame.f_code not in _USER_CODES:
                frame = None
    if frame is None:
        frame, _user_depth = _walk_to_user(sys._getframe(1))
    if frame is None:
        return f"openai {operation} {what}"
    return f"openai {operation} {what} at {frame.f_code.co_filename}:{frame.f_lineno}"


def _walk_to_user(frame: types.FrameType | None) -> tuple[types.FrameType | None, int]:
    """The first frame that is neither the SDK's nor ours, from ``frame`` up, and how many frames up it is."""
    own_codes = _OWN_CODES
    depth = 0
    while frame is not None:
        code = frame.f_code
        if code not in own_codes:
            if code in _USER_CODES:
                return frame, depth
            module = frame.f_globals.get("__name__", "")
            own = module in _OWN_EXACT or module.startswith(_OWN_MODULES)
            if len(own_codes) + len(_USER_CODES) < 10_000:
                (own_codes if own else _USER_CODES).add(code)
            if not own:
                return frame, depth
        frame = frame.f_back
        depth += 1
    return None, 0


# Guards are stateless: one per place, built once rather than per call.
_PREPARE_GUARD = guard("openai.prepare")
_CLOSE_GUARD = guard("openai.stream.close")
_PARSE_GUARD = guard("openai.raw_response.parse")
_FINISH_GUARDS = {operation: guard(f"openai.{operation}.finish") for operation in _OPERATIONS.values()}


class _Prepared:
    """What the wrapper decided before sending: the operation, the (maybe extended) arguments, stream handling."""

    __slots__ = ("args", "hide_usage_chunk", "kwargs", "model", "operation", "raw")

    def __init__(self, operation: str, model: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.operation = operation
        self.model = model
        self.args = args
        self.kwargs = kwargs
        self.hide_usage_chunk = False
        self.raw = False


def _prepare(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Prepared | None:
    """Classify one ``request(cast_to, options, *, stream, stream_cls)`` call; None when it is not billable."""
    options = args[1] if len(args) > 1 else kwargs.get("options")
    if options is None:
        return None
    operation = _OPERATIONS.get(options.url)
    if operation is None:
        return None
    method = options.method
    if method != "post" and method.lower() != "post":
        return None
    body = options.json_data
    if type(body) is not dict and not isinstance(body, Mapping):
        body = {}
    model = body.get("model")
    prepared = _Prepared(operation, model if type(model) is str else None, args, kwargs)
    headers = options.headers
    if headers and (type(headers) is dict or isinstance(headers, Mapping)):
        prepared.raw = bool(headers.get(_RAW_RESPONSE_HEADER))
    if operation == "chat.completions" and body.get("stream") is True and not prepared.raw and HAS_SSE_SEAM:
        _ask_for_usage(prepared, options, body)
    return prepared


def _ask_for_usage(prepared: _Prepared, options: Any, body: Mapping[str, Any]) -> None:
    """Add ``stream_options.include_usage`` to a chat stream the caller did not ask usage for.

    Without it OpenAI chat streams carry no usage at all. Only non-raw streams get it: there the proxy can hide the
    extra chunk; a raw (``with_raw_response`` / ``with_streaming_response``) body is the caller's bytes to read.
    """
    extra = options.extra_json
    if extra is not None and isinstance(extra, Mapping) and "stream_options" in extra:  # None: no ABC check
        return  # extra_body wins over the body when the SDK merges them: the caller's explicit choice, left alone
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, Mapping):
        return  # not a shape we understand: send exactly what the caller built
    if stream_options is not None and stream_options.get("include_usage") is True:
        return  # the caller asked for usage and sees the usage chunk as usual
    # The SDK's own post() builds the options for this one call and keeps them nowhere else: they are extended in
    # place. Options from anyone else (client.request(...) called directly) may be shared with another thread, so
    # they are copied and the caller's stay as they were.
    try:  # frames: 0 this one, 1 _prepare, 2 our wrapper, 3 the core's patched function, 4 request's caller
        own = sys._getframe(4).f_code in _SDK_POST_CODES
    except ValueError:  # a shallower stack: not the SDK's post
        own = False
    extended = options if own else copy.copy(options)
    json_data = {**body, "stream_options": {**(stream_options or {}), "include_usage": True}}
    fields = getattr(extended, "__dict__", None)
    if fields is not None and "json_data" in fields:
        # A plain field, already set (the body came from it): pydantic's __setattr__ would only add it to the set
        # fields again, through three Python calls.
        fields["json_data"] = json_data
    else:
        extended.json_data = json_data
    if not own:
        if len(prepared.args) > 1:
            prepared.args = (prepared.args[0], extended, *prepared.args[2:])
        else:
            prepared.kwargs = {**prepared.kwargs, "options": extended}
    prepared.hide_usage_chunk = True


def _sdk_post_codes() -> frozenset[Any]:
    """The code of the SDK's ``SyncAPIClient.post`` and ``AsyncAPIClient.post`` (each builds a ``FinalRequestOptions``
    for one call and passes it straight to ``request``); none when ``post`` is not the SDK's own function."""
    codes = set()
    for owner in (SyncAPIClient, AsyncAPIClient):
        post = getattr(owner, "post", None)  # not the class dict: a refactor moving it to a base must not fail import
        code = getattr(inspect.unwrap(post), "__code__", None) if post is not None else None
        if code is not None and code.co_filename == _base_client.__file__:
            codes.add(code)
    return frozenset(codes)


_SDK_POST_CODES = _sdk_post_codes()


class _Pending:
    """A raw response whose usage arrives only when the caller parses it."""

    __slots__ = ("call", "call_site", "finalizer", "operation", "proxy")

    def __init__(self, call: CallHandle, operation: str, call_site: str, finalizer: weakref.finalize[Any, Any]) -> None:
        self.call = call
        self.operation = operation
        self.call_site = call_site
        self.finalizer = finalizer
        self.proxy: Any = None


def _missing(call: CallHandle, call_site: str) -> None:
    with guard("openai.raw_response.gc"):
        call.finish(None, call_site=call_site)


class _Wrappers:
    """The wrapper functions, bound to one instrumentor (for ``start_call`` and its enabled flag)."""

    def __init__(self, instrumentor: Instrumentor) -> None:
        self._instrumentor = instrumentor
        # Raw responses awaiting .parse(); weak keys so an unparsed response still dies (its finalizer then counts
        # usage_missing) and nothing here keeps an HTTP response alive.
        self._pending: weakref.WeakKeyDictionary[Any, _Pending] = weakref.WeakKeyDictionary()

    # -- the chokepoint ---------------------------------------------------------------------------------------------
    # Every SDK call runs through here: try/except instead of `with guard(...)` (no call until something fails).

    def request(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``SyncAPIClient.request``: opens the call, sends, then finishes it (or hands it to a stream/raw response)."""
        try:
            prepared = _prepare(args, kwargs)
            call = None if prepared is None else self._instrumentor.start_call(prepared.operation, model=prepared.model)
        except Exception as exc:  # request extraction failed: the SDK call proceeds, with no event
            _PREPARE_GUARD.report(exc)
            call = None
        if call is None:  # not billable, disabled, suppressed, or an outer layer records this call
            return wrapped(*args, **kwargs)
        assert prepared is not None
        with call:  # marks the call active (no double count below us); an SDK error fails it and propagates as is
            result = wrapped(*prepared.args, **prepared.kwargs)
        return self._after(prepared, call, result)

    async def arequest(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``AsyncAPIClient.request``: the async twin of :meth:`request`."""
        try:
            prepared = _prepare(args, kwargs)
            call = None if prepared is None else self._instrumentor.start_call(prepared.operation, model=prepared.model)
        except Exception as exc:
            _PREPARE_GUARD.report(exc)
            call = None
        if call is None:
            return await wrapped(*args, **kwargs)
        assert prepared is not None
        with call:
            result = await wrapped(*prepared.args, **prepared.kwargs)
        return self._after(prepared, call, result)

    def _after(self, prepared: _Prepared, call: CallHandle, result: Any) -> Any:
        """Finish the call from the SDK's result, or hand it to the stream / raw response that will; returns what
        the caller gets (the result itself, or a Responses stream's proxy)."""
        try:
            kind = _KINDS.get(type(result)) or _kind(result)
            if kind is _CHAT and prepared.operation == "chat.completions":
                _finish_chat(call, result)  # the common case first
            elif kind is _RAW:
                self._hold_raw(prepared, call, result)
            elif kind is _STREAM:
                return self._proxy_stream(prepared.operation, call, result, prepared.hide_usage_chunk)
            else:
                _finish_result(prepared.operation, call, result)
        except Exception as exc:
            _FINISH_GUARDS[prepared.operation].report(exc)
        return result

    # -- streams ----------------------------------------------------------------------------------------------------

    def _proxy_stream(self, operation: str, call: CallHandle, stream: Any, hide_usage_chunk: bool) -> Any:
        site = _call_site(operation, "stream")
        is_async = isinstance(stream, AsyncStream)
        if operation == "chat.completions":
            if not install_watch(stream, call, site, hide=hide_usage_chunk, is_async=is_async):
                call.finish(None, call_site=site)  # no SSE seam (never in the supported range): counted, not guessed
            return stream  # the SDK's own stream: watched in the bytes it decodes (see _sse), nothing per chunk
        if operation != "responses":
            return stream  # no streaming variant of this endpoint exists; leave it untouched
        state = ResponsesStreamState(call, site)
        proxy_cls = AsyncStreamProxy if is_async else SyncStreamProxy
        return proxy_cls(stream, on_chunk=state.on_chunk, on_end=state.on_end)

    # -- raw responses ----------------------------------------------------------------------------------------------

    def _hold_raw(self, prepared: _Prepared, call: CallHandle, response: Any) -> None:
        # with_raw_response / with_streaming_response return the HTTP response unparsed; usage exists only once the
        # caller parses it. Parsing it ourselves would evaluate lazily-read bodies early, so wait for parse() — and
        # if the response dies unparsed, count usage_missing (naming the call site) instead of guessing.
        site = _call_site(prepared.operation, "raw response")
        finalizer = weakref.finalize(response, _missing, call, site)
        finalizer.atexit = False  # at interpreter exit the runtime may be gone; a warning then would only be noise
        self._pending[response] = _Pending(call, prepared.operation, site, finalizer)
        self._watch_parse(response)

    def _watch_parse(self, response: Any) -> None:
        """Hook this response's ``parse()`` only, as an instance attribute (a method bound to it).

        Normal calls are parsed by the SDK inside ``request()``; a class-level patch would sit on every one of them.
        The bound method keeps ``response.parse()`` on a temporary working (the hook must hold the response). That
        is a reference cycle: it is removed once the call is billed, so a parsed response is freed as usual; an
        unparsed one is collected by the cyclic collector, and its finalizer counts it then. A raw stream keeps the
        hook, so that every ``parse()`` returns the same proxy.
        """
        unbound = type(response).parse
        parse: Callable[..., Any]
        if inspect.iscoroutinefunction(unbound):

            async def parse(target: Any, *args: Any, **kwargs: Any) -> Any:
                return self._after_parse(target, await unbound(target, *args, **kwargs))
        else:

            def parse(target: Any, *args: Any, **kwargs: Any) -> Any:
                return self._after_parse(target, unbound(target, *args, **kwargs))

        functools.update_wrapper(parse, unbound)
        response.parse = types.MethodType(parse, response)

    def _after_parse(self, instance: Any, parsed: Any) -> Any:
        out = parsed
        with _PARSE_GUARD:
            out = self._parsed(instance, parsed)
        return out

    def _parsed(self, instance: Any, parsed: Any) -> Any:
        pending = self._pending.get(instance)
        if pending is None:
            return parsed
        if isinstance(parsed, (Stream, AsyncStream)):
            if pending.proxy is None:
                # A raw stream: the caller did not get include_usage from us (it may read the raw bytes instead).
                pending.finalizer.detach()
                pending.proxy = self._proxy_stream(pending.operation, pending.call, parsed, hide_usage_chunk=False)
            return pending.proxy  # the same proxy for every parse(), as the SDK caches the same stream
        if _finish_result(pending.operation, pending.call, parsed):
            pending.finalizer.detach()
            del self._pending[instance]
            vars(instance).pop("parse", None)  # billed: the class's parse() again, and no cycle through the hook
        return parsed  # parse(to=...) into another type keeps waiting for a parse that yields the usage

    # -- stream helpers ---------------------------------------------------------------------------------------------

    def helper_close(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``ChatCompletionStream.close`` / ``ResponseStream.close``: finish the call when a ``.stream()`` block exits.

        The helpers close the HTTP response directly, not the raw stream they iterate (our proxy), so without this
        an early exit from ``with client.chat.completions.stream(...)`` would be seen only at garbage collection.
        """
        try:
            return wrapped(*args, **kwargs)
        finally:
            with guard("openai.stream_helper.close"):
                raw = getattr(instance, "_raw_stream", None)  # the helper's private field; pinned by a test
                if isinstance(raw, SyncStreamProxy):
                    raw.close()
                else:
                    _finish_watched(raw)

    async def ahelper_close(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``AsyncChatCompletionStream.close`` / ``AsyncResponseStream.close``: async twin of :meth:`helper_close`."""
        try:
            return await wrapped(*args, **kwargs)
        finally:
            with guard("openai.stream_helper.close"):
                raw = getattr(instance, "_raw_stream", None)
                if isinstance(raw, AsyncStreamProxy):
                    await raw.close()
                else:
                    _finish_watched(raw)

    def stream_close(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``Stream.close`` / ``AsyncStream.close`` (and ``with`` exit): a watched chat stream ends its call now."""
        try:
            return wrapped(*args, **kwargs)
        finally:
            _finish_watched(instance)

    async def astream_close(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``AsyncStream.close``: async twin of :meth:`stream_close`."""
        try:
            return await wrapped(*args, **kwargs)
        finally:
            _finish_watched(instance)


def _finish_watched(stream: Any) -> None:
    """End the call of a watched chat stream (a no-op for any other object, or once the call has ended)."""
    watch = getattr(stream, WATCH_ATTRIBUTE, None) if stream is not None else None
    if watch is not None:
        with _CLOSE_GUARD:
            watch.finish()


# What a result is, by its class: isinstance against the SDK's pydantic models goes through ABCMeta (slow), and the
# answer never changes for a class. Bounded: only the SDK's own classes are remembered.
_CHAT, _RAW, _STREAM, _OTHER = "chat", "raw", "stream", "other"
_KINDS: dict[type, str] = {}


def _kind(result: Any) -> str:
    if isinstance(result, (LegacyAPIResponse, BaseAPIResponse)):
        kind = _RAW
    elif isinstance(result, (Stream, AsyncStream)):
        kind = _STREAM
    elif isinstance(result, ChatCompletion):
        kind = _CHAT
    else:
        kind = _OTHER
    cls = type(result)
    module = cls.__module__  # "openai" itself for the re-exported Stream classes
    if (module == "openai" or module.startswith("openai.")) and len(_KINDS) < 1000:
        _KINDS[cls] = kind
    return kind


def _finish_chat(call: CallHandle, result: Any) -> None:
    """The common case: only the three keys are read here; the usage object is normalised off this thread."""
    usage = result.usage
    if usage is None:
        call.finish(None, call_site=_call_site("chat.completions", "call"))
        return
    model, request_id, tier = result.model, result.id, result.service_tier
    call.finish_from(
        chat_usage,
        usage,
        model=model if type(model) is str and model else None,
        request_id=request_id if type(request_id) is str and request_id else None,
        service_tier=tier if type(tier) is str and tier else None,
    )


def _finish_result(operation: str, call: CallHandle, result: Any) -> bool:
    """Finish ``call`` from a parsed result; False when the result is not this operation's type."""
    if operation == "chat.completions" and isinstance(result, ChatCompletion):
        _finish_chat(call, result)
        return True
    reported = reported_from_result(operation, result)
    if reported is None:
        return False
    call.finish(
        reported.usage,
        model=reported.model,
        request_id=reported.request_id,
        service_tier=reported.service_tier,
        # Only needed for the usage_missing warning; walking the stack is skipped on the normal path.
        call_site=_call_site(operation, "call") if reported.usage is None else None,
    )
    return True


def patches(instrumentor: Instrumentor) -> Iterable[Patch]:
    """The patches of the OpenAI integration, in the order they are applied."""
    w = _Wrappers(instrumentor)
    return [
        Patch("openai._base_client", "SyncAPIClient.request", w.request,
              "opens one cost.ai.inference call per billable request (chat, responses, embeddings; every variant)"),
        Patch("openai._base_client", "AsyncAPIClient.request", w.arequest,
              "async twin of SyncAPIClient.request"),
        Patch("openai._streaming", "Stream.close", w.stream_close,
              "a chat stream closed before its end (or left by `with`) finishes its call at once"),
        Patch("openai._streaming", "AsyncStream.close", w.astream_close,
              "async twin of Stream.close"),
        # The helper classes live under openai.lib.streaming since the Responses API shipped (1.66); optional so a
        # future refactor of the helpers degrades to finalization at garbage collection, not an instrument() error.
        Patch("openai.lib.streaming.chat", "ChatCompletionStream.close", w.helper_close,
              "finishes the call when a chat .stream() block exits early", optional=True),
        Patch("openai.lib.streaming.chat", "AsyncChatCompletionStream.close", w.ahelper_close,
              "finishes the call when an async chat .stream() block exits early", optional=True),
        Patch("openai.lib.streaming.responses", "ResponseStream.close", w.helper_close,
              "finishes the call when a responses .stream() block exits early", optional=True),
        Patch("openai.lib.streaming.responses", "AsyncResponseStream.close", w.ahelper_close,
              "finishes the call when an async responses .stream() block exits early", optional=True),
    ]
