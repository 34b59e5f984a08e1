"""``RateTable``: the user's rate file first, then the genai-prices catalog, resolved once per model.

Rate file (TOML; every price is a string, or an int, never a float)::

    currency = "USD"                        # optional, default USD; every Price is in this currency

    [llm."openai:gpt-4o-mini"]              # provider:model (genai-prices provider ids)
    input_per_mtok = "0.15"                 # per million tokens
    output_per_mtok = "0.60"
    cache_read_per_mtok = "0.075"           # optional; a missing cache price falls back to input_per_mtok
    cache_write_per_mtok = "0.1875"         # optional, 5-minute writes (1-hour writes fall back to it)
    cache_write_1h_per_mtok = "0.30"        # optional
    reasoning_per_mtok = "0.60"             # optional, default output_per_mtok
    input_audio_per_mtok = "10"             # optional; audio tokens without a price make the usage unpriced
    output_audio_per_mtok = "20"            # optional
    web_search_per_request = "0.01"         # optional, per web search
    per_request = "0.001"                   # optional, flat fee per call
    batch_multiplier = "0.5"                # optional, applied to every price above for batch calls
    effective_from = 2026-01-01             # optional TOML date (UTC); before it the entry does not apply

    # A price history: an array of tables under the same key, one per effective date. The entry whose
    # effective_from is the latest one on or before the request's UTC date applies; before the earliest one,
    # the lookup moves on (snapshot-prefix entries, then the catalog).
    [[llm."anthropic:claude-sonnet-4-5"]]
    input_per_mtok = "3"
    output_per_mtok = "15"
    [[llm."anthropic:claude-sonnet-4-5"]]
    effective_from = 2026-03-01
    input_per_mtok = "2.70"
    output_per_mtok = "13.50"

    [api."twilio:sms"]                      # provider:operation; per_call and/or per_unit (x units)
    match = "https://api.twilio.com/2010-04-01/Accounts/*/Messages.json"   # `*` = one path segment
    method = "POST"                         # optional
    per_unit = "0.0079"
    units = "$.num_segments"                # "$.json.path" into the response, or "header:NAME"
    event_type = "cost.sms"                 # optional, default cost.api

    [compute."aws:gpu-inference"]
    per_hour = "3.06"                       # or per_second

    [fx]
    USD = "0.92"                            # 1 USD = 0.92 `currency`; converts catalog (USD) prices

``api`` and ``compute`` entries accept the same array-of-tables history with ``effective_from``.

LLM lookup order: the exact ``provider:model`` key; then the longest key that is a prefix of the model followed by
a snapshot suffix only (``-2024-07-18``, ``-20250929``, ``@20250929``, Bedrock ``-v1:0``); then the genai-prices
catalog; else unpriced. Resolution happens once per (provider, model) and is cached.
"""

from __future__ import annotations

import math
import os
import re
import sys
import threading
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from time import time
from types import MappingProxyType
from typing import Any, Protocol

from .._errors import ConfigurationError
from ._catalog import CatalogModel, current_snapshot, resolve
from ._plan import CTX, STRICT_FALLBACKS, Plan, Unpriced, build_plan, day_start, utc_timestamp
from ._ratefile import ApiEntry, ComputeEntry, LLMEntry, RateFileData, compile_match, normalise_url, parse_rates
from ._usage import Price, Usage

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = ["ApiRate", "RateTable", "Unpriced"]

_HOUR = Decimal(3600)
_MAX_CACHED = 10_000  # distinct (provider, model) pairs remembered; beyond that, resolve per call
_SNAPSHOT_SUFFIX = re.compile(r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|@\d{4}-\d{2}-\d{2})?(?:-v\d+(?::\d+)?|:\d+)?")

# In the user's file, 1-hour cache writes without their own price fall back to the 5-minute price, then input.
_FILE_FALLBACKS = {
    **STRICT_FALLBACKS,
    "cache_write_1h_tokens": ("cache_write_1h_tokens", "cache_write_tokens", "input_tokens"),
}


@dataclass(frozen=True, slots=True)
class ApiRate:
    """An ``[api."provider:operation"]`` entry as the HTTP integration sees it.

    ``units`` says where the unit count comes from: ``"$.json.path"`` into the response body or ``"header:NAME"``.
    """

    provider: str
    operation: str
    event_type: str
    units: str | None
    method: str | None
    match: str | None


class _LLMSource(Protocol):
    @property
    def plain(self) -> Plan | None: ...

    def price(
        self, usage: Usage, at: datetime | None, service_tier: str | None, batch: bool
    ) -> Price | Unpriced | None: ...


