"""Usage (what a provider reports) and Price (what it cost). Pure data, no third-party imports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from types import MappingProxyType

__all__ = ["Price", "Usage"]

_EMPTY: Mapping[str, Decimal] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Usage:
    """Normalised usage of one operation (OpenTelemetry GenAI convention).

    ``input_tokens`` is ALL input, cached included: ``cache_read_tokens`` and ``cache_write_tokens`` (5-minute writes)
    / ``cache_write_1h_tokens`` are parts of it. ``output_tokens`` is ALL output: ``reasoning_tokens`` is part of it.
    Integrations convert provider shapes (Anthropic reports cache outside ``input_tokens``; Gemini reports thinking
    outside candidates) before building a ``Usage``. Each bucket is priced once.
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

    def __post_init__(self) -> None:
        # Integrations build one Usage per provider call, so validation is a plain loop over precomputed names.
        for name in _TOKEN_FIELDS:
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 0):
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    continue  # an int subclass (e.g. IntEnum) is fine
                raise ValueError(f"Usage.{name} must be a non-negative int, got {value!r}")
        for name in ("units", "seconds"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (int, Decimal)) or isinstance(value, bool):
                raise TypeError(f"Usage.{name} must be an int or Decimal, got {type(value).__name__}")
            if isinstance(value, int):
                value = Decimal(value)
                object.__setattr__(self, name, value)
            if not value.is_finite() or value < 0:
                raise ValueError(f"Usage.{name} must be finite and >= 0, got {value!r}")

    def as_dict(self) -> dict[str, int | Decimal]:
        """The buckets that are set, by name (what goes into the event's ``data``)."""
        result: dict[str, int | Decimal] = {}
        for name in _USAGE_FIELDS:  # a precomputed tuple: dataclasses.fields() is slow on the hot path
            value = getattr(self, name)
            if value is not None:
                result[name] = value
        return result

    @property
    def is_empty(self) -> bool:
        """True when the provider reported nothing at all."""
        return all(getattr(self, name) is None for name in _USAGE_FIELDS)


_USAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Usage))
_TOKEN_FIELDS: tuple[str, ...] = tuple(name for name in _USAGE_FIELDS if name not in ("units", "seconds"))


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
