"""Usage (what a provider reports) and Price (what it cost). Pure data, no third-party imports."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from operator import attrgetter
from types import MappingProxyType

__all__ = ["Price", "Usage"]

_EMPTY: Mapping[str, Decimal] = MappingProxyType({})


@dataclass(frozen=True, slots=True, init=False)
class Usage:
    """Normalised usage of one operation (OpenTelemetry GenAI convention).

    ``input_tokens`` is ALL input, cached included: ``cache_read_tokens`` and ``cache_write_tokens`` (5-minute writes)
    / ``cache_write_1h_tokens`` are parts of it. ``output_tokens`` is ALL output: ``reasoning_tokens`` is part of it.
    Integrations convert provider shapes (Anthropic reports cache outside ``input_tokens``; Gemini reports thinking
    outside candidates) before building a ``Usage``. Each bucket is priced once.

    Token counts are non-negative ints; ``units`` / ``seconds`` are non-negative finite Decimals (ints accepted).
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    reasoning_tokens: int | None = None
    input_audio_tokens: int | None = None
    output_audio_tokens: int | None = None
    web_search_requests: int | None = None
    requests: int | None = None
    units: Decimal | None = None
    seconds: Decimal | None = None

    # Hand-written rather than generated: integrations build one Usage per provider call, and the generated frozen
    # __init__ plus a validating __post_init__ cost about five times this straight-line version.
    def __init__(
        self,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cache_read_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        cache_write_1h_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        input_audio_tokens: int | None = None,
        output_audio_tokens: int | None = None,
        web_search_requests: int | None = None,
        requests: int | None = None,
        units: Decimal | int | None = None,
        seconds: Decimal | int | None = None,
    ) -> None:
        tokens = (input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens,
                  reasoning_tokens, input_audio_tokens, output_audio_tokens, web_search_requests, requests)
        # Checked in C (types, then the smallest non-zero count); only a failure walks the fields for its message.
        if not _PLAIN_COUNT_TYPES.issuperset(map(type, tokens)) or min(filter(None, tokens), default=0) < 0:
            for index, value in enumerate(tokens):
                if value is not None and (type(value) is not int or value < 0):
                    _check_count(_TOKEN_FIELDS[index], value)
        put = object.__setattr__
        put(self, "input_tokens", input_tokens)
        put(self, "output_tokens", output_tokens)
        put(self, "cache_read_tokens", cache_read_tokens)
        put(self, "cache_write_tokens", cache_write_tokens)
        put(self, "cache_write_1h_tokens", cache_write_1h_tokens)
        put(self, "reasoning_tokens", reasoning_tokens)
        put(self, "input_audio_tokens", input_audio_tokens)
        put(self, "output_audio_tokens", output_audio_tokens)
        put(self, "web_search_requests", web_search_requests)
        put(self, "requests", requests)
        put(self, "units", None if units is None else _quantity("units", units))
        put(self, "seconds", None if seconds is None else _quantity("seconds", seconds))

    def as_dict(self) -> dict[str, int | Decimal]:
        """The buckets that are set, by name (what goes into the event's ``data``)."""
        buckets = zip(_USAGE_FIELDS, _all_buckets(self), strict=True)
        return {name: value for name, value in buckets if value is not None}

    @property
    def is_empty(self) -> bool:
        """True when the provider reported nothing at all."""
        return _all_buckets(self).count(None) == len(_USAGE_FIELDS)


_USAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Usage))
_TOKEN_FIELDS: tuple[str, ...] = tuple(name for name in _USAGE_FIELDS if name not in ("units", "seconds"))
_PLAIN_COUNT_TYPES = frozenset({int, type(None)})
# Every bucket's value, in field order, read in C (a precomputed getter: dataclasses.fields() is slow on hot paths).
_all_buckets: Callable[[Usage], tuple[int | Decimal | None, ...]] = attrgetter(*_USAGE_FIELDS)


def _check_count(name: str, value: object) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return  # an int subclass (e.g. IntEnum) is fine
    raise ValueError(f"Usage.{name} must be a non-negative int, got {value!r}")


def _quantity(name: str, value: object) -> Decimal:
    if not isinstance(value, (int, Decimal)) or isinstance(value, bool):
        raise TypeError(f"Usage.{name} must be an int or Decimal, got {type(value).__name__}")
    quantity = Decimal(value) if isinstance(value, int) else value
    if not quantity.is_finite() or quantity < 0:
        raise ValueError(f"Usage.{name} must be finite and >= 0, got {value!r}")
    return quantity


@dataclass(frozen=True, slots=True)
class Price:
    """The exact cost of one operation and where it came from.

    ``rate_id`` names the rate-table entry that priced it (e.g. ``"file:openai:gpt-4o-mini"``,
    ``"genai-prices:openai:gpt-4o-mini@2024-07-18"``, ``"code"``); it is sent as ``data.rate``.
    """

    amount: Decimal
    currency: str
    rate_id: str
    # A factory, not a default: dataclasses reject unhashable defaults such as mappingproxy.
    breakdown: Mapping[str, Decimal] = field(default_factory=lambda: _EMPTY)