class _FileLLM:
    """One ``[llm."provider:model"]`` entry with its versions compiled to plans."""

    def __init__(self, entry: LLMEntry, currency: str) -> None:
        # POSIX timestamps of each version's start (UTC midnight); undated versions start at -inf.
        self._bounds = [-math.inf if v.effective_from is None else day_start(v.effective_from) for v in entry.versions]
        self._timed = any(v.effective_from is not None for v in entry.versions)
        plans: list[Plan] = []
        batch_plans: list[Plan] = []
        for v in entry.versions:
            rate_id = f"file:{entry.provider}:{entry.model}"
            if v.effective_from is not None:
                rate_id += "@" + v.effective_from.isoformat()
            plan = build_plan(v.prices, rate_id=rate_id, currency=currency, fallbacks=_FILE_FALLBACKS)
            plans.append(plan)
            if v.batch_multiplier is None:
                batch_plans.append(plan)
            else:
                batch_plans.append(
                    build_plan(
                        v.prices,
                        rate_id=f"{rate_id};batch_multiplier={v.batch_multiplier}",
                        currency=currency,
                        fallbacks=_FILE_FALLBACKS,
                        factor=v.batch_multiplier,
                    )
                )
        self._plans = tuple(plans)
        self._batch_plans = tuple(batch_plans)
        self.plain = None if self._timed else self._plans[0]

    def price(
        self, usage: Usage, at: datetime | None, service_tier: str | None, batch: bool
    ) -> Price | Unpriced | None:
        index = 0
        if self._timed:
            index = bisect_right(self._bounds, time() if at is None else utc_timestamp(at)) - 1
            if index < 0:
                return None  # not effective yet: the next source in the lookup order applies
        return (self._batch_plans if batch else self._plans)[index].apply(usage)


def _dated_index(bounds: list[float], at: datetime | None) -> int:
    if len(bounds) == 1 and bounds[0] == -math.inf:
        return 0
    return bisect_right(bounds, time() if at is None else utc_timestamp(at)) - 1


def _bounds(days: list[date | None]) -> list[float]:
    return [-math.inf if d is None else day_start(d) for d in days]


class _Resolved:
    """The lookup chain for one (provider, model), and the plan to use directly when nothing can vary per request.

    ``plain`` is set when the first source prices every call without service tier or batch flag with one fixed
    plan (an undated file entry, a catalog model without dated prices), which skips the chain walk.
    """

    __slots__ = ("chain", "plain")

    def __init__(self, chain: tuple[_LLMSource, ...]) -> None:
        self.chain = chain
        self.plain: Plan | None = chain[0].plain if chain else None


