"""Pure translation of Anthropic usage into the normalised ``Usage`` (no SDK import, no I/O).

Every function accepts the SDK's pydantic objects (``Usage``, ``BetaUsage``, ``MessageDeltaUsage``, stream events,
``Message``) **or** the same data as decoded JSON (a raw response body), because both shapes reach the wrappers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from paygentic_costs.instrumentation import Reported, Usage

__all__ = ["MessageInfo", "StreamAccumulator", "message_info", "normalise", "reported_from_usage", "service_tier_of"]

# Fields a message_delta may carry as cumulative totals; each overwrites the value from message_start.
_DELTA_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
                 "server_tool_use")


def _get(obj: object, name: str) -> object:
    """``obj.name`` for SDK models, ``obj[name]`` for decoded JSON; None when absent."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(obj: object, name: str) -> int | None:
    value = _get(obj, name)
    # bool is an int subclass; a provider never reports token counts as booleans, so treat one as absent.
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _str(obj: object, name: str) -> str | None:
    value = _get(obj, name)
    return value if isinstance(value, str) and value else None


def normalise(usage: object) -> Usage | None:
    """Anthropic usage -> ``Usage`` (all input in ``input_tokens``, cache parts as subsets).

    Anthropic reports cache reads and writes *outside* ``input_tokens``, so the total input is
    ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``. Cache writes are split by TTL from
    ``cache_creation.ephemeral_{5m,1h}_input_tokens``; without that breakdown every write counts as a 5-minute write.

    Args:
        usage: ``Message.usage`` (stable or beta), or a merged stream usage mapping, or its JSON.

    Returns:
        The normalised usage, or None when nothing was reported.
    """
    if usage is None:
        return None
    uncached = _int(usage, "input_tokens")
    output = _int(usage, "output_tokens")
    read = _int(usage, "cache_read_input_tokens") or 0
    breakdown = _get(usage, "cache_creation")
    five_min = _int(breakdown, "ephemeral_5m_input_tokens")
    one_hour = _int(breakdown, "ephemeral_1h_input_tokens")
    written = _int(usage, "cache_creation_input_tokens")
    if written is None:
        # Only the TTL breakdown was reported: the total is its sum.
        written = (five_min or 0) + (one_hour or 0)
    # The 1-hour part comes from the breakdown; it can never exceed the total (a stream's message_delta may update the
    # total after message_start sent the breakdown), and the rest of the writes are 5-minute writes.
    written_1h = min(one_hour or 0, written)
    written_5m = written - written_1h
    searches = _int(_get(usage, "server_tool_use"), "web_search_requests")
    if uncached is None and output is None and not (read or written or searches):
        return None
    return Usage(
        input_tokens=(uncached or 0) + read + written,
        output_tokens=output if output is not None else 0,
        cache_read_tokens=read or None,
        cache_write_tokens=written_5m or None,
        cache_write_1h_tokens=written_1h or None,
        web_search_requests=searches or None,
    )


def service_tier_of(usage: object) -> str | None:
    """The tier that served the request (``standard``, ``priority``, ``batch``), as reported in ``usage``."""
    return _str(usage, "service_tier")


def reported_from_usage(usage: object) -> Reported:
    """A message's usage object -> its normalised usage and tier; run off the caller's thread (``finish_from``)."""
    return Reported(normalise(usage), service_tier=service_tier_of(usage))


@dataclass(frozen=True)
class MessageInfo:
    """What one finished message tells the recorder."""

    usage: Usage | None
    model: str | None
    request_id: str | None
    service_tier: str | None


def message_info(message: object) -> MessageInfo:
    """Usage, reported model, message id (``msg_…``) and service tier of a ``Message`` / ``BetaMessage`` / JSON."""
    raw_usage = _get(message, "usage")
    return MessageInfo(
        usage=normalise(raw_usage),
        model=_str(message, "model"),
        request_id=_str(message, "id"),
        service_tier=service_tier_of(raw_usage),
    )


class StreamAccumulator:
    """Folds ``RawMessageStreamEvent``s into the final usage, observing each event once and buffering nothing else.

    ``message_start`` carries the full usage (input, cache reads/writes with the TTL breakdown, service tier);
    each ``message_delta`` carries **running totals** (never increments), so the last one overwrites — exactly the
    SDK's own ``accumulate_event`` rule. Several deltas can arrive when server tools run.
    """

    __slots__ = ("_delta", "_start", "model", "request_id")

    def __init__(self) -> None:
        self._start: object = None
        self._delta: object = None
        self.model: str | None = None
        self.request_id: str | None = None

    def add(self, event: object) -> None:
        """Observe one stream event (others than message_start / message_delta are ignored)."""
        kind = _get(event, "type")
        if kind == "message_start":
            message = _get(event, "message")
            self._start = _get(message, "usage")
            self.model = _str(message, "model") or self.model
            self.request_id = _str(message, "id") or self.request_id
        elif kind == "message_delta":
            # A running total: replace, never add.
            self._delta = _get(event, "usage")

    @property
    def seen_usage(self) -> bool:
        """True once any usage-bearing event arrived."""
        return self._start is not None or self._delta is not None

    def merged(self) -> dict[str, object]:
        """message_start's usage with every non-null field of the last message_delta written over it."""
        merged: dict[str, object] = {}
        for name in (*_DELTA_FIELDS, "cache_creation", "service_tier"):
            value = _get(self._start, name)
            if value is not None:
                merged[name] = value
        for name in _DELTA_FIELDS:
            value = _get(self._delta, name)
            if value is not None:
                merged[name] = value
        return merged

    def result(self) -> MessageInfo:
        """The usage reported so far (None when no usage event arrived)."""
        if not self.seen_usage:
            return MessageInfo(None, self.model, self.request_id, None)
        merged = self.merged()
        return MessageInfo(normalise(merged), self.model, self.request_id, service_tier_of(merged))
