"""Parse and validate the user's rate file (the parsed TOML shape) into immutable entries.

Every problem raises ``ConfigurationError`` naming the source, the table key and what is wrong, e.g.
``rates.toml: [llm."openai:gpt-4o"] input_per_mtok: write prices as strings (got the float 2.5)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from .._errors import ConfigurationError
from ._plan import PriceValue

__all__ = [
    "ApiEntry",
    "ApiVersion",
    "ComputeEntry",
    "ComputeVersion",
    "LLMEntry",
    "LLMVersion",
    "RateFileData",
    "compile_match",
    "parse_rates",
]

_SECTIONS = ("currency", "llm", "api", "compute", "fx")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
_METHOD_RE = re.compile(r"^[A-Za-z]+$")

# Rate-file field -> (genai-prices usage key, per how many units the price is given).
_LLM_PRICE_FIELDS: dict[str, tuple[str, int]] = {
    "input_per_mtok": ("input_tokens", 1_000_000),
    "output_per_mtok": ("output_tokens", 1_000_000),
    "cache_read_per_mtok": ("cache_read_tokens", 1_000_000),
    # Placed on the cache-write ancestor: 1-hour writes without their own price fall back to it (genai-prices' rule).
    "cache_write_per_mtok": ("cache_write_tokens", 1_000_000),
    "cache_write_1h_per_mtok": ("cache_write_1h_tokens", 1_000_000),
    "reasoning_per_mtok": ("output_reasoning_tokens", 1_000_000),
    "input_audio_per_mtok": ("input_audio_tokens", 1_000_000),
    "output_audio_per_mtok": ("output_audio_tokens", 1_000_000),
    "web_search_per_request": ("web_searches", 1),
    "per_request": ("requests", 1),
}
_LLM_FIELDS = frozenset(_LLM_PRICE_FIELDS) | {"effective_from", "batch_multiplier"}
_API_PRICE_FIELDS = ("per_call", "per_unit")
_API_SHAPE_FIELDS = ("match", "method", "event_type", "units")
_API_FIELDS = frozenset(_API_PRICE_FIELDS) | frozenset(_API_SHAPE_FIELDS) | {"effective_from"}
_COMPUTE_FIELDS = frozenset({"per_hour", "per_second", "effective_from"})


@dataclass(frozen=True, slots=True)
class LLMVersion:
    """One dated set of LLM prices (genai-prices usage key -> (price, per))."""

    effective_from: date | None
    prices: Mapping[str, tuple[PriceValue, int]]
    batch_multiplier: Decimal | None


@dataclass(frozen=True, slots=True)
class LLMEntry:
    """``[llm."provider:model"]``: its versions sorted by ``effective_from`` (undated first)."""

    key: str
    provider: str
    model: str
    versions: tuple[LLMVersion, ...]


@dataclass(frozen=True, slots=True)
class ApiVersion:
    """One dated price of an API operation."""

    effective_from: date | None
    per_call: Decimal | None
    per_unit: Decimal | None


@dataclass(frozen=True, slots=True)
class ApiEntry:
    """``[api."provider:operation"]``."""

    key: str
    provider: str
    operation: str
    match: str | None
    method: str | None
    event_type: str
    units: str | None
    versions: tuple[ApiVersion, ...]


@dataclass(frozen=True, slots=True)
class ComputeVersion:
    """One dated price of a compute resource."""

    effective_from: date | None
    per_hour: Decimal | None
    per_second: Decimal | None


@dataclass(frozen=True, slots=True)
class ComputeEntry:
    """``[compute."provider:operation"]``."""

    key: str
    provider: str
    operation: str
    versions: tuple[ComputeVersion, ...]


@dataclass(frozen=True, slots=True)
class RateFileData:
    """A whole validated rate file."""

    currency: str
    llm: tuple[LLMEntry, ...]
    api: tuple[ApiEntry, ...]
    compute: tuple[ComputeEntry, ...]
    fx: Mapping[str, Decimal]


class _Where:
    """Builds error messages that name the source, the table and the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, table: str | None, problem: str) -> ConfigurationError:
        where = f"{self.source}: [{table}] " if table else f"{self.source}: "
        return ConfigurationError(where + problem)


