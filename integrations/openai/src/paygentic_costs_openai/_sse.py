"""Chat streams observed in the bytes the SDK reads, before its SSE decoder splits them into events.

``Stream._iter_events`` (openai 1.66 to 3.x) decodes ``self.response.iter_bytes()``, looked up when the stream is
first iterated, so an attribute set on the response right after ``request`` returned the stream puts
:func:`_watch_sync` (or its async twin) between the body and the SDK. It sees each network read once — not each
event — and passes on only whole events (an incomplete last event waits for the rest of its bytes, as it would in the
SDK's decoder). In the bytes it passes on:

* the usage event that ``stream_options.include_usage`` adds (``"choices": []``) is found and, when we added the
  option, cut out, so the SDK never decodes or parses it and the caller's chunks are exactly the ones it would have
  got; written as OpenAI writes it (compact JSON), it is kept as bytes and decoded once, when the call is priced on
  the delivery worker (``finish_from`` with :func:`reported_from_event`), not on the caller's thread;
* a usage on any other event (servers that report usage on content chunks) is read and passed through; such
  servers repeat running totals, so the last usage object read is the one billed (each read is searched from
  its end, and the search stops at the first usage object);
* id, model and tier come from the usage event's JSON (they repeat on every chunk; without usage there is no event to
  key); the caller gets the SDK's own ``Stream`` object back (no proxy, nothing per chunk);
* the usage event, ``[DONE]``, the end of the body, an error, ``close()`` (the ``Stream.close`` patch) and garbage
  collection end the call exactly once (``CallHandle`` is finalize-once).

Callers often ``break`` on ``finish_reason``; OpenAI sends the usage event right after the last one. When bytes
that finish a choice arrive and no usage has been seen, the watcher reads on until it holds one more whole event
before passing them on, so a caller that stops there is still billed. An error while reading ahead is raised after
those bytes, where the SDK would have met it.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from openai import AsyncStream, Stream

from paygentic_costs.instrumentation import CallHandle, Reported, guard

from ._extract import chat_usage, reported_from_chunk

__all__ = ["HAS_SSE_SEAM", "WATCH_ATTRIBUTE", "ChatStreamWatch", "install", "reported_from_event"]

WATCH_ATTRIBUTE = "_paygentic_costs_watch"
# The seam this module relies on (the decoder reads ``self.response.iter_bytes()``; pinned by the tests on the
# oldest and newest supported SDK). Without it the usage event could not be hidden, so it is not asked for.
HAS_SSE_SEAM = hasattr(Stream, "_iter_events") and hasattr(AsyncStream, "_iter_events")
_GUARD = guard("openai.chat.stream")

# What a usage object holds and no other part of a chunk does: a ``*_tokens`` key (``"usage": null``, which every
# chunk of a usage stream carries, has none). A JSON string cannot contain an unescaped quote, so this never matches
# the model's output. A plain ``bytes`` search, not a regex: about three times faster per byte, and it runs on every
# byte of every stream.
_TOKENS_KEY = b'_tokens"'
# A choice's finish_reason set: a string (null on every other chunk); compact JSON (OpenAI's) or with spaces.
_FINISHES = (b'"finish_reason":"', b'"finish_reason": "')
# The usage-only event as OpenAI writes it (compact JSON): no choices, a usage object. Found in the bytes, it is kept
# as bytes and decoded on the delivery worker; any other event with a *_tokens key is decoded here, at once.
_NO_CHOICES = b'"choices":[]'
_USAGE_OBJECT = b'"usage":{'
_DONE = b"data: [DONE]"
_DONE_TAIL = len(_DONE) + 8  # [DONE] is the last event: only its bytes and their separator can follow it
# SSE ends an event with a blank line; lines end with CRLF, LF or CR. A separator that does not occur costs a full
# backward scan of the read, so bytes without a CR (OpenAI's, and most servers') are split on LF alone.
_SEPARATORS = (b"\r\n\r\n", b"\n\n", b"\r\r")
_LF_ONLY = (b"\n\n",)


def _separators(data: bytes) -> tuple[bytes, ...]:
    return _SEPARATORS if b"\r" in data else _LF_ONLY  # one memchr


def _whole_events(data: bytes) -> int:
    """Length of the leading part of ``data`` made of whole events (0: not one is complete yet)."""
    if data.endswith(b"\n\n") and b"\r" not in data:
        return len(data)  # the common read: LF-separated events, the last one complete
    end = 0
    for separator in _separators(data):
        at = data.rfind(separator)
        if at >= 0 and at + len(separator) > end:
            end = at + len(separator)
    return end


def _event_bounds(block: bytes, at: int) -> tuple[int, int]:
    """The event of ``block`` (whole events) that holds ``block[at]``: from after the previous blank line to after
    the next one."""
    if b"\r" not in block:  # LF-separated (OpenAI's): one separator to look for
        return _bounds_by(block, at, b"\n\n")
    bounds = [_bounds_by(block, at, separator) for separator in _SEPARATORS]
    return max(begin for begin, _ in bounds), min(end for _, end in bounds)


def _bounds_by(block: bytes, at: int, separator: bytes) -> tuple[int, int]:
    """:func:`_event_bounds` for one kind of blank line (the whole block where there is none)."""
    before, after = block.rfind(separator, 0, at), block.find(separator, at)
    return (0 if before < 0 else before + len(separator)), (len(block) if after < 0 else after + len(separator))


# ``raw_decode`` is ``json.loads`` without its two wrappers (encoding detection, the check for trailing data).
_decode_json = json.JSONDecoder().raw_decode


def _event_json(event: bytes) -> Any:
    """The JSON of one event's ``data:`` lines (joined with newlines, as the SSE format says)."""
    if event.startswith(b"data: {") and event.find(b"\n", 0, -2) < 0 and b"\r" not in event:
        # One data line holding an object (every OpenAI event); SSE is UTF-8 (the SDK decodes it so too).
        return _decode_json(event[6:].decode())[0]
    lines = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return json.loads(b"\n".join(lines).decode())


