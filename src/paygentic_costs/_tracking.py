"""``track`` (one event per call) and ``meter`` (duration-priced compute): costs your own code knows about."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar, cast

from ._errors import InvalidCostError, UnattributedCostError
from ._guard import report_internal_error
from ._recorder import check_event_type, to_amount
from .pricing import Usage

__all__ = ["meter", "track"]

F = TypeVar("F", bound=Callable[..., Any])
_NS_PER_HOUR = Decimal(3_600_000_000_000)
_NS_PER_SECOND = Decimal(1_000_000_000)


def _record(event_type: str, **kwargs: Any) -> None:
    from ._runtime import get_runtime

    get_runtime().recorder.record(event_type, **kwargs)


class track:
    """Record one cost event per call of the decorated function (sync or async), after it returns.

    The amount is, in order: ``amount`` (a value, or a callable given the function's result), ``per_call``,
    ``per_unit`` times ``units`` (a number, or a callable given the result), else the rate file's
    ``[api."provider:operation"]`` entry. A call that raises records nothing unless ``charge_errors=True`` (most APIs
    do not bill failed calls; some do).

    Example:
        >>> @track("cost.enrichment", provider="clearbit", operation="enrich", per_call="0.10")
        ... def enrich(domain: str) -> dict: ...

    Args:
        event_type: The cost metric's event type (e.g. ``cost.enrichment``).
        provider: Who you pay (``data.provider``).
        operation: What was done (``data.operation``).
        per_call: Fixed price of one call.
        per_unit: Price of one unit; needs ``units``.
        units: Units consumed: a number, or ``callable(result) -> number``.
        amount: The cost itself: a number, or ``callable(result) -> number``.
        charge_errors: Also record a cost when the call raises.
        **dimensions: Extra fields for ``data`` (for a metric's ``groupBy``).

    Raises:
        InvalidCostError: a price is not a finite, non-negative number, or ``per_unit`` lacks ``units``.
    """

    def __init__(
        self,
        event_type: str,
        *,
        provider: str | None = None,
        operation: str | None = None,
        per_call: object = None,
        per_unit: object = None,
        units: object = None,
        amount: object = None,
        charge_errors: bool = False,
        **dimensions: Any,
    ) -> None:
        self.event_type = check_event_type(event_type)
        self.provider = provider
        self.operation = operation
        self.per_call = to_amount(per_call, "per_call") if per_call is not None else None
        self.per_unit = to_amount(per_unit, "per_unit") if per_unit is not None else None
        if self.per_unit is not None and units is None:
            raise InvalidCostError("per_unit needs units=... (a number or a callable given the result)")
        self.units = units
        self.amount = amount if callable(amount) else (to_amount(amount) if amount is not None else None)
        if (
            self.amount is None
            and self.per_call is None
            and self.per_unit is None
            and (provider is None or operation is None)
        ):
            raise InvalidCostError(
                "track() needs a price (amount/per_call/per_unit) or provider= and operation= "
                "to look one up in the rate file"
            )
        self.charge_errors = charge_errors
        self.dimensions = dimensions

    def _after(self, result: Any) -> None:
        try:
            units = self.units(result) if callable(self.units) else self.units
            kwargs: dict[str, Any] = {
                "provider": self.provider,
                "operation": self.operation,
                "dimensions": self.dimensions or None,
            }
            if callable(self.amount):
                kwargs["amount"] = to_amount(self.amount(result))
            elif self.amount is not None:
                kwargs["amount"] = self.amount
            elif self.per_call is not None:
                kwargs["amount"] = self.per_call
            elif self.per_unit is not None:
                unit_count = to_amount(units, "units")
                kwargs["amount"] = self.per_unit * unit_count
                kwargs["usage"] = Usage(units=unit_count)
            if "usage" not in kwargs:
                kwargs["usage"] = Usage(units=to_amount(units, "units")) if units is not None else Usage(requests=1)
            _record(self.event_type, **kwargs)
        except UnattributedCostError:
            raise  # strict mode: the user asked for loud failures
        except Exception as exc:
            report_internal_error(exc, f"track({self.event_type})")

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    result = await fn(*args, **kwargs)
                except BaseException:
                    if self.charge_errors:
                        self._after(None)
                    raise
                self._after(result)
                return result

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                result = fn(*args, **kwargs)
            except BaseException:
                if self.charge_errors:
                    self._after(None)
                raise
            self._after(result)
            return result

        return cast(F, wrapper)


class meter:
    """Price the wall-clock duration of a block (or of each call of a decorated function) as compute.

    ``per_hour`` / ``per_second`` give the price; without them the rate file's ``[compute."provider:operation"]``
    entry is used. The event carries ``data.seconds`` (exact) and is recorded even if the block raises — the
    compute was used either way. Per-hour prices are divided at Decimal's 28 significant digits.

    Example:
        >>> with meter("cost.compute", provider="aws", operation="gpu-inference", per_hour="3.06"):
        ...     pass

    Raises:
        InvalidCostError: a price is not a finite, non-negative number, or neither a price nor provider/operation.
    """

    def __init__(
        self,
        event_type: str,
        *,
        provider: str | None = None,
        operation: str | None = None,
        per_hour: object = None,
        per_second: object = None,
        **dimensions: Any,
    ) -> None:
        self.event_type = check_event_type(event_type)
        self.provider = provider
        self.operation = operation
        self.per_hour = to_amount(per_hour, "per_hour") if per_hour is not None else None
        self.per_second = to_amount(per_second, "per_second") if per_second is not None else None
        if self.per_hour is None and self.per_second is None and (provider is None or operation is None):
            raise InvalidCostError("meter() needs per_hour=/per_second= or provider= and operation= for the rate file")
        self.dimensions = dimensions
        self._starts: list[int] = []

    def __enter__(self) -> meter:
        self._starts.append(time.perf_counter_ns())
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._finish(time.perf_counter_ns() - self._starts.pop())

    def _finish(self, elapsed_ns: int) -> None:
        try:
            ns = Decimal(elapsed_ns)
            seconds = ns / _NS_PER_SECOND
            kwargs: dict[str, Any] = {
                "provider": self.provider,
                "operation": self.operation,
                "usage": Usage(seconds=seconds),
                "dimensions": self.dimensions or None,
            }
            if self.per_hour is not None:
                kwargs["amount"] = self.per_hour * ns / _NS_PER_HOUR
            elif self.per_second is not None:
                kwargs["amount"] = self.per_second * seconds
            _record(self.event_type, **kwargs)
        except UnattributedCostError:
            raise  # strict mode: the user asked for loud failures
        except Exception as exc:
            report_internal_error(exc, f"meter({self.event_type})")

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter_ns()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    self._finish(time.perf_counter_ns() - start)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                self._finish(time.perf_counter_ns() - start)

        return cast(F, wrapper)
