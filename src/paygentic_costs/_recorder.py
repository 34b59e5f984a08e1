"""The recorder: the one object that turns "this cost happened" into a priced, attributed, keyed event.

Integrations reach it through ``paygentic_costs.instrumentation``; users through ``record`` / ``track`` / ``meter``.
``record`` runs on the caller's thread and does no I/O: events go to the delivery pipeline's memory queue.

A provider call finished by an integration is *deferred*: the caller's thread fixes what must be fixed at that moment
(attribution, the job's key counter, the time) and appends one tuple to a queue; pricing, building and serialising
the event happen in a batch on the delivery worker (within ``_DEFER_LINGER`` of the call, or on ``flush()``,
``stats()`` and ``shutdown()``, which drain the queue first). Measured around a real SDK call, building one event on
the caller's thread cost several times what the same code costs in a warm batch, and the caller waits for it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any

from . import _context
from ._context import ACTIVE_CALL, Attribution, key_prefix
from ._errors import InvalidCostError, UnattributedCostError
from ._events import CostEvent, decimal_to_json
from ._guard import log_once, public_logger, report_internal_error
from .pricing import Price, Usage

__all__ = ["CallHandle", "Recorder", "Reported", "to_amount"]

_RESERVED = frozenset({"amount", "currency", "rate"})
_DIMENSION_TYPES = (str, int, float, bool, Decimal, type(None))
_valid_types: set[str] = set()


def to_amount(value: object, what: str = "amount") -> Decimal:
    """An explicit money value as an exact, finite, non-negative Decimal (floats via their shortest repr)."""
    if isinstance(value, bool):
        raise InvalidCostError(f"{what} must be a number, got a bool")
    try:
        if isinstance(value, Decimal):
            result = value
        elif isinstance(value, int):
            result = Decimal(value)
        elif isinstance(value, float):
            result = Decimal(repr(value))
        elif isinstance(value, str):
            result = Decimal(value.strip())
        else:
            raise InvalidCostError(
                f"{what} must be a Decimal, int, float or numeric string, got {type(value).__name__}"
            )
    except InvalidOperation:
        raise InvalidCostError(f"{what} is not a number: {value!r}") from None
    if not result.is_finite():
        raise InvalidCostError(f"{what} must be finite, got {value!r}")
    if result < 0:
        raise InvalidCostError(f"{what} must not be negative, got {value!r}")
    return result


def check_event_type(event_type: object) -> str:
    """Validate an event type once; later calls with the same string are a set lookup."""
    if isinstance(event_type, str) and event_type in _valid_types:
        return event_type
    if not isinstance(event_type, str) or not event_type.strip():
        raise InvalidCostError(f"event type must be a non-empty string, got {event_type!r}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in event_type) or len(event_type) > 200:
        raise InvalidCostError(f"event type must be printable and at most 200 characters: {event_type!r}")
    _valid_types.add(event_type)
    return event_type


def _check_dimensions(dimensions: Mapping[str, Any]) -> None:
    for name, value in dimensions.items():
        if name in _RESERVED:
            raise InvalidCostError(f"'{name}' is set by the library and cannot be a dimension")
        if not isinstance(value, _DIMENSION_TYPES):
            raise InvalidCostError(
                f"dimension {name!r} must be a str, int, float, bool, Decimal or None, got {type(value).__name__}"
            )
        if isinstance(value, float) and value != value:  # NaN cannot be sent as JSON
            raise InvalidCostError(f"dimension {name!r} is NaN")


def _str_or_none(value: object) -> bool:
    return value is None or type(value) is str or isinstance(value, str)


def _new_key() -> str:
    return str(uuid.uuid4())


# A finished provider call waiting to be priced: the arguments of ``Recorder._record_call``.
_Deferred = tuple[
    "CallHandle", Any, "UsageReader | None", "str | None", "str | None", "str | None",
    bool, "Mapping[str, Any] | None", "str | None", float,
]


@dataclass(slots=True)
class Reported:
    """What a usage reader (``CallHandle.finish_from``) found in the provider's response: the usage, and the keys of
    its price when the response carries them.

    A reader returns this instead of a bare ``Usage`` when the model, id or tier are in the same object as the usage
    (a stream's last event, kept as bytes): the caller's thread then does not decode it at all. Each key left None
    falls back to the one passed to ``finish_from``.

    Attributes:
        usage: The normalised usage, or None when the response carried none (counted ``usage_missing``).
        model: The model the response reports (the served snapshot), or None.
        request_id: The provider's id for the call, or None.
        service_tier: The tier that served the call (selects tiered prices), or None.
    """

    usage: Usage | None
    model: str | None = None
    request_id: str | None = None
    service_tier: str | None = None


# What CallHandle.finish_from is given: turns the provider's usage object into a Usage (or a Reported).
UsageReader = Callable[[Any], "Usage | Reported | None"]


@dataclass
class _Counters:
    unattributed: int = 0
    unpriced: int = 0
    usage_missing: int = 0


class Recorder:
    """Builds events and hands them to a sink (the delivery pipeline, or a test capture).

    Args:
        settings: The resolved configuration (``_config.Settings``).
        submit: Where finished events go; must be O(1) and never raise (``DeliveryPipeline.submit``).
        hold_unpriced: Keeps usage no rate could price (``UnpricedStore.hold``).
    """

    def __init__(
        self,
        settings: Any,
        submit: Callable[[CostEvent], bool],
        hold_unpriced: Callable[[Mapping[str, Any]], None],
        arm: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.rates = settings.rates
        self._submit = submit
        self._hold = hold_unpriced
        self.counters = _Counters()
        self._lock = threading.Lock()
        self.captures: list[list[CostEvent]] = []
        # Deferred provider calls (see the module docstring). ``arm`` asks the pipeline to drain within its linger;
        # it returns False when it cannot (shut down, durability="sync", no worker), and the caller drains itself.
        self._arm = arm
        self._deferred: deque[_Deferred] = deque()
        self._armed = False
        self._defer_limit = max(1, int(getattr(settings, "max_queue_size", 10_000)))

    # -- the sink ---------------------------------------------------------------------------------------------------

    def emit(self, event: CostEvent) -> bool:
        """Send a finished event on: to active test captures (no network), else to the delivery pipeline."""
        if self.captures:
            for capture in self.captures:
                capture.append(event)
            return True
        return self._submit(event)

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.counters, name, getattr(self.counters, name) + 1)

    # -- recording --------------------------------------------------------------------------------------------------

    def record(
        self,
        event_type: str,
        *,
        amount: object = None,
        usage: Usage | None = None,
        provider: str | None = None,
        operation: str | None = None,
        model: str | None = None,
        customer: str | None = None,
        external_customer: str | None = None,
        operation_id: str | None = None,
        request_id: str | None = None,
        timestamp: datetime | None = None,
        service_tier: str | None = None,
        batch: bool = False,
        dimensions: Mapping[str, Any] | None = None,
        attribution: Attribution | None = None,
        idempotency_key: str | None = None,
    ) -> CostEvent | None:
        """Validate, attribute, price, key and emit one cost; returns the event, or None when nothing was sent.

        ``idempotency_key`` is internal: a deferred call's key, taken from its job's counter when the call finished.
        """
        check_event_type(event_type)
        explicit_amount = to_amount(amount) if amount is not None else None
        if explicit_amount is None and usage is None:
            raise InvalidCostError("record() needs amount=... or usage=...")
        if usage is not None and not isinstance(usage, Usage):
            raise InvalidCostError(f"usage must be a paygentic_costs.Usage, got {type(usage).__name__}")
        if dimensions:
            _check_dimensions(dimensions)
        if not (_str_or_none(provider) and _str_or_none(operation) and _str_or_none(model)):
            for name, value in (("provider", provider), ("operation", operation), ("model", model)):
                if not _str_or_none(value):
                    raise InvalidCostError(f"{name} must be a string, got {type(value).__name__}")
        if timestamp is not None and not isinstance(timestamp, datetime):
            raise InvalidCostError("timestamp must be a datetime")

        attr = attribution if attribution is not None else _context.current()
        subject = customer if customer is not None else (None if external_customer else attr.customer)
        external = external_customer if external_customer is not None else attr.external_customer
        if subject is None and external is None:
            self._unattributed(event_type, provider, model)
            return None

        moment = timestamp if timestamp is not None else datetime.now(timezone.utc)
        price: Price | None = None
        if explicit_amount is None:
            assert usage is not None
            price = self._price(usage, provider, operation, model, moment, service_tier, batch)

        key = idempotency_key or self._key(event_type, attr, operation_id, request_id)
        data: dict[str, Any] = {}
        if attr.dimensions:
            data.update(attr.dimensions)
        if dimensions:
            data.update(dimensions)
        if provider is not None:
            data["provider"] = provider
        if operation is not None:
            data["operation"] = operation
        if model is not None:
            data["model"] = model
        if usage is not None:
            data.update(usage.as_dict())
        if request_id is not None:
            data["request_id"] = request_id

        if explicit_amount is not None:  # an amount written in code is used as given
            data["amount"] = explicit_amount
            data["currency"] = self.settings.currency
        elif price is None:
            self._hold_unpriced(
                event_type, subject, external, key, moment, data, usage, provider, model, operation, service_tier, batch
            )
            return None
        else:
            data["amount"] = price.amount
            data["currency"] = price.currency
            data["rate"] = price.rate_id
        event = CostEvent(event_type, self.settings.source, key, moment, data, subject, external)
        self.emit(event)
        return event

    def _key(self, event_type: str, attr: Attribution, operation_id: str | None, request_id: str | None) -> str:
        if attr.job is not None:
            if operation_id is not None:
                return attr.job.operation_key(event_type, operation_id)
            return attr.job.next_key(event_type)
        anchor = operation_id or request_id
        if anchor:
            return f"{key_prefix(anchor)}-{event_type}"
        return _new_key()

    def _price(
        self,
        usage: Usage,
        provider: str | None,
        operation: str | None,
        model: str | None,
        moment: datetime,
        service_tier: str | None,
        batch: bool,
    ) -> Price | None:
        if provider is None:
            raise InvalidCostError("pricing usage needs provider=... (and model=... for LLM usage)")
        if model is not None:
            return self.rates.price_llm(provider, model, usage, at=moment, service_tier=service_tier, batch=batch)  # type: ignore[no-any-return]
        if operation is None:
            raise InvalidCostError("pricing non-LLM usage needs operation=... (the rate file's provider:operation)")
        if usage.seconds is not None:
            return self.rates.price_compute(provider, operation, seconds=usage.seconds, at=moment)  # type: ignore[no-any-return]
        return self.rates.price_api(provider, operation, units=usage.units, at=moment)  # type: ignore[no-any-return]

    def _unattributed(self, event_type: str, provider: str | None, model: str | None) -> None:
        if self.settings.strict:
            raise UnattributedCostError(
                f"a {event_type!r} cost was recorded with no customer in context; wrap the work in "
                "pc.job(..., customer=...) or pc.customer(...), or pass customer=..."
            )
        self._count("unattributed")
        log_once(
            public_logger,
            logging.WARNING,
            f"unattributed:{event_type}",
            "paygentic_costs: a %r cost (%s) had no customer in context and was not sent; wrap the work in "
            "pc.job(..., customer=...) or pc.customer(...). Counted as 'unattributed' in stats().",
            event_type,
            "/".join(x for x in (provider, model) if x) or "no provider",
        )
        return None

    def _hold_unpriced(
        self,
        event_type: str,
        subject: str | None,
        external: str | None,
        key: str,
        moment: datetime,
        data: Mapping[str, Any],
        usage: Usage | None,
        provider: str | None,
        model: str | None,
        operation: str | None,
        service_tier: str | None,
        batch: bool,
    ) -> None:
        self._count("unpriced")
        what = f"{provider}:{model or operation}"
        log_once(
            public_logger,
            logging.WARNING,
            f"unpriced:{what}",
            "paygentic_costs: no rate prices %s; its usage is held (not sent as $0). Add it to your rate file, "
            "then run pc.reprice() or `paygentic-costs reprice`.",
            what,
        )
        item = {
            "type": event_type,
            "source": self.settings.source,
            "subject": subject,
            "externalSubject": external,
            "idempotencyKey": key,
            "timestamp": moment.isoformat(),
            "data": {k: (decimal_to_json(v) if isinstance(v, Decimal) else v) for k, v in data.items()},
            "usage": {
                k: (decimal_to_json(v) if isinstance(v, Decimal) else v)
                for k, v in (usage.as_dict() if usage else {}).items()
            },
            "provider": provider,
            "model": model,
            "operation": operation,
            "service_tier": service_tier,
            "batch": batch,
        }
        try:
            self._hold(item)
        except Exception as exc:  # the store is ours; its failure must not reach the caller
            report_internal_error(exc, "unpriced.hold")

    def reprice_items(self, items: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], CostEvent]]:
        """Price held items with the current rate table; returns (item, event) for those that now have a price."""
        priced: list[tuple[Mapping[str, Any], CostEvent]] = []
        for item in items:
            raw_usage = {k: (Decimal(v) if k in ("units", "seconds") else v) for k, v in item["usage"].items()}
            usage = Usage(**raw_usage)  # type: ignore[arg-type]  # the held form of Usage.as_dict()
            moment = datetime.fromisoformat(item["timestamp"])
            price = self._price(
                usage,
                item["provider"],
                item["operation"],
                item["model"],
                moment,
                item.get("service_tier"),
                bool(item.get("batch")),
            )
            if price is None:
                continue
            data = dict(item["data"])
            for name in ("units", "seconds"):
                if name in data:
                    data[name] = Decimal(data[name])
            data["amount"] = price.amount
            data["currency"] = price.currency
            data["rate"] = price.rate_id
            event = CostEvent(
                item["type"],
                item["source"],
                item["idempotencyKey"],
                moment,
                data,
                item.get("subject"),
                item.get("externalSubject"),
            )
            priced.append((item, event))
        return priced

    # -- deferred provider calls ------------------------------------------------------------------------------------

    def defer(
        self,
        call: CallHandle,
        usage: Any,
        read: UsageReader | None,
        model: str | None,
        request_id: str | None,
        service_tier: str | None,
        batch: bool,
        dimensions: Mapping[str, Any] | None,
    ) -> None:
        """Queue a finished provider call for pricing off the caller's thread (the hot path of every integration).

        ``usage`` is a ``Usage``, or with ``read`` the provider's usage object that ``read`` normalises later.
        """
        attr = call.attribution
        if self.captures or self._arm is None or (attr.customer is None and attr.external_customer is None):
            # A test capture wants the event now; an unattributed call warns (or raises, strict) at the call.
            self._record_call(call, usage, read, model, request_id, service_tier, batch, dimensions, None, None)
            return
        # The job's counter is taken now, so keys follow the order in which calls finished.
        key = attr.job.next_key(call.event_type) if attr.job is not None else None
        deferred = self._deferred
        deferred.append((call, usage, read, model, request_id, service_tier, batch, dimensions, key, time.time()))
        if not self._armed:
            self._armed = True
            if not self._arm():
                self.drain()
        elif len(deferred) >= self._defer_limit:
            self.drain()  # the worker is not keeping up: this caller builds the events (and meets the queue's cap)

    def drain(self) -> None:
        """Price, build and emit every deferred call. Safe from any thread; each call is taken exactly once."""
        self._armed = False  # before taking: a call queued from now on arms again
        deferred = self._deferred
        while True:
            try:
                item = deferred.popleft()
            except IndexError:
                return
            try:
                self._record_call(*item)
            except Exception as exc:
                report_internal_error(exc, f"{item[0].provider}.{item[0].operation}.finish")

    def forget_deferred(self) -> None:
        """In a forked child: the parent still holds (and delivers) the calls it deferred."""
        self._deferred.clear()
        self._armed = False

    def _record_call(
        self,
        call: CallHandle,
        usage: Any,
        read: UsageReader | None,
        model: str | None,
        request_id: str | None,
        service_tier: str | None,
        batch: bool,
        dimensions: Mapping[str, Any] | None,
        key: str | None,
        finished_at: float | None,
    ) -> None:
        if read is not None:
            usage = read(usage)
            if type(usage) is Reported:
                model, request_id, service_tier, usage = (
                    usage.model or model, usage.request_id or request_id, usage.service_tier or service_tier,
                    usage.usage,
                )
            if usage is not None and not isinstance(usage, Usage):
                raise TypeError(f"the usage reader returned {type(usage).__name__}, not a Usage or Reported")
            if usage is None or usage.is_empty:
                self.missing_usage(call, None)
                return
        self.record(
            call.event_type,
            usage=usage,
            provider=call.provider,
            operation=call.operation,
            model=model or call.model,
            request_id=request_id,
            service_tier=service_tier,
            batch=batch,
            dimensions=dimensions,
            attribution=call.attribution,
            timestamp=None if finished_at is None else datetime.fromtimestamp(finished_at, timezone.utc),
            idempotency_key=key,
        )

    # -- integrations -----------------------------------------------------------------------------------------------

    def start_call(
        self,
        *,
        provider: str,
        operation: str,
        event_type: str,
        model: str | None = None,
        attribution: Attribution | None = None,
    ) -> CallHandle:
        """Open a provider call; the attribution is captured now (or passed in, already read), so a stream finished
        elsewhere is still billed to the customer who started it."""
        return CallHandle(
            self, provider, operation, event_type, model, _context.current() if attribution is None else attribution
        )

    def missing_usage(self, call: CallHandle, call_site: str | None) -> None:
        self._count("usage_missing")
        where = call_site or f"{call.provider} {call.operation}"
        log_once(
            public_logger,
            logging.WARNING,
            f"usage_missing:{where}",
            "paygentic_costs: %s returned no usage (e.g. a stream abandoned before the provider reported it); "
            "no cost was invented. Counted as 'usage_missing' in stats().",
            where,
        )

    def stats(self) -> dict[str, int]:
        """The counters of costs that never became events (outside the delivery identity)."""
        with self._lock:
            return {
                "unattributed": self.counters.unattributed,
                "unpriced": self.counters.unpriced,
                "usage_missing": self.counters.usage_missing,
            }


class CallHandle:
    """One in-progress provider call. ``finish`` (or ``fail``) takes effect once; later calls are ignored.

    Integrations call ``finish(usage, model=..., request_id=...)`` with the usage the provider reported; the core
    prices, attributes and emits.
    """

    __slots__ = ("_claim_token", "_token", "_tokens", "attribution", "event_type", "model", "operation", "provider",
                 "recorder")

    def __init__(
        self,
        recorder: Recorder,
        provider: str,
        operation: str,
        event_type: str,
        model: str | None,
        attribution: Attribution,
    ) -> None:
        self.recorder = recorder
        self.provider = provider
        self.operation = operation
        self.event_type = event_type
        self.model = model
        self.attribution = attribution
        self._claim_token = [True]  # list.pop() is atomic: exactly one of finish/fail/GC-finalize wins, no lock
        self._token: Any = None  # the active-call marker of the outermost `with call:`
        self._tokens: list[Any] | None = None  # nested `with call:` blocks (rare)

    def __enter__(self) -> CallHandle:
        """Mark this call active while the SDK runs, so a lower layer (HTTP) does not record it again."""
        token = ACTIVE_CALL.set(self)
        if self._token is None:
            self._token = token
        else:
            if self._tokens is None:
                self._tokens = []
            self._tokens.append(token)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._tokens:
            ACTIVE_CALL.reset(self._tokens.pop())
        else:
            token, self._token = self._token, None
            ACTIVE_CALL.reset(token)
        if ev is not None:
            self.fail(ev)

    def _claim(self) -> bool:
        try:
            return self._claim_token.pop()
        except IndexError:
            return False

    @property
    def done(self) -> bool:
        """True once the call was finished or failed."""
        return not self._claim_token

    def finish(
        self,
        usage: Usage | None,
        *,
        model: str | None = None,
        request_id: str | None = None,
        service_tier: str | None = None,
        batch: bool = False,
        call_site: str | None = None,
        dimensions: Mapping[str, Any] | None = None,
    ) -> None:
        """Record the call's cost from the provider's usage. Never raises. No usage: counted ``usage_missing``.

        The event is priced and built off the caller's thread (see ``paygentic_costs._recorder``); ``flush()`` and
        ``stats()`` see it, and a test capture receives it before ``finish`` returns.
        """
        self._settle(usage, None, model, request_id, service_tier, batch, dimensions, call_site)

    def finish_from(
        self,
        read: UsageReader,
        source: Any,
        *,
        model: str | None = None,
        request_id: str | None = None,
        service_tier: str | None = None,
        batch: bool = False,
        dimensions: Mapping[str, Any] | None = None,
    ) -> None:
        """:meth:`finish` with the usage read later: ``read(source)`` runs off the caller's thread, when the call is
        priced (at the latest on ``flush()``), so normalising the provider's usage costs the caller nothing.

        ``source`` must not change after the call: pass the provider's parsed usage object (never mutated by the
        SDK), or bytes, not something the caller reuses. ``read`` may return a :class:`Reported` to supply the model,
        request id and tier from the same source (each one it leaves None is the one passed here). ``read`` returning
        None, or an empty or absent usage, counts ``usage_missing``. Never raises (a ``read`` that raises is reported
        as an internal error).
        """
        self._settle(source, read, model, request_id, service_tier, batch, dimensions, None)

    def _settle(
        self,
        usage: Any,
        read: UsageReader | None,
        model: str | None,
        request_id: str | None,
        service_tier: str | None,
        batch: bool,
        dimensions: Mapping[str, Any] | None,
        call_site: str | None,
    ) -> None:
        """``finish`` / ``finish_from``: claim the call, then hand it to the recorder (``read`` None: ``usage`` is a
        ``Usage`` already, and no usage counts ``usage_missing`` now)."""
        try:
            if not self._claim_token.pop():  # inlined _claim(): this runs on every call
                return
        except IndexError:
            return  # already finished, failed or finalized
        try:
            if read is None and (
                usage is None or (usage.input_tokens is None and usage.output_tokens is None and usage.is_empty)
            ):
                self.recorder.missing_usage(self, call_site)
                return
            self.recorder.defer(self, usage, read, model, request_id, service_tier, batch, dimensions)
        except UnattributedCostError:
            raise  # strict mode is the user's explicit choice to fail loudly
        except Exception as exc:
            report_internal_error(exc, f"{self.provider}.{self.operation}.finish")

    def fail(self, error: BaseException | None = None) -> None:
        """The call raised before any usage was reported: nothing is billed."""
        self._claim()
