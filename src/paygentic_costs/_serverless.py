"""``flush_after``: deliver at the end of each invocation, for serverless handlers and short-lived jobs.

A serverless platform (AWS Lambda, Cloud Functions, Cloud Run with request-only CPU) freezes the process as soon as
the handler returns: the background sender stops mid-flight and anything not acknowledged by then is sent minutes
later, when the next invocation thaws the process, or never. The decorator flushes in ``finally`` with a deadline
that leaves the platform's own timeout untouched, then pauses the pipeline so no request starts while the process
may be frozen; the next invocation resumes it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

from . import _runtime
from ._config import SERVERLESS_ENV_VARS, is_serverless
from ._errors import ConfigurationError
from ._guard import report_internal_error

if TYPE_CHECKING:
    from .export import DeliveryPipeline

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["DEFAULT_FLUSH_TIMEOUT", "DEFAULT_MARGIN", "SERVERLESS_ENV_VARS", "flush_after", "is_serverless"]

DEFAULT_FLUSH_TIMEOUT = 2.0
"""Seconds the end-of-invocation flush may take at most (Sentry's Lambda integration uses 2 s as well)."""

DEFAULT_MARGIN = 0.5
"""Seconds kept free before the invocation's deadline: the platform must still get the handler's answer."""

class _Invocations:
    """Counts invocations in progress so that concurrent ones (Cloud Run, async handlers) never pause each other:
    the pipeline is paused only when the last one ends, and resumed when any begins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._paused: weakref.ref[DeliveryPipeline] | None = None  # the pipeline this module paused, if any

    def begin(self) -> None:
        with self._lock:
            self._active += 1
            paused, self._paused = self._paused, None
            pipeline = paused() if paused is not None else None
            if pipeline is not None:
                pipeline.resume()

    def end(self, pause: bool) -> DeliveryPipeline | None:
        """Leave an invocation; returns the current pipeline (paused when this was the last invocation)."""
        runtime = _runtime.current_runtime()
        pipeline = runtime.pipeline if runtime is not None else None
        with self._lock:
            self._active = max(0, self._active - 1)
            if pause and pipeline is not None and self._active == 0:
                # Paused before the flush: the flush still sends while it runs, and when it returns no new request
                # can start before the platform freezes the process.
                pipeline.pause()
                self._paused = weakref.ref(pipeline)
        return pipeline


_invocations = _Invocations()


def _remaining_seconds(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[], float] | None:
    """A reader of the invocation's remaining time from a Lambda-style ``context`` argument, if one was passed."""
    for value in (*args, *kwargs.values()):
        reader = getattr(value, "get_remaining_time_in_millis", None)
        if callable(reader):
            return lambda: float(reader()) / 1000.0
    return None


class _Invocation:
    """One call of a decorated handler: when it must end, and whether the pipeline is paused afterwards."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any], *, timeout: float, deadline: float | None,
                 margin: float, pause: bool | None) -> None:
        started = time.monotonic()
        self._timeout = timeout
        self._margin = margin
        remaining = _remaining_seconds(args, kwargs)
        if remaining is None and deadline is not None:
            remaining = lambda: deadline - (time.monotonic() - started)  # noqa: E731
        self._remaining = remaining
        # Pausing only makes sense where the process may be frozen; elsewhere (a Celery task, a script) it would stop
        # delivery of everything other threads record until the next decorated call.
        self._pause = pause if pause is not None else (remaining is not None or is_serverless())
        _invocations.begin()

    def budget(self) -> float:
        """``min(timeout, remaining - margin)``, never negative; the remaining time is read now (it is a countdown)."""
        budget = self._timeout
        if self._remaining is not None:
            try:
                budget = min(budget, self._remaining() - self._margin)
            except Exception as exc:  # a broken context object must not break the handler
                report_internal_error(exc, "flush_after.remaining_time")
        return max(0.0, budget)

    def finish(self) -> None:
        try:
            pipeline = _invocations.end(self._pause)
            if pipeline is not None:
                runtime = _runtime.current_runtime()
                if runtime is not None:
                    runtime.flush(self.budget())
        except Exception as exc:
            report_internal_error(exc, "flush_after")

    async def afinish(self) -> None:
        try:
            pipeline = _invocations.end(self._pause)
            if pipeline is not None:
                runtime = _runtime.current_runtime()
                if runtime is not None:
                    await asyncio.to_thread(runtime.flush, self.budget())
        except Exception as exc:
            report_internal_error(exc, "flush_after")


@overload
def flush_after(handler: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def flush_after(
    *,
    timeout: float = DEFAULT_FLUSH_TIMEOUT,
    deadline: float | None = None,
    margin: float = DEFAULT_MARGIN,
    pause: bool | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def flush_after(
    handler: Callable[P, R] | None = None,
    /,
    *,
    timeout: float = DEFAULT_FLUSH_TIMEOUT,
    deadline: float | None = None,
    margin: float = DEFAULT_MARGIN,
    pause: bool | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a serverless handler (or any job function) so each call ends by delivering what it recorded.

    After the handler returns or raises, waits until every cost recorded so far is acknowledged, at most
    ``min(timeout, remaining - margin)`` seconds, where ``remaining`` is the invocation's time left: read from a
    Lambda-style ``context`` argument (any argument with ``get_remaining_time_in_millis()``), else ``deadline``
    seconds from the start of the call. Then, on a serverless platform, the pipeline is paused so that no request
    starts while the process is frozen; the next decorated call resumes it (anything still queued is sent then).

    The handler's return value and exceptions pass through untouched; the flush never raises. Works on ``def`` and
    ``async def`` handlers (the async flush waits in a worker thread, so the event loop keeps running).

    Example::

        @pc.flush_after
        def handler(event, context):
            with pc.job(event["job_id"], customer=event["customer"]):
                ...

    Args:
        handler: The function to decorate (when used as a bare ``@flush_after``).
        timeout: The longest the flush may take, in seconds.
        deadline: The invocation's time limit in seconds from the start of the call, when no Lambda-style
            ``context`` argument tells the remaining time.
        margin: Seconds left free before the deadline, for the platform to receive the handler's answer.
        pause: Pause delivery between invocations. Default: when the call has a ``context`` or ``deadline``, or an
            environment variable of a serverless platform is set (``AWS_LAMBDA_FUNCTION_NAME``, ``K_SERVICE``...).

    Returns:
        The decorated handler, or a decorator when called with keyword arguments only.

    Raises:
        ConfigurationError: ``timeout``, ``deadline`` or ``margin`` is negative or not a number.
    """
    for name, value in (("timeout", timeout), ("margin", margin), ("deadline", deadline)):
        if value is not None and not value >= 0:  # also rejects NaN
            raise ConfigurationError(f"flush_after: {name} must be a non-negative number of seconds, got {value!r}")

    def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Invocation:
        return _Invocation(args, kwargs, timeout=timeout, deadline=deadline, margin=margin, pause=pause)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(fn):
            async_fn = cast("Callable[P, Awaitable[Any]]", fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                invocation = start(args, kwargs)
                try:
                    return await async_fn(*args, **kwargs)
                finally:
                    await invocation.afinish()

            return cast("Callable[P, R]", async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            invocation = start(args, kwargs)
            try:
                return fn(*args, **kwargs)
            finally:
                invocation.finish()

        return wrapper

    if handler is not None:
        return decorate(handler)
    return decorate