def reported_from_event(event: bytes) -> Reported | None:
    """The usage, model, id and tier of a usage-only event kept as bytes; run when the call is priced, off the
    caller's thread. None (counted ``usage_missing``) when the bytes do not decode to a chunk with a usage object."""
    try:
        chunk = _event_json(event)
    except ValueError:  # not JSON after all (UnicodeDecodeError is one too): nothing reported, nothing invented
        return None
    return reported_from_chunk(chunk)


class ChatStreamWatch:
    """What one chat stream reported, and its call. Finishes the call at most once, whichever path ends it."""

    __slots__ = ("call", "call_site", "ended", "held", "hide", "model", "request_id", "service_tier", "usage")

    def __init__(self, call: CallHandle, call_site: str, hide: bool) -> None:
        self.call = call
        self.call_site = call_site
        self.ended = False  # finish() ran: the usage event, [DONE], the end of the body, close() and collection call it
        self.hide = hide  # the usage-only event is ours (we added include_usage): the SDK never sees it
        self.held = b""  # an incomplete last event, waiting for the rest of its bytes
        # The last usage seen: its decoded object, or the bytes of a usage-only event (decoded when priced).
        self.usage: Mapping[str, Any] | bytes | None = None
        self.model: str | None = None
        self.request_id: str | None = None
        self.service_tier: str | None = None

    def take(self, read: bytes) -> bytes:
        """The whole events that ``read`` completes, scanned (empty while the last one is still incomplete)."""
        data = self.held + read if self.held else read
        whole = _whole_events(data)
        self.held = data[whole:]
        return self.scan(data[:whole]) if whole else b""

    def rest(self) -> bytes:
        """At the end of the body: a last event with no blank line after it, scanned (the SDK's decoder decides)."""
        held, self.held = self.held, b""
        return self.scan(held) if held else b""

    def scan(self, block: bytes) -> bytes:
        """Read the usage in ``block`` (whole events); return it without our usage-only event."""
        # From the end: usage is reported last (OpenAI's usage-only event comes right before [DONE]), and a server
        # that repeats it on content chunks repeats running totals, so the last usage object in the block is the one
        # to keep; the search stops there instead of running through the whole read.
        at = block.rfind(_TOKENS_KEY)
        usage_only = False
        while at >= 0:
            begin, end = _event_bounds(block, at)
            event = block[begin:end]
            if _NO_CHOICES in event and _USAGE_OBJECT in event:
                self.usage = event  # the usage-only event: decoded when the call is priced
                found: bool | None = True
            else:
                found = self.read_usage(event)
            if found is not None:
                usage_only = found
                if found and self.hide:
                    block = b"".join((memoryview(block)[:begin], block[end:]))  # one copy of the read, not two
                break
            at = block.rfind(_TOKENS_KEY, 0, begin)  # a *_tokens key outside a usage object: look further back
        if usage_only or block.find(_DONE, max(0, len(block) - _DONE_TAIL)) >= 0:
            # The usage-only event is the last one with data: the call ends here, so a caller that stopped reading
            # (an async loop left with `break` is closed only later, by the event loop) is billed now.
            self.finish()
        return block

    def read_usage(self, event: bytes) -> bool | None:
        """Record the usage in ``event``: None when it has none, else whether it is the usage-only event
        (``"choices": []``)."""
        try:  # not `with _GUARD`: no call until something fails (this runs on every stream)
            chunk = _event_json(event)
            usage = chunk.get("usage") if type(chunk) is dict else None
            if type(usage) is dict:  # JSON objects decode to dicts
                self.usage = usage
                request_id, model, tier = chunk.get("id"), chunk.get("model"), chunk.get("service_tier")
                if isinstance(request_id, str) and request_id:
                    self.request_id = request_id
                if isinstance(model, str) and model:
                    self.model = model  # the usage chunk repeats it: the served snapshot is what the price must use
                if isinstance(tier, str) and tier:
                    self.service_tier = tier
                choices: object = chunk.get("choices")
                return choices == []
        except Exception as exc:
            _GUARD.report(exc)
        return None

    def wants_more(self, block: bytes) -> bool:
        """``block`` (the bytes read last) finishes a choice and no usage came yet: the caller may stop after it."""
        return (
            self.hide and self.usage is None and not self.ended
            and (_FINISHES[0] in block or _FINISHES[1] in block)
        )

    def finish(self) -> None:
        """End the call with the usage seen so far (none: the core counts ``usage_missing`` naming the call site)."""
        if self.ended:
            return
        self.ended = True
        call, usage = self.call, self.usage
        try:
            if usage is None:
                call.finish(None, call_site=self.call_site)
            else:
                call.finish_from(
                    reported_from_event if type(usage) is bytes else chat_usage,
                    usage,
                    model=self.model,
                    request_id=self.request_id or None,
                    service_tier=self.service_tier,
                )
        except Exception as exc:
            _GUARD.report(exc)

    def __del__(self) -> None:
        # The stream was dropped (never iterated, or abandoned): a generator that never started runs no cleanup.
        try:  # noqa: SIM105 - not contextlib.suppress: that is three more calls for every stream
            self.finish()
        except Exception:  # nothing may escape a finalizer; finish() reports its own errors
            pass


