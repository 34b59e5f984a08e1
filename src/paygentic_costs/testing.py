"""Test helpers for your own test suite: see the costs your code records, synchronously, with no network.

    from paygentic_costs.testing import capture

    def test_enrichment_costs():
        with capture() as costs:
            enrich_company("acme.com")          # your code, instrumented
        assert costs.total() == Decimal("0.10")
        assert costs.events[0].subject == "cus_abc123"

With pytest, the ``cost_capture`` fixture (installed with the package) does the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from types import TracebackType

from ._events import CostEvent

try:  # the fixture exists only where pytest does; capture() needs nothing
    import pytest
except ImportError:  # pragma: no cover - exercised only without pytest installed
    pytest = None  # type: ignore[assignment]

__all__ = ["Capture", "capture", "cost_capture", "internal_errors"]


class Capture:
    """The events recorded while the capture was active, in order."""

    def __init__(self) -> None:
        self.events: list[CostEvent] = []
        self._active = False

    def __enter__(self) -> Capture:
        from ._runtime import get_runtime

        get_runtime().recorder.captures.append(self.events)
        self._active = True
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        from ._runtime import current_runtime

        runtime = current_runtime()
        if runtime is not None and self.events in runtime.recorder.captures:
            runtime.recorder.captures.remove(self.events)
        self._active = False

    def total(self, customer: str | None = None) -> Decimal:
        """Sum of amounts (optionally for one customer), exact."""
        return sum((e.amount for e in self.events if customer is None or e.customer == customer), Decimal(0))

    def by_customer(self) -> dict[str, Decimal]:
        """Total per customer."""
        totals: dict[str, Decimal] = {}
        for event in self.events:
            key = event.customer or ""
            totals[key] = totals.get(key, Decimal(0)) + event.amount
        return totals

    def of_type(self, event_type: str) -> list[CostEvent]:
        """The events of one type."""
        return [e for e in self.events if e.type == event_type]

    def clear(self) -> None:
        """Forget what was captured so far."""
        self.events.clear()


@contextmanager
def internal_errors() -> Iterator[list[BaseException]]:
    """Collect the internal errors the library swallowed inside the block (so a test can fail on them).

    In production such errors are logged once and never raised into your code; in tests you usually want them loud::

        with internal_errors() as errors:
            run_my_code()
        assert not errors
    """
    from ._guard import get_error_sink, set_error_sink

    collected: list[BaseException] = []
    previous = get_error_sink()

    def sink(exc: BaseException) -> None:
        collected.append(exc)
        if previous is not None:
            previous(exc)

    set_error_sink(sink)
    try:
        yield collected
    finally:
        set_error_sink(previous)


def capture() -> Capture:
    """Capture recorded costs instead of sending them (context manager)."""
    return Capture()


def _cost_capture() -> Iterator[Capture]:
    """Pytest fixture: the costs recorded during the test, never sent anywhere."""
    with capture() as captured:
        yield captured


cost_capture = pytest.fixture(name="cost_capture")(_cost_capture) if pytest is not None else _cost_capture
