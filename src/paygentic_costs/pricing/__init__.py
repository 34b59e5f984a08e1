"""Pricing: ``Usage`` + provider + model + time -> ``Price``, from the user's rate file first, then genai-prices."""

from __future__ import annotations

from ._usage import Price, Usage

__all__ = ["Price", "Usage"]
