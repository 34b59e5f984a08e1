"""The genai-prices catalog, resolved once per model and compiled to Decimal plans.

genai-prices' ``calc_price`` re-resolves the model, rebuilds its usage object and re-validates the unit lattice on
every call (~65-150 us). Here a (provider, model) pair is resolved once with the snapshot's own matching
(``DataSnapshot.find_provider_model``: provider aliases, model aliases, dated snapshots, fallback providers), and each
distinct price selection (date-effective ``ConditionalPrice``, request ``PriceVariant`` such as
``service_tier=flex`` or ``processing=batch``) is compiled once into a ``Plan``. Amounts equal
``calc_price(...).total_price`` exactly, with two deliberate differences, both in the direction of never
under-reporting silently:

* a reported bucket the model has no price for (audio tokens, web searches, 1-hour cache writes) makes the usage
  ``Unpriced`` instead of being charged at an ancestor's price or $0;
* Anthropic 1-hour cache writes missing from the data are priced at 2x the base input price (see ``_compile``).
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from datetime import date, datetime, timezone
from decimal import Decimal
from time import time
from typing import Any

from genai_prices import data_snapshot
from genai_prices.data_units import unit_data
from genai_prices.types import (
    ModelInfo,
    ModelPrice,
    PriceVariant,
    Provider,
    StartDateConstraint,
    TieredPrices,
    TimeOfDateConstraint,
)
from genai_prices.units import UnitRegistry
from genai_prices.validation import validate_priced_units

from ._plan import (
    CTX,
    STRICT_FALLBACKS,
    Plan,
    PriceValue,
    Tiered,
    Unpriced,
    build_plan,
    day_start,
    fixed_plan,
    utc_timestamp,
)
from ._usage import Price, Usage

__all__ = ["CatalogModel", "current_snapshot", "resolve"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)  # any instant: only time-of-day constraints read it
_REGISTRY = UnitRegistry(unit_data)
_PRICE_KEY_UNITS = {unit.price_key: unit for unit in _REGISTRY.units.values()}
_TWO = Decimal(2)

Constraint = StartDateConstraint | TimeOfDateConstraint | None


def current_snapshot() -> data_snapshot.DataSnapshot:
    """The snapshot genai-prices would use now (bundled, or one installed by its ``UpdatePrices``)."""
    return data_snapshot.get_snapshot()


def resolve(snapshot: data_snapshot.DataSnapshot, provider: str, model: str) -> tuple[Provider, ModelInfo] | None:
    """The catalog's provider and model for this pair, or None. Slow (scans the data): call once and cache."""
    try:
        return snapshot.find_provider_model(model, None, provider, None)
    except LookupError:
        return None


class _Selector:
    """The variants that apply to one request context, and the plans compiled for them so far.

    When every constraint involved is a start date (nearly always), the selection can only change at UTC midnight of
    one of those dates: ``bounds`` holds those instants as POSIX timestamps and ``by_interval`` the plan for each
    interval between them, so picking the plan for a request is one ``bisect``.
    """

    __slots__ = ("bounds", "by_interval", "by_key", "days", "static", "variants")

    def __init__(self, variants: tuple[tuple[int, PriceVariant], ...], days: tuple[date, ...] | None) -> None:
        self.variants = variants
        self.days = days  # None when a time-of-day constraint is involved
        self.bounds = tuple(day_start(d) for d in days or ())
        self.by_interval: list[Plan | None] = [None] * (len(self.bounds) + 1)
        self.by_key: dict[tuple[Any, ...], Plan] = {}
        self.static: Plan | None = None  # the plan when nothing depends on the request time


