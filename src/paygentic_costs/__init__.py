"""paygentic-costs: record what it costs to serve each customer and ship it to Paygentic cost tracking.

Quick start::

    import paygentic_costs as pc

    pc.configure(api_key="sk_live_...", source="https://api.myapp.com")
    pc.instrument()                                   # every installed provider integration

    with pc.job("job_xyz789", customer="cus_abc123"):
        ...                                           # LLM calls in here are priced and billed to cus_abc123
        pc.record("cost.enrichment", amount="0.0010", provider="clearbit", operation="enrich")

Importing this package reads no environment variable, starts no thread and patches nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import _registry, _runtime
from ._context import customer, job, wrap
from ._errors import (
    ConfigurationError,
    IntegrationUnavailable,
    InvalidCostError,
    PaygenticCostsError,
    UnattributedCostError,
)
from ._events import CostEvent
from ._serverless import flush_after
from ._tracking import meter, track
from .export._base import Exporter
from .pricing import Price, Usage

if TYPE_CHECKING:
    from .pricing import RateTable


def __getattr__(name: str) -> Any:
    # RateTable pulls in the catalog adapter; keep `import paygentic_costs` light.
    if name == "RateTable":
        from .pricing import RateTable

        return RateTable
    raise AttributeError(f"module 'paygentic_costs' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "CostEvent",
    "IntegrationUnavailable",
    "InvalidCostError",
    "PaygenticCostsError",
    "Price",
    "RateTable",
    "UnattributedCostError",
    "Usage",
    "__version__",
    "aflush",
    "configure",
    "customer",
    "flush",
    "flush_after",
    "instrument",
    "job",
    "meter",
    "record",
    "reprice",
    "shutdown",
    "stats",
    "track",
    "uninstrument",
    "wrap",
]


def configure(
    api_key: str | None = None,
    *,
    base_url: str | None = None,
    source: str | None = None,
    rates: str | os.PathLike[str] | RateTable | dict[str, Any] | None = None,
    exporter: Exporter | None = None,
    max_queue_size: int = 10_000,
    max_in_flight: int = 8,
    shutdown_timeout: float = 5.0,
    spool_dir: str | os.PathLike[str] | bool | None = None,
    spool_max_bytes: int | None = None,
    durability: str = "batch",
    strict: bool | None = None,
    propagate: bool | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    on_error: Callable[[str, str, str], None] | None = None,
) -> None:
    """Configure the library (call once at start-up; calling again replaces the previous configuration).

    Every argument falls back to an environment variable, then to a default. With no API key anywhere, events are
    printed to stderr by the console exporter (one notice says so) — never silently sent nowhere.

    Args:
        api_key: Paygentic API key (env ``PAYGENTIC_API_KEY``, or ``PAYGENTIC_BEARER_AUTH``). Never logged.
        base_url: API base URL (env ``PAYGENTIC_BASE_URL``; default ``https://api.paygentic.io``; sandbox
            ``https://api.sandbox.paygentic.io``; a local ``paygentic-costs serve`` is ``http://127.0.0.1:8787``).
        source: The events' ``source`` URI identifying your application (env ``PAYGENTIC_COSTS_SOURCE``).
        rates: Your rate file (TOML path), a parsed mapping, or a ``RateTable`` (env ``PAYGENTIC_COSTS_RATES``);
            its prices win over the bundled genai-prices catalog.
        exporter: Deliver events somewhere else (``ConsoleExporter``, ``JsonlExporter``, ``InMemoryExporter`` from
            ``paygentic_costs.export``, or your own object with ``export(events, timeout)`` and ``shutdown()``).
        max_queue_size: Events held in memory awaiting delivery; beyond it new events are dropped and counted.
        max_in_flight: Concurrent requests to the API (1-64).
        shutdown_timeout: Seconds the exit flush may take.
        spool_dir: Directory for the durable on-disk spool (env ``PAYGENTIC_COSTS_SPOOL_DIR``). Default: on, under
            ``state_dir``, when it is writable (off in detected serverless); ``False`` or ``"off"`` turns it off.
        spool_max_bytes: Size cap of the spool (env ``PAYGENTIC_COSTS_SPOOL_MAX_BYTES``; default 256 MiB); past
            it new events are dropped and counted ``dropped["spool_full"]``.
        durability: ``"batch"`` (group commit every 100 ms: a crash loses at most that window) or ``"sync"``
            (``record()`` waits for its event's commit, about a millisecond).
        strict: Raise ``UnattributedCostError`` for costs with no customer instead of warning (env
            ``PAYGENTIC_COSTS_STRICT``); use in tests and development.
        propagate: Carry attribution into ``ThreadPoolExecutor`` and ``threading.Thread`` automatically (env
            ``PAYGENTIC_COSTS_PROPAGATE``). Without it, use ``pc.wrap(fn)``.
        state_dir: Where held unpriced usage and set-aside events are kept (env ``PAYGENTIC_COSTS_STATE_DIR``;
            default ``~/.local/state/paygentic-costs``).
        on_error: ``on_error(idempotency_key, reason, detail)``, called off the hot path when an event is dropped or
            set aside.

    Raises:
        ConfigurationError: a setting is invalid (bad URL, bad rate file, out-of-range number...).
    """
    _runtime.configure(
        api_key=api_key,
        base_url=base_url,
        source=source,
        rates=rates,
        exporter=exporter,
        max_queue_size=max_queue_size,
        max_in_flight=max_in_flight,
        shutdown_timeout=shutdown_timeout,
        spool_dir=spool_dir,
        spool_max_bytes=spool_max_bytes,
        durability=durability,
        strict=strict,
        propagate=propagate,
        state_dir=state_dir,
        on_error=on_error,
    )


def instrument(*names: str, event_type: str | None = None) -> list[str]:
    """Patch provider SDKs so their calls are priced and recorded.

    Args:
        *names: Integrations to enable (``"openai"``, ``"anthropic"`` ...). None: every installed integration whose
            SDK is importable and in its supported range (the others are skipped quietly).
        event_type: Event type for their costs (default ``cost.ai.inference``).

    Returns:
        The names that are now instrumented.

    Raises:
        IntegrationUnavailable: an explicitly named integration is not installed or its SDK is missing or out of
            range (the message has the install command).
    """
    disabled = _runtime.get_runtime().settings.disabled_integrations
    return _registry.instrument(names, event_type=event_type, disabled=disabled)


def uninstrument(*names: str) -> None:
    """Restore the original SDK methods of ``names`` (all integrations when none are given)."""
    _registry.uninstrument(names)


def record(
    event_type: str,
    *,
    amount: Decimal | int | float | str | None = None,
    usage: Usage | None = None,
    provider: str | None = None,
    operation: str | None = None,
    model: str | None = None,
    customer: str | None = None,
    external_customer: str | None = None,
    operation_id: str | None = None,
    request_id: str | None = None,
    timestamp: datetime | None = None,
    **dimensions: Any,
) -> CostEvent | None:
    """Record one cost. Cheap (microseconds, no I/O): delivery happens in the background.

    Give either ``amount`` (used as given) or ``usage`` (priced by the rate table: ``model`` for LLM tokens,
    ``operation`` for per-call/per-unit API rates, ``Usage(seconds=...)`` for compute).

    Example:
        >>> with customer("cus_abc123"):
        ...     event = record("cost.enrichment", amount=Decimal("0.0010"), provider="clearbit")

    Args:
        event_type: The cost metric's event type (``cost.ai.inference``, ``cost.enrichment``...).
        amount: The cost in the metric's currency; Decimal, int, numeric string, or float (read by its repr).
        usage: What was consumed, to be priced by the rate table.
        provider: genai-prices provider id or your vendor name (``data.provider``).
        operation: What was done (``data.operation``).
        model: The model as the provider reported it.
        customer: Override the customer from context (``subject``).
        external_customer: Your own customer id (``externalSubject``).
        operation_id: A stable id for this operation; replaces the job counter in the idempotency key.
        request_id: The provider's request id (``data.request_id``; keys events outside a job).
        timestamp: When the cost happened (default: now).
        **dimensions: Extra ``data`` fields for a metric's ``groupBy`` (``region="eu"``).

    Returns:
        The event that was queued, or None when nothing was sent: no customer in context (counted
        ``unattributed``), no rate for the usage (held, counted ``unpriced``), or the queue was full.

    Raises:
        InvalidCostError: an argument is invalid (``amount="abc"``, a negative or non-finite amount...).
        UnattributedCostError: only with ``strict=True``, when no customer is in context.
    """
    return _runtime.get_runtime().recorder.record(
        event_type,
        amount=amount,
        usage=usage,
        provider=provider,
        operation=operation,
        model=model,
        customer=customer,
        external_customer=external_customer,
        operation_id=operation_id,
        request_id=request_id,
        timestamp=timestamp,
        dimensions=dimensions or None,
    )


def flush(timeout: float = 5.0) -> bool:
    """Wait until every cost recorded so far is acknowledged or set aside, at most ``timeout`` seconds.

    Returns:
        True when everything was delivered (or set aside) in time. Never raises.
    """
    runtime = _runtime.current_runtime()
    return True if runtime is None else runtime.flush(timeout)


async def aflush(timeout: float = 5.0) -> bool:
    """``flush()`` for async code: waits in a worker thread, so the event loop keeps running."""
    return await asyncio.to_thread(flush, timeout)


def shutdown(timeout: float | None = None) -> None:
    """Deliver what is pending (at most ``timeout`` seconds, default ``shutdown_timeout``) and stop the worker.

    Called automatically at interpreter exit. Recording after ``shutdown()`` starts a fresh configuration.
    """
    _runtime.reset(timeout if timeout is not None else _current_shutdown_timeout())


def _current_shutdown_timeout() -> float:
    runtime = _runtime.current_runtime()
    return runtime.settings.shutdown_timeout if runtime is not None else 0.0


def stats() -> dict[str, Any]:
    """Delivery accounting, a snapshot.

    Keys: ``recorded``, ``acknowledged``, ``queued`` (in memory), ``spooled`` (on disk, unacknowledged),
    ``set_aside`` (rejected by the server or past the dedup horizon; in the dead-letter file), ``dropped`` (reason ->
    count); always ``recorded == acknowledged + queued + spooled + set_aside + sum(dropped.values())``. Outside that
    identity, costs that never became events: ``unattributed``, ``unpriced`` (held for ``reprice()``),
    ``usage_missing``. Plus delivery gauges (``in_flight``, ``oldest_pending_age_s``...).
    """
    return _runtime.get_runtime().stats()


def reprice() -> int:
    """Price and send the held unpriced usage that the current rate table can now price.

    Returns:
        How many held costs were sent.
    """
    runtime = _runtime.get_runtime()
    runtime.unpriced.persist()
    events: dict[str, CostEvent] = {}  # by key: an item held twice is still sent once

    def priceable(item: dict[str, Any]) -> bool:
        # Price once, here; take() removes exactly the items this returns True for.
        for _item, event in runtime.recorder.reprice_items([item]):
            events.setdefault(event.idempotency_key, event)
            return True
        return False

    runtime.unpriced.take(priceable)
    for event in events.values():
        runtime.recorder.emit(event)
    return len(events)
