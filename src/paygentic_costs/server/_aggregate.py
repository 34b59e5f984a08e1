"""Cost arithmetic over matched events: the seven aggregations, groups, time windows and the report.

Pure functions over rows the store has already filtered (organisation, event type, ``from <= t < to``, customer).
Arithmetic is ``Decimal``: sums and products are exact (1,000 significant digits, far beyond any amount), divisions
(AVG, percentages) use decimal128 precision.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal
from typing import Any, Protocol

from paygentic_costs.client._json import dumps

__all__ = [
    "NEEDS_VALUE",
    "OTHER_KEY",
    "Metric",
    "ReportGroup",
    "ReportInput",
    "ReportResult",
    "Row",
    "build_report",
    "change_percent",
    "cost_of",
    "matches",
    "percent",
    "quantity",
    "summarize",
    "window_start",
]

_EXACT = Context(prec=1000, Emax=MAX_EMAX, Emin=MIN_EMIN)
_RATIO = Context(prec=34)
_PERCENT = Context(prec=12)
_ZERO = Decimal(0)
_HUNDRED = Decimal(100)

# Which aggregations read a value at ``valueProperty`` (COUNT counts events).
NEEDS_VALUE = frozenset({"SUM", "AVG", "MIN", "MAX", "LATEST", "UNIQUE_COUNT"})

_FIXED_WINDOWS_US = {"MINUTE": 60_000_000, "HOUR": 3_600_000_000, "DAY": 86_400_000_000}
OTHER_KEY = "__other__"


@dataclass(frozen=True, slots=True)
class Row:
    """One matched event, reduced to what aggregation reads.

    ``value`` is the JSON value at the cost's ``valueProperty`` (numbers as ``int``/``Decimal``), ``None`` when the
    path is absent or null. ``dims`` maps every dimension of the cost's ``groupBy`` to its string value.
    """

    ts_us: int
    customer: str
    value: Any
    dims: Mapping[str, str]


class Metric(Protocol):
    """What aggregation needs to know about a cost."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def unit(self) -> str | None: ...
    @property
    def aggregation(self) -> str | None: ...
    @property
    def unit_cost(self) -> Decimal: ...


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        return value
    return None


def _unique_key(value: Any) -> str:
    number = _number(value)
    # 1, 1.0 and 1e0 are one value; anything else compares by its canonical JSON text.
    return f"n:{number.normalize(_EXACT)}" if number is not None else f"j:{dumps(value)}"


def quantity(aggregation: str, rows: Sequence[Row]) -> Decimal:
    """The measured quantity of ``rows`` (in time order) under ``aggregation``; 0 when nothing is measurable.

    Non-numeric values are skipped by SUM/AVG/MIN/MAX/LATEST; UNIQUE_COUNT counts distinct present values.
    """
    if aggregation == "COUNT":
        return Decimal(len(rows))
    if aggregation == "UNIQUE_COUNT":
        return Decimal(len({_unique_key(row.value) for row in rows if row.value is not None}))
    numbers = [n for n in (_number(row.value) for row in rows) if n is not None]
    if not numbers:
        return _ZERO
    if aggregation == "SUM":
        return _sum(numbers)
    if aggregation == "AVG":
        return _RATIO.divide(_sum(numbers), Decimal(len(numbers)))
    if aggregation == "MIN":
        return min(numbers)
    if aggregation == "MAX":
        return max(numbers)
    if aggregation == "LATEST":
        return numbers[-1]
    raise ValueError(f"unknown aggregation {aggregation!r}")


def _sum(values: Iterable[Decimal]) -> Decimal:
    total = _ZERO
    for value in values:
        total = _EXACT.add(total, value)
    return total


def cost_of(amount: Decimal, unit_cost: Decimal) -> Decimal:
    """``amount * unitCost``, exact."""
    return _EXACT.multiply(amount, unit_cost)


def matches(row: Row, filters: Mapping[str, str]) -> bool:
    """Whether every ``filterGroupBy`` dimension of ``row`` equals the filter's value."""
    return all(row.dims.get(name) == wanted for name, wanted in filters.items())


