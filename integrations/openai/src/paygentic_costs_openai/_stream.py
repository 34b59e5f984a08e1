"""Responses streams: observe events as they pass through the core's stream proxy, finish the call exactly once.

The finalize-once machinery (exhaustion, ``close()``, ``with`` exit, errors, garbage collection) is the core's
:class:`SyncStreamProxy` / :class:`AsyncStreamProxy`; this module adds the per-stream state that takes usage, model,
id and tier from the terminal event (``on_chunk`` / ``on_end`` hooks). Chat streams are watched in the body's bytes
instead (``_sse``).
"""

from __future__ import annotations

from typing import Any

from openai.types.responses import ResponseCompletedEvent, ResponseFailedEvent, ResponseIncompleteEvent

from paygentic_costs.instrumentation import CallHandle

from ._extract import detail, responses_usage

__all__ = ["ResponsesStreamState", "StreamState"]

# The three events that end a Responses stream; each carries the full ``response`` with its ``usage``.
_TERMINAL_EVENTS = (ResponseCompletedEvent, ResponseIncompleteEvent, ResponseFailedEvent)
_TERMINAL_TYPES = frozenset({"response.completed", "response.incomplete", "response.failed"})
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
