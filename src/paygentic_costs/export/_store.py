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

__all__ = ["Entry", "MemoryStore", "Store", "StoreHost"]


class Entry:
    """One accepted event and its delivery state. Owned by the worker once it leaves the memory queue."""

    __slots__ = ("attempts", "conflicts", "event", "next_at", "recorded_at", "row", "seq", "spooled")

    def __init__(self, seq: int, event: CostEvent, recorded_at: float) -> None:
        self.seq = seq
        self.event = event
        self.recorded_at = recorded_at  # by the pipeline's (injectable) wall clock: the dedup horizon's origin
        self.attempts = 0  # failed sends that count towards backoff
        self.conflicts = 0  # 409 answers so far
        self.next_at = 0.0  # time.monotonic() before which it must not be sent
        self.row = 0  # its row id in the spool file, once written there
        self.spooled = False  # committed to the spool and counted `spooled` (else counted `queued`)

    def __repr__(self) -> str:
        return f"Entry(seq={self.seq}, key={self.event.idempotency_key!r}, attempts={self.attempts})"


class StoreHost(Protocol):
    """What a self-feeding (durable) store may ask of the pipeline that owns it. Every method is thread-safe."""

    max_queue_size: int

    def clock(self) -> float:
        """The pipeline's wall clock (epoch seconds)."""
        ...

    def take_incoming(self, limit: int) -> list[Entry]:
        """Up to ``limit`` of the events accepted by ``submit()`` and not yet handed over, oldest first."""
        ...

    def has_incoming(self) -> bool:
        """Whether ``take_incoming()`` would return anything."""
        ...

    def committed(self, entries: list[Entry], durable: bool) -> None:
        """``entries`` are now held by the store: on disk (``durable``, counted ``spooled``) or in memory only."""

    def dropped_accepted(self, entries: list[Entry], reason: str, detail: str) -> None:
        """Accepted ``entries`` the store could not keep (e.g. ``spool_full``): counted ``dropped[reason]``."""

    def reserve_seqs(self, count: int) -> int:
        """The first of ``count`` fresh sequence numbers for events recovered from another process's file."""
        ...

    def recovered(self, entries: list[Entry], dropped: dict[str, int]) -> None:
        """Events adopted from a dead process's file (already on disk here): counted into ``recorded`` (and
        ``recovered_from_spool``) and ``spooled``; ``dropped`` counts those found unusable (e.g. corrupt)."""

    def lost(self, seqs: list[int], reason: str) -> None:
        """Spooled events found unusable (e.g. corrupt on disk): moved from ``spooled`` to ``dropped[reason]``."""

    def spool_error(self) -> None:
        """The spool failed (disk full, I/O error); it runs memory-only for a while."""

    def wake_sender(self) -> None:
        """New events are ready to send."""


class Store(Protocol):
    """Pending events that have left the memory queue. Only the delivery worker calls it.

    Entries count as ``spooled`` in ``stats()`` once ``entry.spooled`` is set (a durable store committed them),
    else as ``queued``. A store with a ``bind(host)`` method feeds itself: it takes accepted events from the
    pipeline (:class:`StoreHost`) on its own schedule instead of being handed them by ``put``.
    """

    durable: bool
    full: bool  # no room for more events: ``submit()`` drops new ones as ``spool_full``

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
    full = False

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