def _watch_sync(watch: ChatStreamWatch, reads: Iterator[bytes]) -> Iterator[bytes]:
    try:
        for read in reads:
            block = latest = watch.take(read)
            error: Exception | None = None
            while block and watch.wants_more(latest):  # read on until one more whole event, before the caller gets
                try:  # these bytes (and again if that event finishes a choice too)
                    more = watch.take(next(reads))
                except StopIteration:
                    break
                except Exception as exc:  # raised after these bytes, as the SDK would have met it then
                    error = exc
                    break
                if more:
                    latest = more
                    block += more
            if block:
                yield block
            if error is not None:
                raise error
        rest = watch.rest()
        if rest:
            yield rest
    finally:
        # The end of the body (with or without [DONE]), an error, or abandonment (GeneratorExit): whatever usage
        # already arrived is what the provider billed. finish() runs once, whichever comes first.
        watch.finish()


async def _watch_async(watch: ChatStreamWatch, reads: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    # The async twin of _watch_sync: only the reads differ.
    try:
        async for read in reads:
            block = latest = watch.take(read)
            error: Exception | None = None
            while block and watch.wants_more(latest):
                try:
                    more = watch.take(await reads.__anext__())
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    error = exc
                    break
                if more:
                    latest = more
                    block += more
            if block:
                yield block
            if error is not None:
                raise error
        rest = watch.rest()
        if rest:
            yield rest
    finally:
        watch.finish()


def install(stream: Any, call: CallHandle, call_site: str, *, hide: bool, is_async: bool) -> bool:
    """Put the watcher between ``stream``'s body and its SSE decoder; False when this stream has no such seam.

    The replacement ``iter_bytes`` (async: ``aiter_bytes``) lives on the response, so it holds the response weakly:
    closing over the bound method would make a cycle (response, replacement, method, response) that only the cyclic
    GC frees: about 40 objects per stream left for it, and a dropped stream's watch finalised at the next collection
    instead of at once.
    """
    response = getattr(stream, "response", None)
    name = "aiter_bytes" if is_async else "iter_bytes"
    method = getattr(response, name, None)
    if method is None or getattr(stream, WATCH_ATTRIBUTE, None) is not None:
        return False
    watch = ChatStreamWatch(call, call_site, hide)
    function: Any = getattr(method, "__func__", None)
    own = function is not None and getattr(method, "__self__", None) is response
    target: Any = weakref.ref(response) if own else None
    other: Any = None if own else method  # not the response's own method (someone replaced it): called as it is

    def reads(*args: Any, **kwargs: Any) -> Any:
        body = function(target(), *args, **kwargs) if target is not None else other(*args, **kwargs)
        return _watch_async(watch, body.__aiter__()) if is_async else _watch_sync(watch, iter(body))

    setattr(response, name, reads)
    setattr(stream, WATCH_ATTRIBUTE, watch)
    return True
