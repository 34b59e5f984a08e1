"""Attribution: which customer and which job a cost belongs to.

It lives in OpenTelemetry context (one key holding an immutable ``Attribution``), so it follows the user's traces,
flows into asyncio tasks by itself, and is carried into threads by :func:`wrap` (or ``configure(propagate=True)``).
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import inspect
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar, cast

from opentelemetry import context as otel_context

from ._errors import InvalidCostError

__all__ = [
    "ACTIVE_CALL",
    "Attribution",
    "JobState",
    "attribution_for_new_call",
    "current",
    "customer",
    "is_suppressed",
    "job",
    "suppressed",
    "wrap",
]

_KEY = otel_context.create_key("paygentic_costs.attribution")
# Per-call markers are plain ContextVars: they are set around every provider call, and an OTel attach/detach pair
# (a context copy each) costs several times more. They still follow asyncio tasks and pc.wrap() like the rest.
ACTIVE_CALL: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "paygentic_costs_active_call", default=None
)
_suppressed: contextvars.ContextVar[bool] = contextvars.ContextVar("paygentic_costs_suppressed", default=False)
# OpenTelemetry's own "suppress instrumentation" key: honouring it keeps us quiet inside OTel exporters too.
_OTEL_SUPPRESS_KEY: object = getattr(otel_context, "_SUPPRESS_INSTRUMENTATION_KEY", None) or otel_context.create_key(
    "suppress_instrumentation"
)
_EMPTY_DIMS: Mapping[str, Any] = MappingProxyType({})
_MAX_KEY_PREFIX = 100  # Paygentic's key limit is undocumented; Stripe allows 100. Longer ids are hashed, not cut.

F = TypeVar("F", bound=Callable[..., Any])


def _check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidCostError(f"{what} must be a non-empty string, got {value!r}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidCostError(f"{what} must not contain control characters: {value!r}")
    return value


def key_prefix(raw: str) -> str:
    """A job or operation id as it goes into an idempotency key: short ids verbatim, long ones hashed."""
    if len(raw) <= _MAX_KEY_PREFIX:
        return raw
    return raw[:40] + "~" + hashlib.sha256(raw.encode()).hexdigest()[:32]


@dataclass(eq=False)
class JobState:
    """One run of a job: its id and the per-event-type counters shared by every thread and task inside it."""

    job_id: str
    _counters: dict[str, itertools.count[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._prefix = key_prefix(self.job_id)

    def next_key(self, event_type: str) -> str:
        """``J-T`` for the first event of type T in this job, then ``J-T-2``, ``J-T-3`` ...

        ``dict.setdefault`` and ``next(count)`` are each atomic under the GIL, so threads and tasks of one job never
        share a number and no lock sits on the hot path.
        """
        n = next(self._counters.setdefault(event_type, itertools.count(1)))
        return f"{self._prefix}-{event_type}" if n == 1 else f"{self._prefix}-{event_type}-{n}"

    def operation_key(self, event_type: str, operation_id: str) -> str:
        """The key for an explicit ``operation_id`` inside this job (replaces the counter)."""
        return f"{self._prefix}-{event_type}-{key_prefix(operation_id)}"


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who pays for what happens in this context."""

    customer: str | None = None
    external_customer: str | None = None
    job: JobState | None = None
    dimensions: Mapping[str, Any] = field(default_factory=lambda: _EMPTY_DIMS)


_NOBODY = Attribution()


def current() -> Attribution:
    """The attribution in effect here (empty when nothing was set)."""
    value = otel_context.get_value(_KEY)
    return value if isinstance(value, Attribution) else _NOBODY