class CatalogModel:
    """One resolved catalog model, pricing usage in ``currency`` (catalog USD x ``fx`` when not USD)."""

    def __init__(self, provider: Provider, model: ModelInfo, currency: str, fx: Decimal | None) -> None:
        self.provider_id = provider.id
        self.model_id = model.id
        self._model = model
        # genai-prices applies request variants only to the provider's own models, not to fallback providers' ones.
        self._direct = any(model is m for m in provider.models)
        if isinstance(model.prices, ModelPrice):
            self._conds: tuple[tuple[Constraint, ModelPrice], ...] = ((None, model.prices),)
        else:
            self._conds = tuple((c.constraint, c.prices) for c in model.prices)
        self._currency = currency
        self._fx = None if currency == "USD" else fx
        self._blocked = fixed_plan(Unpriced("no_fx_rate")) if currency != "USD" and fx is None else None
        self._selectors: dict[tuple[str | None, bool], _Selector] = {}
        self._lock = threading.Lock()
        self._default = self._selector(None, False)

    @property
    def plain(self) -> Plan | None:
        """The plan for requests without service tier or batch flag, when it does not depend on the time."""
        return self._default.static

    def price(self, usage: Usage, at: datetime | None, service_tier: str | None, batch: bool) -> Price | Unpriced:
        """Price ``usage`` at time ``at`` (None = now), selecting service-tier / batch variants like genai-prices."""
        if service_tier is None and not batch:
            selector = self._default
        else:
            selector = self._selectors.get((service_tier, batch)) or self._selector(service_tier, batch)
        plan = selector.static
        if plan is None:
            plan = self._timed_plan(selector, at)
        return plan.apply(usage)

    def _selector(self, service_tier: str | None, batch: bool) -> _Selector:
        context: dict[str, str] = {}
        if service_tier is not None:
            context["service_tier"] = service_tier
        if batch:
            context["processing"] = "batch"
        variants: tuple[tuple[int, PriceVariant], ...] = ()
        if context and self._direct:
            variants = tuple(
                (i, v)
                for i, v in enumerate(self._model.price_variants or ())
                if all(context.get(k) == value for k, value in v.when.items())
            )
        constraints = [c for c, _ in self._conds] + [v.constraint for _, v in variants]
        if any(isinstance(c, TimeOfDateConstraint) for c in constraints):
            selector = _Selector(variants, None)
        else:
            days = tuple(sorted({c.start_date for c in constraints if isinstance(c, StartDateConstraint)}))
            selector = _Selector(variants, days)
            if not days and self._blocked is None:
                selector.static = self._compile(self._key(selector, _EPOCH, date.min))
        if self._blocked is not None:
            selector.static = self._blocked
        with self._lock:
            return self._selectors.setdefault((service_tier, batch), selector)

    def _timed_plan(self, selector: _Selector, at: datetime | None) -> Plan:
        if selector.days is not None:
            index = bisect_right(selector.bounds, time() if at is None else utc_timestamp(at))
            plan = selector.by_interval[index]
            if plan is None:
                day = date.min if index == 0 else selector.days[index - 1]
                plan = self._compile(self._key(selector, _EPOCH, day))
                selector.by_interval[index] = plan  # a list slot: a racing thread at worst compiles it twice
            return plan
        # Time-of-day prices (off-peak discounts): evaluate the constraints per request.
        if at is None:
            at = datetime.now(timezone.utc)
        day = at.date() if at.tzinfo is None else at.astimezone(timezone.utc).date()
        key = self._key(selector, at, day)
        plan = selector.by_key.get(key)
        if plan is None:
            plan = self._compile(key)
            with self._lock:
                selector.by_key[key] = plan
        return plan

    def _key(self, selector: _Selector, at: datetime, day: date) -> tuple[Any, ...]:
        # Same rules as genai-prices' ModelInfo.get_prices: UTC dates, naive timestamps are UTC, the last active
        # conditional price wins and the first one applies when none is active.
        cond_index = 0
        for i in range(len(self._conds) - 1, -1, -1):
            if _active(self._conds[i][0], at, day):
                cond_index = i
                break
        return (cond_index, tuple(i for i, v in selector.variants if _active(v.constraint, at, day)))

    def _compile(self, key: tuple[Any, ...]) -> Plan:
        cond_index, variant_indexes = key
        constraint, standard = self._conds[cond_index]
        merged = {k: v for k, v in standard.__dict__.items() if not k.startswith("_") and v is not None}
        overrides: dict[str, Any] = {}
        variants = self._model.price_variants or []
        for i in variant_indexes:
            for k, v in variants[i].prices.__dict__.items():
                if v is not None and not k.startswith("_"):
                    overrides.setdefault(k, v)
        merged.update(overrides)

        units = [_PRICE_KEY_UNITS[k] for k in merged if k in _PRICE_KEY_UNITS]
        try:
            validate_priced_units(tuple(units), _REGISTRY)
        except ValueError:
            return fixed_plan(Unpriced("catalog_error"))
        prices: dict[str, tuple[PriceValue, int]] = {}
        for unit in units:
            prices[unit.usage_key] = (_to_price(merged[unit.price_key]), unit.per)

        rate_id = f"genai-prices:{self.provider_id}:{self.model_id}"
        if isinstance(constraint, StartDateConstraint):
            rate_id += "@" + constraint.start_date.isoformat()
        elif isinstance(constraint, TimeOfDateConstraint):
            rate_id += f"@{constraint.start_time.isoformat()}-{constraint.end_time.isoformat()}"
        for i in variant_indexes:
            rate_id += "".join(f";{k}={v}" for k, v in sorted(variants[i].when.items()))

        if "cache_write_1h_tokens" not in prices and "input_tokens" in prices and "claude" in self.model_id:
            # Anthropic documents 1-hour cache writes at 2x the base input price (5-minute writes: 1.25x):
            # https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching#pricing. Older catalog entries (and
            # Bedrock/Vertex copies) lack the price; derive it from the catalog's own input price.
            base, per = prices["input_tokens"]
            doubled = base.scaled(_TWO) if isinstance(base, Tiered) else CTX.multiply(base, _TWO)
            prices["cache_write_1h_tokens"] = (doubled, per)
            rate_id += ";cache_write_1h=2x_input"
        if self._fx is not None:
            rate_id += f";fx=USD:{self._fx}"
        return build_plan(prices, rate_id=rate_id, currency=self._currency, fallbacks=STRICT_FALLBACKS, factor=self._fx)


def _active(constraint: Constraint, at: datetime, day: date) -> bool:
    if constraint is None:
        return True
    if isinstance(constraint, StartDateConstraint):
        return day >= constraint.start_date
    return constraint.active(at)


def _to_price(value: Decimal | TieredPrices) -> PriceValue:
    if isinstance(value, TieredPrices):
        return Tiered(value.base, tuple(sorted(((t.start, t.price) for t in value.tiers), reverse=True)))
    return value
