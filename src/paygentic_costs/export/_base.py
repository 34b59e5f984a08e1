"""The exporter contract: what the delivery pipeline hands events to, and what it gets back per event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from .._events import CostEvent

__all__ = ["Exporter", "Outcome"]

OutcomeKind = Literal["ack", "retry", "reject", "auth"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one event.

    - ``ack``: the server took it (2xx); it is done.
    - ``retry``: it may or may not have been processed (network error, 408/425/429/5xx); resend the identical body
      later. ``retry_after`` (seconds) is the server's floor, when it gave one.
    - ``reject``: the server refused it as invalid (400/404/413/422...); never resent, set aside with ``reason``.
    - ``auth``: 401/403; keep it, pause the pipeline until the key works.
    """

    kind: OutcomeKind
    retry_after: float | None = None
    reason: str | None = None
    status: int | None = None


ACK = Outcome("ack")


@runtime_checkable
class Exporter(Protocol):
    """Anything that can deliver events. Called only from the delivery worker thread, never from user code."""

    def export(self, events: Sequence[CostEvent], timeout: float) -> Sequence[Outcome]:
        """Deliver ``events``; return one outcome per event, in order, within ``timeout`` seconds. Must not raise
        for delivery failures (return ``retry``); an exception is treated as ``retry`` for the whole batch."""
        ...

    def shutdown(self) -> None:
        """Release connections. Called once, from the thread that shuts the pipeline down."""
        ...