class _Scope:
    """A context manager that is also a decorator for sync, async and generator functions.

    As a decorator it opens a fresh scope around each call (for ``async def`` around the awaited body, not the
    coroutine's creation), so the attribution lasts exactly as long as the work.
    """

    def __init__(self, build: Callable[[Attribution], Attribution], job_id: str | Callable[..., str] | None) -> None:
        self._build = build
        self._job_id = job_id
        self._tokens: list[object] = []

    def _enter(self, job_id: str | None) -> None:
        base = current()
        if job_id is not None:
            base = replace(base, job=JobState(job_id))
        self._tokens.append(otel_context.attach(otel_context.set_value(_KEY, self._build(base))))

    def __enter__(self) -> Attribution:
        if callable(self._job_id):
            raise InvalidCostError("a job whose id is computed from arguments can only be used as a decorator")
        self._enter(self._job_id)
        return current()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        otel_context.detach(self._tokens.pop())  # type: ignore[arg-type]

    async def __aenter__(self) -> Attribution:
        return self.__enter__()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(et, ev, tb)

    def _resolve_id(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        if callable(self._job_id):
            return _check_id(self._job_id(*args, **kwargs), "job id")
        return self._job_id

    def __call__(self, fn: F) -> F:
        scope = self

        def fresh(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Scope:
            clone = _Scope(scope._build, scope._resolve_id(args, kwargs))
            return clone

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with fresh(args, kwargs):
                    return await fn(*args, **kwargs)

            return cast(F, async_wrapper)
        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def asyncgen_wrapper(*args: Any, **kwargs: Any) -> Any:
                with fresh(args, kwargs):
                    async for item in fn(*args, **kwargs):
                        yield item

            return cast(F, asyncgen_wrapper)
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                with fresh(args, kwargs):
                    return (yield from fn(*args, **kwargs))

            return cast(F, gen_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with fresh(args, kwargs):
                return fn(*args, **kwargs)

        return cast(F, wrapper)


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> Mapping[str, Any]:
    if not extra:
        return base
    return MappingProxyType({**base, **extra})


def job(
    job_id: str | Callable[..., str],
    *,
    customer: str | None = None,
    external_customer: str | None = None,
    **dimensions: Any,
) -> _Scope:
    """Attribute every cost inside to a job (and optionally a customer); keys are derived from the job id.

    Usable as ``with pc.job("job_1", customer="cus_1"):`` or as a decorator on sync and async functions. As a
    decorator ``job_id`` may be a callable that receives the function's arguments and returns the id, so each call
    gets its own job: ``@pc.job(lambda order: f"order-{order.id}", customer=...)``.

    Re-running a job with the same id regenerates the same idempotency keys: Paygentic drops the repeats (within its
    24 h dedup window), so a retried task never bills twice.

    Args:
        job_id: The job's stable id (or a callable computing it from the decorated function's arguments).
        customer: The Paygentic customer id (``cus_…``), sent as ``subject``.
        external_customer: Your own customer id, sent as ``externalSubject`` (Paygentic resolves it).
        **dimensions: Extra fields put into every event's ``data`` inside the job (e.g. ``region="eu"``).

    Raises:
        InvalidCostError: ``job_id`` or a customer id is empty or contains control characters.
    """
    if not callable(job_id):
        _check_id(job_id, "job id")
    if customer is not None:
        _check_id(customer, "customer")
    if external_customer is not None:
        _check_id(external_customer, "external customer")

    def build(base: Attribution) -> Attribution:
        if customer is not None or external_customer is not None:
            base = replace(base, customer=customer, external_customer=external_customer)
        return replace(base, dimensions=_merge(base.dimensions, dimensions))

    return _Scope(build, job_id)


def customer(id: str | None = None, *, external: str | None = None, **dimensions: Any) -> _Scope:
    """Attribute every cost inside to a customer, without starting a job.

    Args:
        id: The Paygentic customer id, sent as ``subject``.
        external: Your own customer id, sent as ``externalSubject`` (used when ``id`` is not given).
        **dimensions: Extra fields put into every event's ``data`` inside the block.

    Raises:
        InvalidCostError: neither ``id`` nor ``external`` was given, or one is empty.
    """
    if id is None and external is None:
        raise InvalidCostError("customer() needs a customer id or external=...")
    if id is not None:
        _check_id(id, "customer")
    if external is not None:
        _check_id(external, "external customer")

    def build(base: Attribution) -> Attribution:
        return replace(base, customer=id, external_customer=external, dimensions=_merge(base.dimensions, dimensions))

    return _Scope(build, None)


def wrap(fn: F) -> F:
    """Bind ``fn`` to the current attribution, to run it later in another thread.

    ``executor.submit(pc.wrap(work), item)`` or ``threading.Thread(target=pc.wrap(work))`` — the one line that carries
    the customer and job into plain threads (asyncio tasks inherit them by themselves).
    """
    captured = contextvars.copy_context()  # the OTel context (attribution) and our per-call markers alike

    @functools.wraps(fn)
    def bound(*args: Any, **kwargs: Any) -> Any:
        # A fresh copy per call: one Context cannot be entered by two threads at once (executor.map(pc.wrap(f))).
        return captured.copy().run(fn, *args, **kwargs)

    return cast(F, bound)


def _otel_context_reader() -> Callable[[], Any]:
    """``opentelemetry.context.get_current``, or the same read without its two Python calls: the ``get`` of the
    ContextVar behind OTel's default runtime context (chosen once, at OTel's import, from ``OTEL_PYTHON_CONTEXT``).
    Any other runtime context, or a future OTel that moved this private field, gets the public function."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if type(runtime).__name__ == "ContextVarsRuntimeContext" and isinstance(var, contextvars.ContextVar):
        return var.get
    return otel_context.get_current


_otel_current = _otel_context_reader()


def attribution_for_new_call() -> Attribution | None:
    """The attribution a new provider call opened here is billed to; None when it must not be recorded.

    None: instrumentation is suppressed (ours or OpenTelemetry's), or a provider call is already active (an outer
    layer records it). One read of the OTel context for both questions: this runs on every instrumented call.
    """
    if _suppressed.get() or ACTIVE_CALL.get() is not None:
        return None
    context = _otel_current()
    if context.get(_OTEL_SUPPRESS_KEY):
        return None
    value = context.get(_KEY)
    return value if isinstance(value, Attribution) else _NOBODY


def is_suppressed() -> bool:
    """True inside :func:`suppressed` (and inside OpenTelemetry's own suppression, e.g. its exporters)."""
    return _suppressed.get() or bool(otel_context.get_value(_OTEL_SUPPRESS_KEY))  # type: ignore[arg-type]


class suppressed:
    """Nothing inside is recorded by any integration (our own export traffic runs under this)."""

    def __enter__(self) -> None:
        self._token = _suppressed.set(True)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        _suppressed.reset(self._token)
