"""A compiled LLM rate: Decimal prices per usage bucket, applied to a ``Usage`` with a handful of Decimal operations.

Both the user's rate file and the genai-prices catalog compile to a ``Plan``. The bucket arithmetic follows
genai-prices' unit lattice (``genai_prices.data_units``): every priced unit is charged for its *leaf* count, i.e. its
own count minus the counts already charged by more specific priced units. With our normalised ``Usage`` that means
uncached input = ``input_tokens - cache_read - cache_write - cache_write_1h - input_audio`` and plain output =
``output_tokens - reasoning - output_audio``, each bucket priced exactly once. A bucket without its own price falls
back to its nearest priced ancestor (cache read -> input, reasoning -> output), as in genai-prices.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    getcontext,
    localcontext,
)
from types import MappingProxyType
from typing import Any

from ._usage import Price, Usage

__all__ = [
    "CTX",
    "FED_KEYS",
    "STRICT_FALLBACKS",
    "Plan",
    "PriceValue",
    "Tiered",
    "Unpriced",
    "build_plan",
    "day_start",
    "fixed_plan",
    "utc_timestamp",
]

# An explicit context, so a caller's thread-local Decimal context (say prec=6) cannot round our amounts. 28 digits is
# the stdlib default, which genai-prices also uses; token x price products never come near it, so nothing is rounded.
CTX = Context(
    prec=28,
    rounding=ROUND_HALF_EVEN,
    Emin=MIN_EMIN,
    Emax=MAX_EMAX,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)


@dataclass(frozen=True, slots=True)
class Unpriced:
    """Why a usage could not be priced (``unknown_model``, ``unpriced_bucket:input_audio_tokens``, ...)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Tiered:
    """A threshold price: above ``start`` total input tokens, the tier's price applies to ALL tokens of the bucket.

    ``tiers`` is sorted by descending ``start`` so the first hit wins (genai-prices' "cliff" model).
    """

    base: Decimal
    tiers: tuple[tuple[int, Decimal], ...]

    def per(self, per: int) -> Tiered:
        """The same tiers priced per single unit instead of per ``per`` units."""
        return Tiered(_per(self.base, per), tuple((s, _per(p, per)) for s, p in self.tiers))

    def scaled(self, factor: Decimal) -> Tiered:
        """The same tiers with every price multiplied by ``factor`` (exact)."""
        return Tiered(CTX.multiply(self.base, factor), tuple((s, CTX.multiply(p, factor)) for s, p in self.tiers))


PriceValue = Decimal | Tiered


def _per(price: Decimal, per: int) -> Decimal:
    """``price`` per single unit. Exact: catalog and file units are per 1, 1,000 or 1,000,000."""
    return CTX.divide(price, Decimal(per))


# genai-prices usage keys we can feed from a ``Usage``, with their unit dimensions (copied from
# genai_prices.data_units so the lattice does not depend on a private registry) and the bucket name we report.
# Keys a ``Usage`` cannot report (image, video, per-modality cache buckets such as cache_audio_read_tokens) always have
# a leaf count of 0 and are left out: cached tokens count as text.
_DIMS: dict[str, frozenset[tuple[str, str]]] = {
    "input_tokens": frozenset({("family", "tokens"), ("direction", "input")}),
    "cache_read_tokens": frozenset({("family", "tokens"), ("direction", "input"), ("token_type", "cache_read")}),
    "cache_write_tokens": frozenset({("family", "tokens"), ("direction", "input"), ("token_type", "cache_write")}),
    "cache_write_5m_tokens": frozenset(
        {("family", "tokens"), ("direction", "input"), ("token_type", "cache_write"), ("cache_ttl", "5m")}
    ),
    "cache_write_1h_tokens": frozenset(
        {("family", "tokens"), ("direction", "input"), ("token_type", "cache_write"), ("cache_ttl", "1h")}
    ),
    "input_audio_tokens": frozenset({("family", "tokens"), ("direction", "input"), ("modality", "audio")}),
    "output_tokens": frozenset({("family", "tokens"), ("direction", "output")}),
    "output_reasoning_tokens": frozenset({("family", "tokens"), ("direction", "output"), ("token_type", "reasoning")}),
    "output_audio_tokens": frozenset({("family", "tokens"), ("direction", "output"), ("modality", "audio")}),
    "web_searches": frozenset({("family", "tool_calls"), ("tool_type", "web_search")}),
    "requests": frozenset({("family", "requests")}),
}
FED_KEYS: tuple[str, ...] = tuple(_DIMS)