def window_start(size: str, ts_us: int) -> tuple[int, int]:
    """The UTC-aligned window (``MINUTE``/``HOUR``/``DAY``/``MONTH``) holding ``ts_us``, as ``(start, end)``."""
    if size in _FIXED_WINDOWS_US:
        width = _FIXED_WINDOWS_US[size]
        start = ts_us - ts_us % width
        return start, start + width
    moment = datetime.fromtimestamp(ts_us // 1_000_000, tz=timezone.utc)
    first = datetime(moment.year, moment.month, 1, tzinfo=timezone.utc)
    days = calendar.monthrange(moment.year, moment.month)[1]
    start = int(first.timestamp()) * 1_000_000
    return start, start + days * 86_400_000_000


def _partition(rows: Iterable[Row], key: Callable[[Row], Any]) -> dict[Any, list[Row]]:
    out: dict[Any, list[Row]] = defaultdict(list)
    for row in rows:
        out[key(row)].append(row)
    return out


def summarize(
    metric: Metric, rows: Sequence[Row], *, group_by: Sequence[str] | None, window: str | None
) -> dict[str, Any]:
    """The computed part of a cost summary: ``totalQuantity``, ``totalCost``, and ``groups`` / ``timeSeries`` when
    asked for. Quantities are ``null`` when the cost has no aggregation to compute."""
    aggregation = metric.aggregation
    out: dict[str, Any] = {}
    if aggregation is None:
        out.update(totalQuantity=None, totalCost=None)
    else:
        total = quantity(aggregation, rows)
        out.update(totalQuantity=total, totalCost=cost_of(total, metric.unit_cost))
    if group_by is not None:
        groups = []
        if aggregation is not None:
            parts = _partition(rows, lambda r: tuple(r.dims.get(name, "") for name in group_by))
            for values in sorted(parts):
                amount = quantity(aggregation, parts[values])
                dimensions = dict(zip(group_by, values, strict=True))
                groups.append({"dimensions": dimensions, "quantity": amount, "cost": cost_of(amount, metric.unit_cost)})
        out["groups"] = groups
    if window is not None:
        series = []
        if aggregation is not None:
            parts = _partition(rows, lambda r: window_start(window, r.ts_us))
            for start, end in sorted(parts):
                amount = quantity(aggregation, parts[(start, end)])
                series.append(
                    {
                        "windowStart": start,
                        "windowEnd": end,
                        "quantity": amount,
                        "cost": cost_of(amount, metric.unit_cost),
                    }
                )
        out["timeSeries"] = series
    return out


@dataclass(frozen=True, slots=True)
class ReportInput:
    """One cost's matched rows in the period and, when comparing, in the prior period."""

    metric: Metric
    rows: Sequence[Row]
    prior_rows: Sequence[Row] | None = None


@dataclass(slots=True)
class ReportGroup:
    """One report group (or the ``__other__`` bucket)."""

    key: str
    label: str
    total_cost: Decimal = _ZERO
    total_quantity: Decimal = _ZERO
    prior_cost: Decimal = _ZERO
    unit: str | None = None
    is_other: bool = False


@dataclass(frozen=True, slots=True)
class ReportResult:
    """A computed report, before pagination and serialisation."""

    groups: list[ReportGroup]
    windows: list[tuple[int, int, dict[str, Decimal]]]
    total_cost: Decimal
    total_quantity: Decimal
    group_count: int
    empty_group_count: int


def _group_key(group_by: str) -> Callable[[Metric, Row], str]:
    if group_by == "cost":
        return lambda metric, row: metric.id
    if group_by == "customer":
        return lambda metric, row: row.customer
    return lambda metric, row: row.dims.get(group_by, "")


def build_report(
    inputs: Sequence[ReportInput],
    *,
    group_by: str,
    window_size: str | None,
    top_n: int,
    sort: str,
    descending: bool,
    exclude_empty: bool,
) -> ReportResult:
    """Group cost across ``inputs``, rank, keep the top ``top_n`` and fold the rest into ``__other__``."""
    key_of = _group_key(group_by)
    groups: dict[str, ReportGroup] = {}
    per_window: dict[tuple[int, int], dict[str, Decimal]] = defaultdict(lambda: defaultdict(lambda: _ZERO))

    for entry in inputs:
        metric = entry.metric
        if metric.aggregation is None:
            continue
        aggregation = metric.aggregation

        def group(key: str, metric: Metric = metric) -> ReportGroup:
            if key not in groups:
                by_cost = group_by == "cost"
                unit = metric.unit if group_by != "customer" else None
                groups[key] = ReportGroup(key=key, label=metric.name if by_cost else key, unit=unit)
            return groups[key]

        def row_key(row: Row, metric: Metric = metric) -> str:
            return key_of(metric, row)

        def cell_key(row: Row, metric: Metric = metric) -> tuple[str, tuple[int, int]]:
            return key_of(metric, row), window_start(window_size or "DAY", row.ts_us)

        if group_by == "cost":
            group(metric.id)  # every cost in scope is a group, empty or not
        for key, rows in _partition(entry.rows, row_key).items():
            amount = quantity(aggregation, rows)
            target = group(key)
            target.total_quantity = _EXACT.add(target.total_quantity, amount)
            target.total_cost = _EXACT.add(target.total_cost, cost_of(amount, metric.unit_cost))
        if window_size is not None:
            cells = _partition(entry.rows, cell_key)
            for (key, bounds), rows in cells.items():
                cell = per_window[bounds]
                cell[key] = _EXACT.add(cell[key], cost_of(quantity(aggregation, rows), metric.unit_cost))
        for key, rows in _partition(entry.prior_rows or (), row_key).items():
            target = group(key)
            target.prior_cost = _EXACT.add(target.prior_cost, cost_of(quantity(aggregation, rows), metric.unit_cost))

    found = list(groups.values())
    empty = [g for g in found if g.total_cost.is_zero() and g.total_quantity.is_zero()]
    kept = [g for g in found if not exclude_empty or g not in empty]
    field = "total_cost" if sort == "totalCost" else "total_quantity"
    kept.sort(key=lambda g: g.key)
    kept.sort(key=lambda g: getattr(g, field), reverse=descending)  # stable: ties stay in key order
    top, rest = kept[:top_n], kept[top_n:]
    if rest:
        other = ReportGroup(key=OTHER_KEY, label="Other", is_other=True)
        other.total_cost = _sum(g.total_cost for g in rest)
        other.total_quantity = _sum(g.total_quantity for g in rest)
        other.prior_cost = _sum(g.prior_cost for g in rest)
        top.append(other)
    shown = {g.key for g in top}
    dropped = {g.key for g in empty} if exclude_empty else set()
    windows = []
    for bounds in sorted(per_window):
        folded: dict[str, Decimal] = defaultdict(lambda: _ZERO)
        for key, amount in per_window[bounds].items():
            if key in dropped:
                continue
            slot = key if key in shown else OTHER_KEY
            folded[slot] = _EXACT.add(folded[slot], amount)
        windows.append((bounds[0], bounds[1], dict(folded)))
    return ReportResult(
        groups=top,
        windows=windows,
        total_cost=_sum(g.total_cost for g in kept),
        total_quantity=_sum(g.total_quantity for g in kept),
        group_count=len(found),
        empty_group_count=len(empty) if exclude_empty else 0,
    )


def percent(part: Decimal, whole: Decimal) -> Decimal:
    """``part`` as a percentage of ``whole`` (0 when ``whole`` is 0)."""
    return _ZERO if whole.is_zero() else _PERCENT.multiply(_PERCENT.divide(part, whole), _HUNDRED)


def change_percent(current: Decimal, prior: Decimal) -> Decimal | None:
    """Change from ``prior`` to ``current`` in percent; ``None`` when ``prior`` is 0 (as the API documents)."""
    if prior.is_zero():
        return None
    return _PERCENT.multiply(_PERCENT.divide(_EXACT.subtract(current, prior), prior), _HUNDRED)
