"""Pricing: ``Usage`` + provider + model + time -> ``Price``, from the user's rate file first, then genai-prices."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._plan import Unpriced
from ._unpriced import UnpricedStore
from ._usage import Price, Usage

if TYPE_CHECKING:
    from ._table import ApiRate, RateTable

__all__ = ["ApiRate", "Price", "RateTable", "Unpriced", "UnpricedStore", "Usage"]


def __getattr__(name: str) -> Any:
    # RateTable and ApiRate import genai-prices (and pydantic): load them on first use, not with the package.
    if name in ("ApiRate", "RateTable"):
        from . import _table

        return getattr(_table, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
