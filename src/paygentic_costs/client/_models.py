"""Typed results of the management client: frozen dataclasses, money and quantities as exact ``Decimal``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

__all__ = [
    "Cost",
    "CostList",
    "CostReport",
    "CostSummary",
    "ReportGroup",
    "ReportWindow",
    "SummaryGroup",
    "SummaryWindow",
]


def _time(value: str) -> datetime:
    # fromisoformat on Python 3.10 rejects "Z"; the API always sends UTC.
    return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))


def _opt_time(value: str | None) -> datetime | None:
    return None if value is None else _time(value)


def _dec(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _opt_dec(value: Any) -> Decimal | None:
    return None if value is None else _dec(value)


@dataclass(frozen=True, slots=True)
class Cost:
    """A metered cost definition (``Cost`` in the API)."""

    id: str
    name: str
    currency: str
    unit_cost: Decimal
    product_id: str
    merchant_id: str
    created_at: datetime
    updated_at: datetime
    aggregation: str | None = None
    event_type: str | None = None
    value_property: str | None = None
    group_by: Mapping[str, str] | None = None
    unit: str | None = None

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Cost:
        """Build from the API's JSON object."""
        group_by = raw.get("groupBy")
        return cls(
            id=raw["id"],
            name=raw["name"],
            currency=raw["currency"],
            unit_cost=_dec(raw["unitCost"]),
            product_id=raw["productId"],
            merchant_id=raw["merchantId"],
            created_at=_time(raw["createdAt"]),
            updated_at=_time(raw["updatedAt"]),
            aggregation=raw.get("aggregation"),
            event_type=raw.get("eventType"),
            value_property=raw.get("valueProperty"),
            group_by=None if group_by is None else MappingProxyType(dict(group_by)),
            unit=raw.get("unit"),
        )


@dataclass(frozen=True, slots=True)
class CostList:
    """One page of costs."""

    data: tuple[Cost, ...]
    limit: int
    offset: int
    total: int

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> CostList:
        """Build from the API's JSON object."""
        page = raw["pagination"]
        return cls(tuple(Cost.from_json(c) for c in raw["data"]), page["limit"], page["offset"], page["total"])


@dataclass(frozen=True, slots=True)
class SummaryGroup:
    """Quantity and cost of one combination of dimension values."""

    dimensions: Mapping[str, str]
    quantity: Decimal
    cost: Decimal


@dataclass(frozen=True, slots=True)
class SummaryWindow:
    """Quantity and cost of one time window ``[window_start, window_end)``."""

    window_start: datetime
    window_end: datetime
    quantity: Decimal
    cost: Decimal


@dataclass(frozen=True, slots=True)
class CostSummary:
    """A cost's usage and total over a period (``CostUsageResponse``); ``total_cost`` is ``None`` if not computed."""

    id: str
    name: str
    currency: str
    total_cost: Decimal | None
    total_quantity: Decimal | None
    event_type: str | None = None
    unit: str | None = None
    groups: tuple[SummaryGroup, ...] = ()
    time_series: tuple[SummaryWindow, ...] = ()

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> CostSummary:
        """Build from the API's JSON object."""
        return cls(
            id=raw["id"],
            name=raw["name"],
            currency=raw["currency"],
            total_cost=_opt_dec(raw["totalCost"]),
            total_quantity=_opt_dec(raw.get("totalQuantity")),
            event_type=raw.get("eventType"),
            unit=raw.get("unit"),
            groups=tuple(
                SummaryGroup(MappingProxyType(dict(g["dimensions"])), _dec(g["quantity"]), _dec(g["cost"]))
                for g in raw.get("groups") or ()
            ),
            time_series=tuple(
                SummaryWindow(_time(w["windowStart"]), _time(w["windowEnd"]), _dec(w["quantity"]), _dec(w["cost"]))
                for w in raw.get("timeSeries") or ()
            ),
        )


@dataclass(frozen=True, slots=True)
class ReportGroup:
    """One report row; ``is_other`` marks the ``__other__`` bucket holding everything past the top N."""

    key: str
    label: str
    total_cost: Decimal
    total_quantity: Decimal
    percent_of_total: Decimal
    is_other: bool
    unit: str | None = None
    prior_cost: Decimal | None = None
    change_percent: Decimal | None = None

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ReportGroup:
        """Build from the API's JSON object."""
        prior = raw.get("priorPeriod") or {}
        return cls(
            key=raw["key"],
            label=raw["label"],
            total_cost=_dec(raw["totalCost"]),
            total_quantity=_dec(raw["totalQuantity"]),
            percent_of_total=_dec(raw["percentOfTotal"]),
            is_other=bool(raw["isOther"]),
            unit=raw.get("unit"),
            prior_cost=_opt_dec(prior.get("cost")),
            change_percent=_opt_dec(prior.get("changePercent")),
        )


@dataclass(frozen=True, slots=True)
class ReportWindow:
    """Cost per group key in one time window."""

    window_start: datetime
    window_end: datetime
    groups: Mapping[str, Decimal]


@dataclass(frozen=True, slots=True)
class CostReport:
    """Cost across costs, customers or a dimension (``CostReportResponse``)."""

    currency: str
    period_from: datetime
    period_to: datetime
    group_by: str
    total_cost: Decimal
    total_quantity: Decimal
    groups: tuple[ReportGroup, ...]
    time_series: tuple[ReportWindow, ...]
    available_dimensions: tuple[str, ...]
    total: int
    limit: int
    offset: int
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> CostReport:
        """Build from the API's JSON object."""
        page = raw["pagination"]
        return cls(
            currency=raw["currency"],
            period_from=_time(raw["period"]["from"]),
            period_to=_time(raw["period"]["to"]),
            group_by=raw["groupBy"],
            total_cost=_dec(raw["totalCost"]),
            total_quantity=_dec(raw["totalQuantity"]),
            groups=tuple(ReportGroup.from_json(g) for g in raw["groups"]),
            time_series=tuple(
                ReportWindow(
                    _time(w["windowStart"]),
                    _time(w["windowEnd"]),
                    MappingProxyType({k: _dec(v) for k, v in w["groups"].items()}),
                )
                for w in raw["timeSeries"]
            ),
            available_dimensions=tuple(raw["availableDimensions"]),
            total=page["total"],
            limit=page["limit"],
            offset=page["offset"],
            warnings=tuple(raw.get("warnings") or ()),
        )
