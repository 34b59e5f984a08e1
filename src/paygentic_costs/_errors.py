"""Exceptions raised to users. Only explicit calls raise; the hot path never does (see the error policy)."""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "IntegrationUnavailable",
    "InvalidCostError",
    "PaygenticCostsError",
    "UnattributedCostError",
]


class PaygenticCostsError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigurationError(PaygenticCostsError, ValueError):
    """``configure()`` got a setting it cannot use (bad value, unreadable or malformed rate file)."""


class InvalidCostError(PaygenticCostsError, ValueError):
    """An explicit ``record()`` / ``track()`` / ``meter()`` argument is invalid (amount not a finite, non-negative
    number, bad event type, ...)."""


class UnattributedCostError(PaygenticCostsError):
    """Raised only with ``configure(strict=True)``: a cost was recorded with no customer in context."""


class IntegrationUnavailable(PaygenticCostsError, ImportError):
    """An explicitly requested integration is not installed, or its SDK is missing or out of range."""
