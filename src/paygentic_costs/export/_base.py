"""The exporter contract: what the delivery pipeline hands events to, and what it gets back per event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from .._events import CostEvent

__all__ = ["ACK", "NOT_SENT", "Exporter", "Outcome"]

OutcomeKind = Literal["ack", "retry", "reject", "auth"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one event.

    - ``ack``: the server took it (2xx); it is done.
    - ``retry``: it may or may not have been processed (network error, 408/425/429/5xx); resend the identical body
      later. ``retry_after`` (seconds) is the server's floor, when it gave one. ``reason="not_sent"`` (see
      :data:`NOT_SENT`) means the request never left: it is resent without counting an attempt.
    - ``reject``: the server refused it as invalid (400/404/413/422...); never resent, set aside with ``reason``.
    - ``auth``: 401/403; keep it, pause the pipeline until the key works.
    """

    kind: OutcomeKind
    retry_after: float | None = None
    reason: str | None = None
    status: int | None = None


ACK = Outcome("ack")
NOT_SENT = Outcome("retry", reason="not_sent")


@runtime_checkable
class Exporter(Protocol):
    """Anything that can deliver events. Called only from the delivery worker thread, never from user code.

    Optional hooks the pipeline uses when an exporter has them (duck-typed, so plain exporters stay minimal):

    - ``set_concurrency(n: int) -> None``: the pipeline's current adaptive concurrency limit (AIMD).
    - ``in_flight: int``: requests on the wire right now (reported by ``stats()``).
    - ``after_fork_in_child() -> None``: forget inherited connections without closing them (they belong to the
      parent process).
    - ``export_stream(take, done, deadline) -> None``: instead of fixed batches, pull events with
      ``take(free_slots) -> [(token, event), ...]`` as request slots free up and report each with
      ``done(token, outcome)`` as it finishes; return when ``take`` gives nothing and nothing is in flight, or at
      ``deadline()`` (``time.monotonic()``, None for no deadline). One slow request then never holds the others.
    """

    def export(self, events: Sequence[CostEvent], timeout: float) -> Sequence[Outcome]:
        """Deliver ``events``; return one outcome per event, in order, within ``timeout`` seconds. Must not raise
        for delivery failures (return ``retry``); an exception is treated as ``retry`` for the whole batch. Must
        not start threads: at interpreter exit it may be called on the exiting thread."""
        ...

    def shutdown(self) -> None:
        """Release connections. Called once; may run on another thread while an ``export`` call is still in
        progress, which it should then cut short."""
        ...