class RateTable:
    """Prices LLM usage, API calls and compute time in one currency.

    Immutable once built apart from its lookup caches, which are filled under a lock and read lock-free, so one
    table can serve many threads. Build it with ``from_file``, ``from_toml``, ``from_mapping``, ``empty`` or
    ``load``.
    """

    def __init__(self, data: RateFileData) -> None:
        self._data = data
        self._currency = data.currency
        self._fx = data.fx.get("USD")
        self._lock = threading.Lock()

        self._llm_exact: dict[tuple[str, str], _FileLLM] = {}
        prefixes: dict[str, list[tuple[str, _FileLLM]]] = {}
        for entry in data.llm:
            source = _FileLLM(entry, data.currency)
            self._llm_exact[(entry.provider, entry.model)] = source
            prefixes.setdefault(entry.provider, []).append((entry.model, source))
        self._llm_prefix = {p: sorted(items, key=lambda item: -len(item[0])) for p, items in prefixes.items()}

        self._api: dict[tuple[str, str], ApiEntry] = {(e.provider, e.operation): e for e in data.api}
        self._api_bounds = {k: _bounds([v.effective_from for v in e.versions]) for k, e in self._api.items()}
        matchers = [(compile_match(e.match), e.match, e) for e in data.api if e.match is not None]
        # Most specific first: fewer wildcards, then longer patterns, then method-specific ones.
        matchers.sort(key=lambda m: (m[1].count("*"), -len(m[1]), m[2].method is None))
        self._matchers = tuple(
            (
                pattern,
                entry.method,
                ApiRate(entry.provider, entry.operation, entry.event_type, entry.units, entry.method, entry.match),
            )
            for pattern, _, entry in matchers
        )
        self._compute: dict[tuple[str, str], ComputeEntry] = {(e.provider, e.operation): e for e in data.compute}
        self._compute_bounds = {k: _bounds([v.effective_from for v in e.versions]) for k, e in self._compute.items()}

        self._snapshot = current_snapshot()
        self._llm_cache: dict[tuple[str, str], _Resolved] = {}

    # -- construction -------------------------------------------------------------------------------------------

    @classmethod
    def empty(cls) -> RateTable:
        """A table with no rate file: catalog prices only, in USD."""
        return cls(parse_rates({}, "<empty>"))

    @classmethod
    def from_mapping(cls, rates: Mapping[str, Any], *, source: str = "<mapping>") -> RateTable:
        """Build from the parsed TOML shape (what ``tomllib.loads`` returns).

        Raises:
            ConfigurationError: If the mapping is not a valid rate table; the message names ``source``.
        """
        return cls(parse_rates(rates, source))

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<toml>") -> RateTable:
        """Build from TOML text.

        Raises:
            ConfigurationError: If the text is not valid TOML or not a valid rate table.
        """
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{source}: not valid TOML: {exc}") from None
        return cls.from_mapping(raw, source=source)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> RateTable:
        """Read a TOML rate file.

        Raises:
            ConfigurationError: If the file cannot be read or is not a valid rate table; the message names the file.
        """
        name = os.fspath(path)
        try:
            text = Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{name}: cannot read rate file: {exc}") from None
        return cls.from_toml(text, source=name)

    @classmethod
    def load(cls, rates: str | os.PathLike[str] | RateTable | Mapping[str, Any] | None) -> RateTable:
        """Whatever ``configure(rates=...)`` was given: None (catalog only), a path, a table, or a parsed mapping.

        Raises:
            ConfigurationError: On a bad file or mapping, or an unsupported argument type.
        """
        if rates is None:
            return cls.empty()
        if isinstance(rates, RateTable):
            return rates
        if isinstance(rates, (str, os.PathLike)):
            return cls.from_file(rates)
        if isinstance(rates, Mapping):
            return cls.from_mapping(rates)
        raise ConfigurationError(f"rates: expected a path, a mapping or a RateTable, got {type(rates).__name__}")

    # -- properties ---------------------------------------------------------------------------------------------

    @property
    def currency(self) -> str:
        """The currency of every ``Price`` this table returns."""
        return self._currency

    def api_rates(self) -> tuple[ApiRate, ...]:
        """Every ``[api]`` entry that has a ``match`` pattern, most specific first."""
        return tuple(rate for _, _, rate in self._matchers)

    # -- LLM ----------------------------------------------------------------------------------------------------

    def price_llm(
        self,
        provider: str,
        model: str,
        usage: Usage,
        *,
        at: datetime | None = None,
        service_tier: str | None = None,
        batch: bool = False,
    ) -> Price | None:
        """Price one LLM call, or None when no rate prices it (never $0 for an unknown model).

        See ``price_llm_detailed`` for the arguments and for why a usage was not priced.
        """
        # The body of price_llm_detailed, repeated: this is the per-call hot path and a call layer costs ~5%.
        if current_snapshot() is not self._snapshot:
            self._reset_catalog()
        resolved = self._llm_cache.get((provider, model)) or self._resolve_llm(provider, model)
        if service_tier is None and not batch and resolved.plain is not None:
            result = resolved.plain.apply(usage)
            return result if type(result) is Price else None
        for source in resolved.chain:
            found = source.price(usage, at, service_tier, batch)
            if found is not None:
                return found if type(found) is Price else None
        return None

    def price_llm_detailed(
        self,
        provider: str,
        model: str,
        usage: Usage,
        *,
        at: datetime | None = None,
        service_tier: str | None = None,
        batch: bool = False,
    ) -> Price | Unpriced:
        """Price one LLM call.

        Args:
            provider: genai-prices provider id (``openai``, ``anthropic``, ``aws``, ``google``, ...).
            model: The model as the provider reported it (dated snapshots are fine).
            usage: Normalised usage (see ``Usage``).
            at: When the request ran (naive = UTC); selects date-effective prices. None means now.
            service_tier: The response's service tier (``flex``, ``priority``, ...), for catalog tier variants.
            batch: True for batch-API calls (catalog batch variants; the file's ``batch_multiplier``).

        Returns:
            The ``Price``, or ``Unpriced(reason)`` with reason ``unknown_model``, ``no_effective_rate``,
            ``no_fx_rate``, ``unpriced_bucket:<usage field>``, ``inconsistent_usage:<bucket>`` or
            ``catalog_error``.
        """
        if current_snapshot() is not self._snapshot:
            self._reset_catalog()
        resolved = self._llm_cache.get((provider, model)) or self._resolve_llm(provider, model)
        if service_tier is None and not batch and resolved.plain is not None:
            return resolved.plain.apply(usage)
        for source in resolved.chain:
            result = source.price(usage, at, service_tier, batch)
            if result is not None:
                return result
        return Unpriced("no_effective_rate" if resolved.chain else "unknown_model")

    def has_llm(self, provider: str, model: str) -> bool:
        """True when the rate file or the catalog has a rate for this model (at some date)."""
        if current_snapshot() is not self._snapshot:
            self._reset_catalog()
        resolved = self._llm_cache.get((provider, model)) or self._resolve_llm(provider, model)
        return bool(resolved.chain)

    def _reset_catalog(self) -> None:
        # genai-prices' UpdatePrices installed new data: forget every resolution made against the old snapshot.
        with self._lock:
            self._snapshot = current_snapshot()
            self._llm_cache = {}

    def _resolve_llm(self, provider: str, model: str) -> _Resolved:
        p = provider.strip().lower()
        m = model.strip().lower()
        chain: list[_LLMSource] = []
        exact = self._llm_exact.get((p, m))
        if exact is not None:
            chain.append(exact)
        for key_model, source in self._llm_prefix.get(p, ()):
            if len(m) > len(key_model) and m.startswith(key_model) and _SNAPSHOT_SUFFIX.fullmatch(m[len(key_model) :]):
                chain.append(source)
                break
        found = resolve(self._snapshot, provider, model)
        if found is not None:
            chain.append(CatalogModel(found[0], found[1], self._currency, self._fx))
        result = _Resolved(tuple(chain))
        with self._lock:
            if len(self._llm_cache) < _MAX_CACHED:
                # A concurrent resolution of the same key may win; both results are equivalent.
                result = self._llm_cache.setdefault((provider, model), result)
        return result

    # -- API calls and compute ----------------------------------------------------------------------------------

    def match_http(self, method: str, url: str) -> ApiRate | None:
        """The ``[api]`` entry whose ``match`` pattern (and ``method``, if set) fits this request, or None."""
        if not self._matchers:
            return None
        target = normalise_url(url)
        verb = method.upper()
        for pattern, entry_method, rate in self._matchers:
            if (entry_method is None or entry_method == verb) and pattern.fullmatch(target):
                return rate
        return None

    def price_api(
        self,
        provider: str,
        operation: str,
        *,
        units: Decimal | int | None = None,
        at: datetime | None = None,
    ) -> Price | None:
        """Price one API call: ``per_call`` plus ``per_unit`` x ``units``.

        Returns:
            The ``Price``, or None when there is no entry, no price effective at ``at``, or the entry prices per
            unit and ``units`` is missing or invalid.
        """
        key = (provider.lower(), operation)
        entry = self._api.get(key)
        if entry is None:
            return None
        index = _dated_index(self._api_bounds[key], at)
        if index < 0:
            return None
        version = entry.versions[index]
        breakdown: dict[str, Decimal] = {}
        if version.per_call is not None:
            breakdown["per_call"] = version.per_call
        if version.per_unit is not None:
            count = _quantity(units)
            if count is None:
                return None
            breakdown["units"] = CTX.multiply(version.per_unit, count)
        total = Decimal(0)
        for amount in breakdown.values():
            total = CTX.add(total, amount)
        rate_id = f"file:api:{entry.provider}:{entry.operation}"
        if version.effective_from is not None:
            rate_id += "@" + version.effective_from.isoformat()
        return Price(total, self._currency, rate_id, MappingProxyType(breakdown))

    def price_compute(
        self, provider: str, operation: str, *, seconds: Decimal | int, at: datetime | None = None
    ) -> Price | None:
        """Price compute time: ``per_hour`` x seconds / 3600, or ``per_second`` x seconds.

        Returns:
            The ``Price``, or None when there is no entry, no price effective at ``at``, or ``seconds`` is invalid.
        """
        key = (provider.lower(), operation)
        entry = self._compute.get(key)
        count = _quantity(seconds)
        if entry is None or count is None:
            return None
        index = _dated_index(self._compute_bounds[key], at)
        if index < 0:
            return None
        version = entry.versions[index]
        if version.per_second is not None:
            amount = CTX.multiply(version.per_second, count)
        else:
            # Multiply first, divide last: the division by 3600 is the only step that can be inexact.
            amount = CTX.divide(CTX.multiply(version.per_hour, count), _HOUR)  # type: ignore[arg-type]
        rate_id = f"file:compute:{entry.provider}:{entry.operation}"
        if version.effective_from is not None:
            rate_id += "@" + version.effective_from.isoformat()
        return Price(amount, self._currency, rate_id, MappingProxyType({"seconds": amount}))

    def __repr__(self) -> str:
        return (
            f"RateTable(currency={self._currency!r}, llm={len(self._data.llm)}, api={len(self._data.api)}, "
            f"compute={len(self._data.compute)})"
        )


def _quantity(value: Decimal | int | None) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value) if value >= 0 else None
    if isinstance(value, Decimal) and value.is_finite() and value >= 0:
        return value
    return None
