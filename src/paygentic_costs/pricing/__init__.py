"""Pricing: ``Usage`` + provider + model + time -> ``Price``, from the user's rate file first, then genai-prices."""

from __future__ import annotations

from ._plan import Unpriced
from ._table import ApiRate, RateTable
from ._unpriced import UnpricedStore
from ._usage import Price, Usage

__all__ = ["ApiRate", "Price", "RateTable", "Unpriced", "UnpricedStore", "Usage"]