def parse_rates(raw: Mapping[str, Any], source: str) -> RateFileData:
    """Validate the parsed TOML shape of a rate file.

    Args:
        raw: The document as ``tomllib.loads`` returns it (or an equivalent mapping).
        source: Names the file in error messages.

    Raises:
        ConfigurationError: On any unknown key, bad price, bad date or bad ``match`` pattern.
    """
    w = _Where(source)
    if not isinstance(raw, Mapping):
        raise w.error(None, f"a rate table must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise w.error(None, f"unknown top-level key {unknown[0]!r} (allowed: {', '.join(_SECTIONS)})")
    currency = raw.get("currency", "USD")
    if not isinstance(currency, str) or not _CURRENCY_RE.match(currency):
        raise w.error(None, f'currency: expected a 3-letter ISO code like "USD", got {currency!r}')
    llm = tuple(_parse_llm(key, value, w) for key, value in _section(raw, "llm", w).items())
    seen: dict[tuple[str, str], str] = {}
    for entry in llm:
        other = seen.setdefault((entry.provider, entry.model), entry.key)
        if other != entry.key:
            raise w.error(f'llm."{entry.key}"', f'same provider:model as [llm."{other}"] (keys are case-insensitive)')
    return RateFileData(
        currency=currency,
        llm=llm,
        api=tuple(_parse_api(key, value, w) for key, value in _section(raw, "api", w).items()),
        compute=tuple(_parse_compute(key, value, w) for key, value in _section(raw, "compute", w).items()),
        fx=_parse_fx(_section(raw, "fx", w), w),
    )


def _section(raw: Mapping[str, Any], name: str, w: _Where) -> Mapping[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, Mapping):
        raise w.error(name, f"expected a table, got {type(value).__name__}")
    return value


def _split_key(section: str, key: str, w: _Where) -> tuple[str, str, str]:
    table = f'{section}."{key}"'
    provider, sep, rest = key.partition(":")
    if not sep or not provider.strip() or not rest.strip():
        raise w.error(table, 'the key must be "provider:name", e.g. "openai:gpt-4o-mini"')
    return table, provider.strip().lower(), rest.strip()


def _versions(table: str, value: Any, w: _Where) -> list[Mapping[str, Any]]:
    """A table is one version; an array of tables is a price history."""
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, Sequence) and not isinstance(value, str) and value:
        for item in value:
            if not isinstance(item, Mapping):
                raise w.error(table, f"expected tables in the price history, got {type(item).__name__}")
        return list(value)
    raise w.error(table, f"expected a table or a non-empty array of tables, got {type(value).__name__}")


def _check_fields(table: str, version: Mapping[str, Any], allowed: frozenset[str], w: _Where) -> None:
    for name in version:
        if name not in allowed:
            raise w.error(table, f"unknown field {name!r} (allowed: {', '.join(sorted(allowed))})")


def _decimal(table: str, name: str, value: Any, w: _Where, *, positive: bool = False) -> Decimal:
    if isinstance(value, bool):
        raise w.error(table, f"{name}: expected a decimal string, got {value!r}")
    if isinstance(value, float):
        raise w.error(table, f'{name}: write prices as strings, e.g. {name} = "{value!r}" (floats lose digits)')
    if isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, Decimal):
        result = value
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise w.error(table, f"{name}: {value!r} is not a decimal number") from None
    else:
        raise w.error(table, f"{name}: expected a decimal string, got {type(value).__name__}")
    if not result.is_finite():
        raise w.error(table, f"{name}: {value!r} is not a finite number")
    if result < 0:
        raise w.error(table, f"{name}: negative price {value!r}")
    if positive and result == 0:
        raise w.error(table, f"{name}: must be greater than zero, got {value!r}")
    return result


def _date(table: str, value: Any, w: _Where) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        raise w.error(table, f"effective_from: bad date {value.isoformat()!r}: use a date like 2026-01-01, not a time")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise w.error(table, f"effective_from: bad date {value!r}: use a TOML date like 2026-01-01")


def _sorted_by_date(table: str, dated: list[tuple[date | None, Any]], w: _Where) -> list[Any]:
    seen: set[date | None] = set()
    for effective_from, _ in dated:
        if effective_from in seen:
            what = effective_from.isoformat() if effective_from else "no effective_from"
            raise w.error(table, f"two prices with the same effective_from ({what})")
        seen.add(effective_from)
    return [v for _, v in sorted(dated, key=lambda item: item[0] or date.min)]


def _parse_llm(key: str, value: Any, w: _Where) -> LLMEntry:
    table, provider, model = _split_key("llm", key, w)
    dated: list[tuple[date | None, LLMVersion]] = []
    for raw in _versions(table, value, w):
        _check_fields(table, raw, _LLM_FIELDS, w)
        prices: dict[str, tuple[PriceValue, int]] = {}
        for name, (usage_key, per) in _LLM_PRICE_FIELDS.items():
            if name in raw:
                prices[usage_key] = (_decimal(table, name, raw[name], w), per)
        if not prices:
            raise w.error(table, "no price given (e.g. input_per_mtok, output_per_mtok)")
        multiplier = raw.get("batch_multiplier")
        version = LLMVersion(
            effective_from=_date(table, raw.get("effective_from"), w),
            prices=prices,
            batch_multiplier=None if multiplier is None else _decimal(table, "batch_multiplier", multiplier, w),
        )
        dated.append((version.effective_from, version))
    return LLMEntry(key=key, provider=provider, model=model.lower(), versions=tuple(_sorted_by_date(table, dated, w)))


