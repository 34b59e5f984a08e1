"""Where accepted events wait between the memory queue and the sender.

The pipeline talks to a :class:`Store` only through ``put`` / ``take_due`` / ``ack`` / ``retry`` / ``set_aside``,
so a durable store (a SQLite spool) can replace :class:`MemoryStore` without touching queueing or sending.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from .._events import CostEvent

__all__ = ["Entry", "MemoryStore", "Store"]


class Entry:
    """One accepted event and its delivery state. Owned by the worker once it leaves the memory queue."""

    __slots__ = ("attempts", "conflicts", "event", "next_at", "recorded_at", "seq")

    def __init__(self, seq: int, event: CostEvent, recorded_at: float) -> None:
        self.seq = seq
        self.event = event
        self.recorded_at = recorded_at  # by the pipeline's (injectable) wall clock: the dedup horizon's origin
        self.attempts = 0  # failed sends that count towards backoff
        self.conflicts = 0  # 409 answers so far
        self.next_at = 0.0  # time.monotonic() before which it must not be sent

    def __repr__(self) -> str:
        return f"Entry(seq={self.seq}, key={self.event.idempotency_key!r}, attempts={self.attempts})"


class Store(Protocol):
    """Pending events that have left the memory queue. Only the delivery worker calls it.

    ``durable`` stores count their events as ``spooled`` in ``stats()``; others as ``queued``.
    """

    durable: bool

    def put(self, entries: Iterable[Entry]) -> None:
        """Take ownership of newly accepted entries (due immediately, in order)."""

    def take_due(self, now: float, limit: int) -> list[Entry]:
        """Up to ``limit`` entries whose ``next_at <= now``; they are in flight until acked, retried or set aside."""
        ...

    def ack(self, entries: Iterable[Entry]) -> None:
        """The server has them; forget them."""

    def retry(self, entries: Iterable[Entry]) -> None:
        """Keep them; each is due again at its ``next_at``."""

    def set_aside(self, entries: Iterable[Entry], reason: str) -> None:
        """They will never be sent again (the pipeline records them in the dead-letter box)."""

    def next_due(self) -> float | None:
        """The earliest ``next_at`` of a waiting entry, or ``None`` when nothing waits."""
        ...

    def __len__(self) -> int:
        """Entries waiting (not in flight)."""
        ...


class MemoryStore:
    """The in-memory store: a FIFO of fresh entries plus a heap of entries waiting for their retry time."""

    durable = False

    def __init__(self) -> None:
        self._ready: deque[Entry] = deque()
        self._waiting: list[tuple[float, int, Entry]] = []

    def put(self, entries: Iterable[Entry]) -> None:
        """Queue fresh entries behind the others."""
        self._ready.extend(entries)

    def take_due(self, now: float, limit: int) -> list[Entry]:
        """Retries that are due first (they are older), then fresh entries."""
        out: list[Entry] = []
        waiting = self._waiting
        while waiting and len(out) < limit and waiting[0][0] <= now:
            out.append(heapq.heappop(waiting)[2])
        ready = self._ready
        while ready and len(out) < limit:
            out.append(ready.popleft())
        return out

    def ack(self, entries: Iterable[Entry]) -> None:
        """Nothing to do: the worker simply lets go of them."""

    def retry(self, entries: Iterable[Entry]) -> None:
        """Park each entry until its ``next_at``."""
        for entry in entries:
            heapq.heappush(self._waiting, (entry.next_at, entry.seq, entry))

    def set_aside(self, entries: Iterable[Entry], reason: str) -> None:
        """Nothing to keep here; the dead-letter box holds them."""

    def next_due(self) -> float | None:
        """0.0 when fresh entries wait, else the earliest retry time."""
        if self._ready:
            return 0.0
        return self._waiting[0][0] if self._waiting else None

    def __len__(self) -> int:
        return len(self._ready) + len(self._waiting)