_BUCKET = {
    "input_tokens": "input_tokens",
    "cache_read_tokens": "cache_read_tokens",
    "cache_write_tokens": "cache_write_tokens",
    "cache_write_5m_tokens": "cache_write_tokens",
    "cache_write_1h_tokens": "cache_write_1h_tokens",
    "input_audio_tokens": "input_audio_tokens",
    "output_tokens": "output_tokens",
    "output_reasoning_tokens": "reasoning_tokens",
    "output_audio_tokens": "output_audio_tokens",
    "web_searches": "web_search_requests",
    "requests": "requests",
}

# Which priced units can charge each ``Usage`` field (own unit first, then the ancestors it may fall back to). A
# field with a non-zero count and none of these priced makes the whole usage Unpriced: never a silent $0 bucket.
STRICT_FALLBACKS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "input_tokens": ("input_tokens",),
        "output_tokens": ("output_tokens",),
        "cache_read_tokens": ("cache_read_tokens", "input_tokens"),
        "cache_write_tokens": ("cache_write_5m_tokens", "cache_write_tokens", "input_tokens"),
        "cache_write_1h_tokens": ("cache_write_1h_tokens",),
        "reasoning_tokens": ("output_reasoning_tokens", "output_tokens"),
        "input_audio_tokens": ("input_audio_tokens",),
        "output_audio_tokens": ("output_audio_tokens",),
        "web_search_requests": ("web_searches",),
        "units": (),
        "seconds": (),
    }
)


# Where each fed usage key's count comes from, as a Python expression over ``u`` (a Usage). Fixed strings: generated
# plan code never contains anything read from a rate file or the catalog (those are passed as bound constants).
_SOURCE: dict[str, str] = {
    "input_tokens": "inp",
    "cache_read_tokens": "(u.cache_read_tokens or 0)",
    # genai-prices' cache_write_tokens covers both TTLs; ours are separate buckets.
    "cache_write_tokens": "((u.cache_write_tokens or 0) + (u.cache_write_1h_tokens or 0))",
    "cache_write_5m_tokens": "(u.cache_write_tokens or 0)",
    "cache_write_1h_tokens": "(u.cache_write_1h_tokens or 0)",
    "input_audio_tokens": "(u.input_audio_tokens or 0)",
    "output_tokens": "(u.output_tokens or 0)",
    "output_reasoning_tokens": "(u.reasoning_tokens or 0)",
    "output_audio_tokens": "(u.output_audio_tokens or 0)",
    "web_searches": "(u.web_search_requests or 0)",
    # genai-prices charges a per-request fee once per call.
    "requests": "(1 if u.requests is None else u.requests)",
}
assert set(_SOURCE) == set(FED_KEYS)

_new = object.__new__
# Price is a frozen slotted dataclass; setting its slots through the member descriptors skips the frozen
# __setattr__ path and saves ~40% of the construction cost on the hot path. Price has no __post_init__ to skip.
_SETTERS = tuple(getattr(Price, name).__set__ for name in ("amount", "currency", "rate_id", "breakdown"))


class Plan:
    """Prices one usage with fixed rates. Immutable after construction, so safe to share between threads.

    ``apply(usage) -> Price | Unpriced`` is straight-line code generated for this plan's priced buckets (a few
    attribute reads, int subtractions and one Decimal multiplication per non-empty bucket), the way ``dataclasses``
    generates ``__init__``: pricing runs on every recorded call, so the generic loop's overhead matters.
    """

    __slots__ = ("apply", "rate_id", "source")

    apply: Callable[[Usage], Price | Unpriced]

    def __init__(self, apply: Callable[[Usage], Price | Unpriced], rate_id: str, source: str) -> None:
        self.apply = apply
        self.rate_id = rate_id
        self.source = source  # the generated code, for debugging

    def __repr__(self) -> str:
        return f"Plan(rate_id={self.rate_id!r})"


_ZERO = Decimal(0)


def fixed_plan(result: Unpriced) -> Plan:
    """A plan that prices nothing and always answers ``result`` (no fx rate, invalid catalog data)."""

    def apply(u: Usage) -> Price | Unpriced:
        return result

    return Plan(apply, result.reason, "")


def utc_timestamp(at: datetime) -> float:
    """POSIX timestamp of ``at``; naive datetimes are UTC (genai-prices' convention)."""
    return (at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)).timestamp()


def day_start(day: date) -> float:
    """POSIX timestamp of UTC midnight starting ``day``: a request is on or after ``day`` iff it is >= this."""
    return calendar.timegm(day.timetuple())