def _parse_api(key: str, value: Any, w: _Where) -> ApiEntry:
    table, provider, operation = _split_key("api", key, w)
    shape: dict[str, str] = {}
    dated: list[tuple[date | None, ApiVersion]] = []
    for raw in _versions(table, value, w):
        _check_fields(table, raw, _API_FIELDS, w)
        for name in _API_SHAPE_FIELDS:
            if name in raw:
                item = raw[name]
                if not isinstance(item, str) or not item.strip():
                    raise w.error(table, f"{name}: expected a non-empty string, got {item!r}")
                if shape.setdefault(name, item) != item:
                    raise w.error(table, f"{name}: differs between entries of the price history")
        per_call = _decimal(table, "per_call", raw["per_call"], w) if "per_call" in raw else None
        per_unit = _decimal(table, "per_unit", raw["per_unit"], w) if "per_unit" in raw else None
        if per_call is None and per_unit is None:
            raise w.error(table, "give per_call or per_unit")
        version = ApiVersion(_date(table, raw.get("effective_from"), w), per_call, per_unit)
        dated.append((version.effective_from, version))
    units = shape.get("units")
    if units is not None and not _valid_units_spec(units):
        raise w.error(table, f'units: expected "$.json.path" or "header:NAME", got {units!r}')
    method = shape.get("method")
    if method is not None and not _METHOD_RE.match(method):
        raise w.error(table, f'method: expected an HTTP method like "GET", got {method!r}')
    match = shape.get("match")
    if match is not None:
        try:
            compile_match(match)
        except ValueError as exc:
            raise w.error(table, f"match: bad pattern {match!r}: {exc}") from None
    return ApiEntry(
        key=key,
        provider=provider,
        operation=operation,
        match=match,
        method=None if method is None else method.upper(),
        event_type=shape.get("event_type", "cost.api"),
        units=units,
        versions=tuple(_sorted_by_date(table, dated, w)),
    )


def _valid_units_spec(spec: str) -> bool:
    if spec.startswith("header:"):
        return bool(spec[len("header:") :].strip())
    return spec.startswith("$.") and len(spec) > 2 and ".." not in spec and not spec.endswith(".")


def _parse_compute(key: str, value: Any, w: _Where) -> ComputeEntry:
    table, provider, operation = _split_key("compute", key, w)
    dated: list[tuple[date | None, ComputeVersion]] = []
    for raw in _versions(table, value, w):
        _check_fields(table, raw, _COMPUTE_FIELDS, w)
        per_hour = _decimal(table, "per_hour", raw["per_hour"], w) if "per_hour" in raw else None
        per_second = _decimal(table, "per_second", raw["per_second"], w) if "per_second" in raw else None
        if (per_hour is None) == (per_second is None):
            raise w.error(table, "give exactly one of per_hour or per_second")
        version = ComputeVersion(_date(table, raw.get("effective_from"), w), per_hour, per_second)
        dated.append((version.effective_from, version))
    return ComputeEntry(
        key=key, provider=provider, operation=operation, versions=tuple(_sorted_by_date(table, dated, w))
    )


def _parse_fx(raw: Mapping[str, Any], w: _Where) -> Mapping[str, Decimal]:
    fx: dict[str, Decimal] = {}
    for code, value in raw.items():
        if code != "USD":
            raise w.error("fx", f"unknown field {code!r}: only USD (the catalog's currency) is converted")
        fx[code] = _decimal("fx", code, value, w, positive=True)
    return fx


def compile_match(pattern: str) -> re.Pattern[str]:
    """Compile a URL ``match`` pattern: ``*`` stands for exactly one path segment (or one host label run).

    Scheme and host are compared case-insensitively; the query string and a trailing ``/`` are ignored.

    Raises:
        ValueError: If the pattern is not an absolute http(s) URL or carries a query string or fragment.
    """
    scheme, sep, rest = pattern.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if "?" in rest or "#" in rest:
        raise ValueError("must not contain a query string or fragment (they are ignored when matching)")
    host, slash, path = rest.partition("/")
    if not host or host == "*":
        raise ValueError("must name a host")
    if "**" in pattern:
        raise ValueError("'**' is not supported; '*' matches exactly one path segment")
    normalised = scheme.lower() + "://" + host.lower() + (slash + path).rstrip("/")
    regex = "".join("[^/]+" if part == "*" else re.escape(part) for part in re.split(r"(\*)", normalised))
    return re.compile(regex)


def normalise_url(url: str) -> str:
    """``url`` in the form ``compile_match`` patterns are matched against (no query, lower-case host)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest = rest.split("#", 1)[0].split("?", 1)[0]
    host, slash, path = rest.partition("/")
    return scheme.lower() + "://" + host.lower() + (slash + path).rstrip("/")
