"""A compiled LLM rate: Decimal prices per usage bucket, applied to a ``Usage`` with a handful of Decimal operations.

Both the user's rate file and the genai-prices catalog compile to a ``Plan``. The bucket arithmetic follows
genai-prices' unit lattice (``genai_prices.data_units``): every priced unit is charged for its *leaf* count, i.e. its
own count minus the counts already charged by more specific priced units. With our normalised ``Usage`` that means
uncached input = ``input_tokens - cache_read - cache_write - cache_write_1h - input_audio`` and plain output =
``output_tokens - reasoning - output_audio``, each bucket priced exactly once. A bucket without its own price falls
back to its nearest priced ancestor (cache read -> input, reasoning -> output), as in genai-prices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)
from types import MappingProxyType

from ._usage import Price, Usage

__all__ = ["CTX", "FED_KEYS", "Plan", "Tiered", "Unpriced", "build_plan"]

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

    def scaled(self, factor: Decimal) -> Tiered:
        """The same tiers with every price multiplied by ``factor`` (exact)."""
        return Tiered(CTX.multiply(self.base, factor), tuple((s, CTX.multiply(p, factor)) for s, p in self.tiers))


PriceValue = Decimal | Tiered

# genai-prices usage keys we can feed from a ``Usage``, with their unit dimensions (copied from
# genai_prices.data_units so the lattice does not depend on a private registry) and the bucket name we report.
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
    "cache_audio_read_tokens": frozenset(
        {("family", "tokens"), ("direction", "input"), ("modality", "audio"), ("token_type", "cache_read")}
    ),
    "output_tokens": frozenset({("family", "tokens"), ("direction", "output")}),
    "output_reasoning_tokens": frozenset({("family", "tokens"), ("direction", "output"), ("token_type", "reasoning")}),
    "output_audio_tokens": frozenset({("family", "tokens"), ("direction", "output"), ("modality", "audio")}),
    "web_searches": frozenset({("family", "tool_calls"), ("tool_type", "web_search")}),
    "requests": frozenset({("family", "requests")}),
}
FED_KEYS: tuple[str, ...] = tuple(_DIMS)
_INDEX = {key: i for i, key in enumerate(FED_KEYS)}

_BUCKET = {
    "input_tokens": "input_tokens",
    "cache_read_tokens": "cache_read_tokens",
    "cache_write_tokens": "cache_write_tokens",
    "cache_write_5m_tokens": "cache_write_tokens",
    "cache_write_1h_tokens": "cache_write_1h_tokens",
    "input_audio_tokens": "input_audio_tokens",
    "cache_audio_read_tokens": "cache_read_tokens",
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


@dataclass(frozen=True, slots=True)
class _Term:
    key: int  # index into the fed-values tuple
    desc: tuple[int, ...]  # indices (into the plan's terms) of more specific priced units, already computed
    price: Decimal | None
    tiered: Tiered | None
    per: Decimal
    bucket: str


class Plan:
    """Prices one usage with fixed rates. Immutable after construction, so safe to share between threads."""

    __slots__ = ("_currency", "_n", "_terms", "_unpriceable", "rate_id")

    def __init__(self, terms: tuple[_Term, ...], unpriceable: tuple[str, ...], rate_id: str, currency: str) -> None:
        self._terms = terms
        self._n = len(terms)
        self._unpriceable = unpriceable
        self._currency = currency
        self.rate_id = rate_id

    def apply(self, u: Usage) -> Price | Unpriced:
        """Price ``u``; ``Unpriced`` when a reported bucket has no price or the buckets contradict each other."""
        for name in self._unpriceable:
            if getattr(u, name):
                return Unpriced("unpriced_bucket:" + name)
        inp = u.input_tokens or 0
        cw5 = u.cache_write_tokens or 0
        cw1h = u.cache_write_1h_tokens or 0
        req = u.requests
        values = (
            inp,
            u.cache_read_tokens or 0,
            cw5 + cw1h,  # genai-prices' cache_write_tokens covers both TTLs
            cw5,
            cw1h,
            u.input_audio_tokens or 0,
            0,  # cached audio: our Usage has no such bucket, cached tokens count as text
            u.output_tokens or 0,
            u.reasoning_tokens or 0,
            u.output_audio_tokens or 0,
            u.web_search_requests or 0,
            1 if req is None else req,  # genai-prices charges a request fee once per call
        )
        leaves = [0] * self._n
        breakdown: dict[str, Decimal] = {}
        total: Decimal | None = None
        mul = CTX.multiply
        div = CTX.divide
        add = CTX.add
        for i, term in enumerate(self._terms):
            count = values[term.key]
            for d in term.desc:
                count -= leaves[d]
            if count < 0:
                return Unpriced("inconsistent_usage:" + term.bucket)
            leaves[i] = count
            if not count:
                continue
            price = term.price
            if price is None:
                price = _tier_price(term.tiered, inp)  # type: ignore[arg-type]
            amount = div(mul(price, Decimal(count)), term.per)
            prev = breakdown.get(term.bucket)
            breakdown[term.bucket] = amount if prev is None else add(prev, amount)
            total = amount if total is None else add(total, amount)
        return Price(
            amount=Decimal(0) if total is None else total,
            currency=self._currency,
            rate_id=self.rate_id,
            breakdown=MappingProxyType(breakdown),
        )


def _tier_price(tiered: Tiered, input_tokens: int) -> Decimal:
    for start, price in tiered.tiers:
        if input_tokens > start:
            return price
    return tiered.base


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
            ...); keys outside ``FED_KEYS`` are ignored since a ``Usage`` never reports them.
        rate_id: Recorded on every ``Price`` this plan makes.
        currency: The currency of the resulting prices.
        fallbacks: ``Usage`` field -> units allowed to charge it; see ``STRICT_FALLBACKS``.
        factor: Multiplies every price (an fx rate, a batch discount), exactly, once here rather than per call.
    """
    priced = {k: v for k, v in prices.items() if k in _INDEX}
    # Most specific units first, so each unit's descendants are computed before it (genai-prices' order).
    order = sorted(priced, key=lambda k: (-len(_DIMS[k]), k))
    terms: list[_Term] = []
    for key in order:
        value, per = priced[key]
        if factor is not None:
            value = value.scaled(factor) if isinstance(value, Tiered) else CTX.multiply(value, factor)
        desc = tuple(
            j
            for j, other in enumerate(order[: len(terms)])
            if other != "requests" and key != "requests" and _DIMS[key] < _DIMS[other]
        )
        terms.append(
            _Term(
                key=_INDEX[key],
                desc=desc,
                price=value if isinstance(value, Decimal) else None,
                tiered=value if isinstance(value, Tiered) else None,
                per=Decimal(per),
                bucket=_BUCKET[key],
            )
        )
    unpriceable = tuple(name for name, units in fallbacks.items() if not _any_in(units, priced))
    return Plan(tuple(terms), unpriceable, rate_id, currency)


def _any_in(keys: Iterable[str], priced: Mapping[str, object]) -> bool:
    return any(k in priced for k in keys)
