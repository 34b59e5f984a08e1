"""Management client for Paygentic cost tracking: cost metrics CRUD, cost summaries and reports.

A thin layer over httpx (``Client`` / ``AsyncClient``) with exact ``Decimal`` money in and out, frozen dataclass
results and typed errors. The API key never appears in a repr, a log line or an exception.
"""

from __future__ import annotations

from ._async import AsyncClient
from ._base import DEFAULT_BASE_URL, UNSET, Unset
from ._errors import APIError, AuthError, FieldError, NotFound, RateLimited, ValidationError
from ._models import (
    Cost,
    CostList,
    CostReport,
    CostSummary,
    ReportGroup,
    ReportWindow,
    SummaryGroup,
    SummaryWindow,
)
from ._sync import Client

__all__ = [
    "DEFAULT_BASE_URL",
    "UNSET",
    "APIError",
    "AsyncClient",
    "AuthError",
    "Client",
    "Cost",
    "CostList",
    "CostReport",
    "CostSummary",
    "FieldError",
    "NotFound",
    "RateLimited",
    "ReportGroup",
    "ReportWindow",
    "SummaryGroup",
    "SummaryWindow",
    "Unset",
    "ValidationError",
]