def build_plan(
    prices: Mapping[str, tuple[PriceValue, int]],
    *,
    rate_id: str,
    currency: str,
    fallbacks: Mapping[str, tuple[str, ...]] = STRICT_FALLBACKS,
    factor: Decimal | None = None,
) -> Plan:
    """Compile ``prices`` (genai-prices usage key -> (price, per)) into a ``Plan``.

    Args:
        prices: Prices keyed by genai-prices usage key (``input_tokens``, ``cache_write_1h_tokens``, ``web_searches``,
            ...); other keys are ignored: a ``Usage`` never reports them, so their leaf count is always 0.
        rate_id: Recorded on every ``Price`` this plan makes.
        currency: The currency of the resulting prices.
        fallbacks: ``Usage`` field -> units allowed to charge it; see ``STRICT_FALLBACKS``.
        factor: Multiplies every price (an fx rate, a batch discount), exactly, once here rather than per call.
    """
    priced = {k: v for k, v in prices.items() if k in _SOURCE}
    # Most specific units first, so each unit's descendants are computed before it (genai-prices' order).
    order = sorted(priced, key=lambda k: (-len(_DIMS[k]), k))
    unpriceable = [name for name, units in fallbacks.items() if not any(k in priced for k in units)]

    env: dict[str, Any] = {
        "GETCONTEXT": getcontext,
        "MIN_PREC": CTX.prec,
        "ZERO": _ZERO,
        "NEW": _new,
        "PRICE": Price,
        "PROXY": MappingProxyType,
        "CURRENCY": currency,
        "RATE_ID": rate_id,
        "SET_AMOUNT": _SETTERS[0],
        "SET_CURRENCY": _SETTERS[1],
        "SET_RATE_ID": _SETTERS[2],
        "SET_BREAKDOWN": _SETTERS[3],
    }
    lines = [
        "def apply(u):",
        # Plain operators are twice as fast as Context methods and exact at the default 28 digits; only a caller
        # who lowered the thread's precision goes through the explicit context.
        "    if GETCONTEXT().prec < MIN_PREC:",
        "        return GUARDED(u)",
    ]
    if unpriceable:
        # One combined test on the hot path; which bucket it was is only worked out when one is set.
        lines.append("    if " + " or ".join(f"u.{name}" for name in unpriceable) + ":")
        for i, name in enumerate(unpriceable):
            env[f"UNPRICEABLE_{i}"] = Unpriced("unpriced_bucket:" + name)
            lines += [f"        if u.{name}:", f"            return UNPRICEABLE_{i}"]
    lines.append("    inp = u.input_tokens or 0")
    buckets = [_BUCKET[k] for k in order]
    for i, key in enumerate(order):
        desc = [j for j, other in enumerate(order[:i]) if "requests" not in (key, other) and _DIMS[key] < _DIMS[other]]
        lines.append(f"    c{i} = {_SOURCE[key]}" + "".join(f" - c{j}" for j in desc))
        if desc:
            env[f"INCONSISTENT_{i}"] = Unpriced("inconsistent_usage:" + buckets[i])
            lines += [f"    if c{i} < 0:", f"        return INCONSISTENT_{i}"]
    lines += ["    total = ZERO", "    breakdown = {}"]
    for i, key in enumerate(order):
        value, per = priced[key]
        if factor is not None:
            value = value.scaled(factor) if isinstance(value, Tiered) else CTX.multiply(value, factor)
        env[f"BUCKET_{i}"] = buckets[i]
        lines.append(f"    if c{i}:")
        if isinstance(value, Tiered):
            # Inline conditional expressions, highest threshold first: no call per bucket.
            tiered = value.per(per)
            env[f"PRICE_{i}"] = tiered.base
            expr = f"PRICE_{i}"
            for k, (start, tier_price) in enumerate(reversed(tiered.tiers)):
                env[f"PRICE_{i}_{k}"] = tier_price
                expr = f"(PRICE_{i}_{k} if inp > {int(start)} else {expr})"
            lines.append(f"        amount = {expr} * c{i}")
        else:
            env[f"PRICE_{i}"] = _per(value, per)
            lines.append(f"        amount = PRICE_{i} * c{i}")
        if buckets.count(buckets[i]) > 1:
            lines.append(f"        breakdown[BUCKET_{i}] = breakdown.get(BUCKET_{i}, ZERO) + amount")
        else:
            lines.append(f"        breakdown[BUCKET_{i}] = amount")
        lines.append("        total = total + amount")
    lines += [
        "    price = NEW(PRICE)",
        "    SET_AMOUNT(price, total)",
        "    SET_CURRENCY(price, CURRENCY)",
        "    SET_RATE_ID(price, RATE_ID)",
        "    SET_BREAKDOWN(price, PROXY(breakdown))",
        "    return price",
    ]
    source = "\n".join(lines) + "\n"
    exec(compile(source, f"<plan {rate_id}>", "exec"), env)  # source built from the fixed strings above
    apply: Callable[[Usage], Price | Unpriced] = env["apply"]

    def guarded(u: Usage) -> Price | Unpriced:
        with localcontext(CTX):
            return apply(u)

    env["GUARDED"] = guarded
    return Plan(apply, rate_id, source)
