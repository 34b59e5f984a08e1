"""The delivery pipeline: a bounded memory queue, one lazily started worker thread, retries, pauses and flush.

``submit()`` is the hot path: it stamps a sequence number, appends to a deque under a lock held for a few
microseconds and returns. Everything else (sending, backoff, dead-lettering, ``on_error`` callbacks) happens on
the worker thread ``paygentic_costs-export``, which hands batches to an :class:`~._base.Exporter`.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import os
import random
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .._errors import ConfigurationError
from .._events import CostEvent
from .._guard import report_internal_error
from ._base import Exporter, Outcome
from ._dead_letter import DeadLetterBox, SetAside
from ._log import LogThrottle, logger
from ._store import Entry, MemoryStore, Store, StoreHost

__all__ = ["DeliveryPipeline", "OnError"]

OnError = Callable[[str, str, str], object]
"""``on_error(event_key, reason, detail)``: called for every event that is dropped or set aside."""

_IDLE_WAIT = 5.0  # the worker re-checks its state at least this often even when nothing wakes it
_ADMIT_MAX = 4096  # events moved from the memory queue to the store per loop turn
_AUTH_LOG_WINDOW = 300.0  # "log at ERROR once per 5 min" while the key is refused
_CONFLICT_RETRIES = 3  # 409 is retried this many times, then set aside as `conflict`
_CONGESTION_STATUSES = frozenset({429, 503})
_MAX_IN_FLIGHT_LIMIT = 64
_SYNC_WAIT = 1.0  # durability="sync": the longest record() waits for the spool commit (never hangs the host)
_MARK_EVERY = 0.01  # commit back-pressure samples the age of uncommitted events at this resolution
_PRESSURE_WAIT = 0.5  # the longest a recording thread waits for a commit that is behind its window
# The longest a deferred provider call waits to be priced on the worker (flush(), stats() and shutdown() drain at
# once). Calls gather into windows: after a drain the worker wakes again one linger later by itself and drains what
# was deferred since, so under steady traffic the calls need not wake it (one wake per window, not one per call,
# keeps the worker off the caller's GIL). A call deferred while no window is open wakes the worker, which drains it
# at once and opens one.
_DEFER_LINGER = 0.05
# After a drain the worker keeps waking every linger by itself for this long before it sleeps until a call wakes it:
# traffic with gaps of less than this between calls (one empty window is enough) then never wakes it from a caller's
# thread, where the woken worker would take the GIL in the middle of that caller's next work. Idle, it costs at most
# twenty empty turns of the loop after the last call.
_DEFER_GRACE = 1.0


class _Wake:
    """The worker's wake-up flag, like ``threading.Event`` (``set`` from any thread; ``wait`` returns when it is set,
    or at the timeout; ``clear``) but one C call per operation: an Event is a Condition, several Python frames per
    ``set`` and per ``wait``, and ``set`` runs on callers' threads. A plain lock, held while the flag is clear."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        try:  # noqa: SIM105 -- contextlib.suppress is two more calls, on callers' threads
            self._lock.release()
        except RuntimeError:  # already set
            pass

    def wait(self, timeout: float) -> None:
        """Until set or ``timeout`` seconds (clears it when it was set, as the loop's ``clear()`` would)."""
        self._lock.acquire(timeout=timeout)

    def clear(self) -> None:
        self._lock.acquire(blocking=False)


class Feeder(Protocol):
    """Events-to-be held outside the pipeline (the recorder's deferred provider calls)."""

    def drain(self) -> None:
        """Turn everything held into events, submitting each to the pipeline."""

    def forget_deferred(self) -> None:
        """In a forked child: drop what the parent holds (the parent delivers it)."""


_throttle = LogThrottle()
_auth_throttle = LogThrottle(_AUTH_LOG_WINDOW)

# Every live pipeline, for the fork hooks. One set of hooks for the whole process: `os.register_at_fork` cannot
# unregister, so per-instance hooks would pile up when pipelines come and go.
_live: weakref.WeakSet[DeliveryPipeline] = weakref.WeakSet()


def _before_fork() -> None:
    for pipeline in list(_live):
        pipeline._fork_prepare()


def _after_fork_in_parent() -> None:
    for pipeline in list(_live):
        pipeline._fork_release()


def _after_fork_in_child() -> None:
    for pipeline in list(_live):
        pipeline._fork_reinit()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )


def _shutdown_at_exit(ref: weakref.ref[DeliveryPipeline]) -> None:
    pipeline = ref()
    if pipeline is not None:
        pipeline.shutdown()


class DeliveryPipeline:
    """Queue cost events and deliver them through an exporter, in the background, without ever raising.

    Args:
        exporter: where events go (e.g. :class:`~paygentic_costs.export.PaygenticExporter`).
        max_queue_size: events held in memory (queued, in flight or waiting for a retry). When full, new events
            are dropped and counted ``dropped["queue_full"]``.
        max_in_flight: the concurrency ceiling; the adaptive limit starts here, halves on 429/503/``Retry-After``
            and grows back by one after 20 consecutive acknowledgements.
        shutdown_timeout: the default drain budget of :meth:`shutdown` (and so of interpreter exit).
        clock: wall clock in epoch seconds; it stamps each event's ``recorded_at`` and drives the dedup horizon.
        on_error: ``on_error(event_key, reason, detail)``, called off the hot path for every dropped or set-aside
            event. Its exceptions are logged and swallowed.
        dead_letter_path: a JSONL file that receives every set-aside event with the reason; ``None`` keeps only
            an in-memory list (:attr:`dead_letters`).
        store: a factory for the :class:`~._store.Store` between the queue and the sender (default: memory).
            Called again in a forked child.
        export_timeout: the budget of one ``export()`` call.
        max_batch_size: events handed to the exporter at once (further capped at 4x the concurrency limit).
        backoff_base: full-jitter backoff ``U(0, min(backoff_cap, backoff_base * 2**attempt))``.
        backoff_cap: see ``backoff_base``.
        backoff_floor: the minimum delay before a retry.
        retry_after_cap: the longest ``Retry-After`` honoured.
        auth_probe_interval: while the API key is refused, one event is tried this often.
        retry_horizon: seconds after ``recorded_at`` past which an event is never sent again (the server's 24 h
            dedup window minus a margin); it is set aside as ``dedup_window_expired``.
        breaker_threshold: consecutive failed sends after which only one probe is sent per backoff interval.
        durability: with a durable store (the spool), ``"batch"`` commits in groups in the background (an event
            reaches the disk within the commit interval); ``"sync"`` makes :meth:`submit` wait for the commit of
            its event (about a millisecond, at most one second) -- the one case where the caller blocks.

    Raises:
        ConfigurationError: an argument is out of range.
    """

    def __init__(
        self,
        exporter: Exporter,
        *,
        max_queue_size: int = 10_000,
        max_in_flight: int = 8,
        shutdown_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        on_error: OnError | None = None,
        dead_letter_path: str | os.PathLike[str] | None = None,
        store: Callable[[], Store] = MemoryStore,
        export_timeout: float = 10.0,
        max_batch_size: int = 64,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        backoff_floor: float = 0.1,
        retry_after_cap: float = 300.0,
        auth_probe_interval: float = 60.0,
        retry_horizon: float = 23 * 3600.0,
        breaker_threshold: int = 5,
        durability: str = "batch",
    ) -> None:
        if max_queue_size < 1:
            raise ConfigurationError(f"max_queue_size must be at least 1, got {max_queue_size}")
        if not 1 <= max_in_flight <= _MAX_IN_FLIGHT_LIMIT:
            raise ConfigurationError(f"max_in_flight must be between 1 and {_MAX_IN_FLIGHT_LIMIT}, got {max_in_flight}")
        if durability not in ("batch", "sync"):
            raise ConfigurationError(f"durability must be 'batch' or 'sync', got {durability!r}")
        if max_batch_size < 1:
            raise ConfigurationError(f"max_batch_size must be at least 1, got {max_batch_size}")
        for name, value in (
            ("shutdown_timeout", shutdown_timeout),
            ("export_timeout", export_timeout),
            ("backoff_base", backoff_base),
            ("backoff_cap", backoff_cap),
            ("backoff_floor", backoff_floor),
            ("retry_after_cap", retry_after_cap),
            ("auth_probe_interval", auth_probe_interval),
            ("retry_horizon", retry_horizon),
        ):
            if not value >= 0:  # also rejects NaN
                raise ConfigurationError(f"{name} must be a non-negative number, got {value!r}")
        self._exporter = exporter
        self._max_queue_size = max_queue_size
        self._max_in_flight = max_in_flight
        self._shutdown_timeout = shutdown_timeout
        self._clock = clock
        self._on_error = on_error
        self._dead = DeadLetterBox(dead_letter_path)
        self._store_factory = store
        self._export_timeout = export_timeout
        self._max_batch_size = max_batch_size
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._backoff_floor = backoff_floor
        self._retry_after_cap = retry_after_cap
        self._auth_probe_interval = auth_probe_interval
        self._retry_horizon = retry_horizon
        self._breaker_threshold = max(1, breaker_threshold)
        self._sync = durability == "sync"
        self._closed = False
        self._atexit_hook: Callable[[], None] | None = None
        self._feeder: Feeder | None = None
        self._init_state()
        _live.add(self)
        has_orphans = getattr(self._store, "has_orphans", None)
        if self._self_fed and has_orphans is not None and has_orphans():
            self._start_worker()  # files of dead processes wait: deliver them without waiting for a record()

    def _init_state(self) -> None:
        """Everything that a forked child must not share with its parent."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._drive_lock = threading.Lock()  # one thread at a time moves events through the store
        self._wake = _Wake()
        self._armed = False  # deferred calls wait to be drained (see arm_deferred)
        self._last_drain = 0.0  # monotonic; the window of deferred calls ends one linger after it
        self._wake_on_arm = True  # no window is open (the worker may sleep long): arming must wake it
        self._fork_locked = False
        self._fork_store_lock: Any = None
        self._incoming: deque[Entry] = deque()  # the hot path's queue
        # seq -> recorded_at of every accepted event that has left `_incoming` and is not finished: in insertion
        # (= seq) order, so the oldest outstanding event is always the first key.
        self._outstanding: OrderedDict[int, float] = OrderedDict()
        self._recovered_out: OrderedDict[int, float] = OrderedDict()  # the same for events adopted from disk
        self._committed_seq = 0  # every event up to this seq is held by the store (durability="sync" waits on it)
        self._commit_marks: deque[tuple[int, float]] = deque()  # (seq, monotonic) samples of uncommitted events
        self._pressure_off_until = 0.0
        self._recovered = 0
        self._spool_errors = 0
        self._notices: deque[tuple[str, str, str]] = deque(maxlen=max(1024, self._max_queue_size))
        self._seq = 0
        self._recorded = 0
        self._acked = 0
        self._pending = 0  # in memory: queued, in flight or waiting for a retry
        self._spooled = 0  # held by a durable store
        self._set_aside = 0
        self._set_aside_reasons: dict[str, int] = {}
        self._dropped: dict[str, int] = {}
        self._requests = {"2xx": 0, "4xx": 0, "5xx": 0, "network": 0}
        self._retried = 0
        self._lost_min_seq: int | None = None  # the oldest event dropped after being accepted (shutdown)
        self._concurrency = self._max_in_flight
        self._exporter_concurrency = 0
        self._consecutive_acks = 0
        self._consecutive_failures = 0
        self._pause_until = 0.0  # monotonic; Retry-After / 429 / 503 / circuit breaker
        self._auth_until = 0.0  # monotonic; next auth probe
        self._auth_paused = False
        self._batch_in_flight = 0
        self._streaming: dict[int, Entry] = {}  # seq -> entry handed to a streaming exporter, not yet reported
        self._stream_took = 0
        self._congestion_holdoff = 0.0  # monotonic; no second halving before the first one had an effect
        self._worker: threading.Thread | None = None
        # True from a successful start until the worker's loop returns (is_alive() without its lock probe, which
        # costs microseconds on callers' threads, run cold: arm_deferred asks it once per window).
        self._worker_running = False
        self._deadline: float | None = None  # monotonic; set by shutdown()
        self._abandoned = False  # shutdown has counted what was left; the worker must not touch counters
        self._idle = False
        self._paused = False  # pause(): start no new sends until resume()
        self._flushing = 0  # flush() calls in progress; each lets a paused pipeline send for its duration
        # Last: a self-feeding store opens its file now and may report to the counters above.
        self._store: Store = self._store_factory()
        bind = getattr(self._store, "bind", None)
        self._self_fed = bind is not None  # the store takes accepted events itself (the spool's writer)
        self._can_fill = hasattr(self._store, "full")  # a store written before `full` existed never fills
        if bind is not None:
            bind(_Host(self))

    # ------------------------------------------------------------------ hot path

    def submit(self, event: CostEvent) -> bool:
        """Queue ``event`` for delivery. O(1), no I/O, never raises.

        Returns:
            True when the event was accepted; False when it was dropped (queue full, pipeline shut down).
        """
        try:
            if self._pid != os.getpid():  # forked by a path that skipped the fork hooks
                self._fork_reinit()
            if self._self_fed:
                try:  # noqa: SIM105 -- cheaper than contextlib.suppress on the hot path
                    event.to_json()  # cached; serialised by the caller, the group commit stays short
                except Exception:  # not serialisable: the exporter sets it aside with the reason
                    pass
            entry = Entry(0, event, self._clock())
            with self._lock:
                self._recorded += 1
                if self._closed:
                    reason = "shutdown"
                elif self._pending >= self._max_queue_size:
                    reason = "queue_full"
                elif self._can_fill and self._store.full:
                    reason = "spool_full"
                else:
                    self._seq += 1
                    entry.seq = self._seq
                    self._pending += 1
                    self._incoming.append(entry)
                    started = self._worker is not None
                    idle = self._idle
                    reason = ""
                if reason:
                    self._dropped[reason] = self._dropped.get(reason, 0) + 1
            if not reason:
                if not started:
                    self._start_worker()
                if self._self_fed:
                    self._feed_store(entry.seq)
                elif idle:
                    self._wake.set()
                return True
            self._report_drop(event.idempotency_key, reason)
            return False
        except Exception as exc:
            report_internal_error(exc, "export.submit")
            return False

    def set_feeder(self, feeder: Feeder) -> None:
        """Attach the recorder's deferred calls: drained by the worker, and by flush(), stats() and shutdown()."""
        self._feeder = feeder

    def arm_deferred(self) -> bool:
        """A deferred call is waiting: drain the feeder within ``_DEFER_LINGER``. Called once per linger window.

        Returns False when the caller must drain it itself: shut down, ``durability="sync"`` (the caller waits for
        the commit), or no worker thread (it could not start, or its loop has returned).
        """
        try:
            # No pid check here, unlike submit(): a fork that returns to Python runs the fork hooks, whose
            # _fork_reinit leaves a child with no worker (_worker None, _worker_running False) before it runs on.
            if self._closed or self._sync:
                return False
            if self._worker is None:
                self._start_worker()
            self._armed = True
            if self._wake_on_arm:  # read after _armed is set: the worker writes the two the other way round
                self._wake.set()
            return self._worker_running
        except Exception as exc:
            report_internal_error(exc, "export.arm_deferred")
            return False

    def _drain_feeder(self) -> None:
        self._armed = False  # before draining: a call deferred from now on arms again
        self._last_drain = time.monotonic()  # opens the next window
        feeder = self._feeder
        if feeder is not None:
            try:
                feeder.drain()
            except Exception as exc:
                report_internal_error(exc, "export.drain_deferred")

    def _feed_store(self, seq: int) -> None:
        """Wake the spool writer when it is idle or has a full group; with ``durability="sync"``, wait for it."""
        store: Any = self._store
        if self._sync:
            if store.on_writer_thread():
                return  # e.g. recorded from a callback on the writer itself: waiting would deadlock
            store.nudge(urgent=True)
            deadline = time.monotonic() + _SYNC_WAIT
            with self._cond:
                while self._committed_seq < seq and not self._abandoned:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self._cond.wait(remaining)
            return
        if store.writer_idle:
            store.nudge()
        elif len(self._incoming) >= store.commit_events:
            store.nudge(urgent=True)
        self._commit_pressure(store, seq)

    def _commit_pressure(self, store: Any, seq: int) -> None:
        """Hold the recording thread while the oldest uncommitted event is older than the store allows.

        Marks (seq, time) every ~10 ms of submits; when the oldest uncommitted mark passes ``store.pressure_age``
        (60 % of the commit window), wait (GIL released) until the writer has committed it, at most
        ``_PRESSURE_WAIT``. A wait that runs out (a stalled disk) pauses the back-pressure for a second, so a slow
        disk slows recording down but never stops it.
        """
        now = time.monotonic()
        marks = self._commit_marks
        if not marks or now - marks[-1][1] >= _MARK_EVERY:
            marks.append((seq, now))
        committed = self._committed_seq
        try:
            while marks[0][0] <= committed:
                marks.popleft()
            oldest_seq, oldest_at = marks[0]
        except IndexError:  # all committed (or another thread popped the last mark)
            return
        if now - oldest_at < store.pressure_age or now < self._pressure_off_until:
            return
        if store.on_writer_thread() or not store.writer_alive():
            return  # the writer cannot be waited for from itself, nor when it is not running
        store.nudge(urgent=True)
        deadline = now + _PRESSURE_WAIT
        with self._cond:
            while self._committed_seq < oldest_seq and not self._abandoned:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._pressure_off_until = time.monotonic() + 1.0
                    return
                self._cond.wait(remaining)

    def _report_drop(self, key: str, reason: str) -> None:
        if self._on_error is None:
            return
        if reason == "queue_full":
            detail = f"the delivery queue is full ({self._max_queue_size} events); the event was dropped"
        elif reason == "spool_full":
            detail = "the spool is full; the event was dropped"
        else:
            detail = "the pipeline is shut down; the event was dropped"
        if self._worker is not None and self._worker.is_alive() and not self._closed:
            self._notices.append((key, reason, detail))  # the worker calls on_error, off the hot path
            if self._idle:
                self._wake.set()
        else:
            self._notify(key, reason, detail)

    # ------------------------------------------------------------------ worker lifecycle

    def _start_worker(self) -> None:
        with self._lock:
            if self._worker is not None or self._closed:
                return
            worker = threading.Thread(target=self._run, name="paygentic_costs-export", daemon=True)
            self._worker = worker  # set before start(): a failed start is not retried on every submit
        if self._atexit_hook is None:
            self._atexit_hook = functools.partial(_shutdown_at_exit, weakref.ref(self))
            atexit.register(self._atexit_hook)
        start_store = getattr(self._store, "start", None)
        if start_store is not None:
            start_store()
        self._worker_running = True  # before start(): from then on only the worker's own exit clears it
        try:
            worker.start()
        except RuntimeError as exc:
            self._worker_running = False  # e.g. "can't create new thread at interpreter shutdown"
            _throttle.log(
                logger, logging.WARNING, "worker-start",
                "cannot start the delivery thread (%s); events are delivered by flush() and shutdown()", exc,
            )

    def _run(self) -> None:
        try:
            with self._drive_lock:
                try:
                    self._drive()
                except BaseException as exc:  # the interpreter is going away; nothing sensible is left to do
                    report_internal_error(exc, "export.worker")
        finally:
            self._worker_running = False  # from now on, callers drain their deferred calls themselves

    # ------------------------------------------------------------------ the delivery loop

    def _drive(self, done: Callable[[], bool] | None = None, until: float | None = None) -> None:
        """Move events through the store until shutdown (worker), or until ``done()`` or ``until`` (inline)."""
        on_worker = threading.current_thread() is self._worker  # fixed for the whole call: asked once
        while True:
            try:
                self._deliver_notices()
                now = time.monotonic()
                if self._armed and (
                    now >= self._last_drain + _DEFER_LINGER
                    or self._flushing or self._deadline is not None or until is not None
                ):
                    self._drain_feeder()
                    now = time.monotonic()
                with self._lock:
                    if self._abandoned or self._pid != os.getpid():
                        return
                    stopping = self._deadline
                    if stopping is not None and (self._pending + self._spooled == 0 or now >= stopping):
                        return
                    if until is not None and (now >= until or (done is not None and done())):
                        return
                    admitted = [] if self._self_fed else self._admit_locked()
                if admitted:
                    self._admit(admitted)
                if self._self_fed and not on_worker:
                    self._store_turn_inline()
                wait = self._step(now, stopping, until)
                if wait > 0:
                    limit = min(wait, _IDLE_WAIT)
                    window_end = self._last_drain + _DEFER_LINGER  # armed calls are drained then
                    if on_worker:
                        grace_end = self._last_drain + _DEFER_GRACE
                        if now < window_end:
                            limit = min(limit, window_end - now)  # a window is open: wake at its end, unasked
                        elif now < grace_end:
                            limit = min(limit, _DEFER_LINGER)  # no window, still in the grace: the next tick drains
                        # Written before _armed is read (arm_deferred does the reverse): a call armed meanwhile
                        # either is seen here or sees that it must wake us.
                        self._wake_on_arm = now >= grace_end
                    if self._armed:
                        limit = min(limit, window_end - now)
                    if stopping is not None:
                        limit = min(limit, stopping - now)
                    if until is not None:
                        limit = min(limit, until - now)
                    self._idle = True
                    if (self._self_fed or not self._incoming) and not self._notices:
                        if self._self_fed and not on_worker:
                            limit = min(limit, 0.05)  # inline: nobody else writes the spool
                        self._wake.wait(max(limit, 0.0))
                    self._idle = False
                    self._wake.clear()
            except Exception as exc:
                report_internal_error(exc, "export.loop")
                self._wake.wait(max(self._backoff_floor, 0.01))  # no hot loop on a persistent fault

    def _admit_locked(self) -> list[Entry]:
        incoming = self._incoming
        count = min(len(incoming), _ADMIT_MAX)
        if not count:
            return []
        entries = [incoming.popleft() for _ in range(count)]
        outstanding = self._outstanding
        for entry in entries:
            outstanding[entry.seq] = entry.recorded_at
        return entries

    def _admit(self, entries: list[Entry]) -> None:
        self._store.put(entries)

    def _store_turn_inline(self) -> None:
        """Drive the spool writer on this thread when its own thread is not running (interpreter exit)."""
        store: Any = self._store
        if not store.writer_alive():
            store.turn_inline()

    def _step(self, now: float, stopping: float | None, until: float | None = None) -> float:
        """Send due events; return 0 after doing work, else how long to wait."""
        with self._lock:
            paused_until = max(self._pause_until, self._auth_until if self._auth_paused else 0.0)
            probing = self._auth_paused or self._consecutive_failures >= self._breaker_threshold
            concurrency = self._concurrency
            held = self._held_locked()
        if held:
            return _IDLE_WAIT  # resume(), flush() and shutdown() wake the worker
        if now < paused_until:
            return paused_until - now
        stream = getattr(self._exporter, "export_stream", None)
        if stream is not None:
            return self._run_stream(stream, now, stopping, until)
        limit = 1 if probing else min(self._max_batch_size, concurrency * 4)
        batch = self._store.take_due(now, limit)
        if not batch:
            next_due = self._store.next_due()
            return _IDLE_WAIT if next_due is None else max(next_due - now, 0.001)
        batch = self._expire(batch, now)
        if not batch:
            return 0.0
        timeout = self._export_timeout
        if stopping is not None:
            timeout = max(0.001, min(timeout, stopping - now))
        self._set_exporter_concurrency(concurrency)
        self._batch_in_flight = len(batch)
        try:
            outcomes = list(self._exporter.export([entry.event for entry in batch], timeout))
            if len(outcomes) != len(batch):
                raise RuntimeError(f"the exporter returned {len(outcomes)} outcomes for {len(batch)} events")
        except Exception as exc:
            report_internal_error(exc, f"export.{type(self._exporter).__name__}.export")
            outcomes = [Outcome("retry", reason="exporter_error")] * len(batch)
        finally:
            self._batch_in_flight = 0
        self._apply(batch, outcomes)
        return 0.0

    def _held_locked(self) -> bool:
        """Paused, and no flush or shutdown asks for sending right now."""
        return self._paused and not self._flushing and self._deadline is None

    def _expire(self, entries: list[Entry], now: float) -> list[Entry]:
        """Set aside entries past the dedup horizon; return the others."""
        wall = self._clock()
        horizon = self._retry_horizon
        expired = [entry for entry in entries if wall >= entry.recorded_at + horizon]
        if not expired:
            return entries
        self._finish(now, acked=[], retry=[], rejected=[(entry, "dedup_window_expired", None) for entry in expired])
        return [entry for entry in entries if wall < entry.recorded_at + horizon]

    def _set_exporter_concurrency(self, concurrency: int) -> None:
        if concurrency != self._exporter_concurrency:
            self._exporter_concurrency = concurrency
            set_concurrency = getattr(self._exporter, "set_concurrency", None)
            if set_concurrency is not None:
                set_concurrency(concurrency)

    def _run_stream(
        self, stream: Callable[..., object], now: float, stopping: float | None, until: float | None
    ) -> float:
        """Let a streaming exporter pull events as its request slots free up, and report each as it finishes,
        so one slow request never holds back the others."""
        self._streaming = {}
        self._stream_took = 0

        def deadline() -> float | None:
            limits = [limit for limit in (self._deadline, until) if limit is not None]
            return min(limits) if limits else None

        try:
            stream(self._stream_take, self._stream_done, deadline)
        except Exception as exc:
            report_internal_error(exc, f"export.{type(self._exporter).__name__}.export_stream")
        finally:
            leftovers = list(self._streaming.values())
            self._streaming.clear()
            self._batch_in_flight = 0
            if leftovers:
                self._apply(leftovers, [Outcome("retry", reason="exporter_error")] * len(leftovers))
        if self._stream_took:
            return 0.0
        next_due = self._store.next_due()
        return _IDLE_WAIT if next_due is None else max(next_due - time.monotonic(), 0.001)

    def _stream_take(self, limit: int) -> list[tuple[int, CostEvent]]:
        """Up to ``limit`` events to start now (none while paused, one at a time while probing)."""
        try:
            self._deliver_notices()
            now = time.monotonic()
            if self._armed and (
                now >= self._last_drain + _DEFER_LINGER or self._flushing or self._deadline is not None
            ):
                self._drain_feeder()
            with self._lock:
                if self._abandoned:
                    return []
                admitted = [] if self._self_fed else self._admit_locked()
            if admitted:
                self._admit(admitted)
            with self._lock:
                paused_until = max(self._pause_until, self._auth_until if self._auth_paused else 0.0)
                probing = self._auth_paused or self._consecutive_failures >= self._breaker_threshold
                concurrency = self._concurrency
                stopping = self._deadline
                held = self._held_locked()
            if held or now < paused_until or (stopping is not None and now >= stopping):
                return []
            in_flight = len(self._streaming)
            room = (1 if probing else concurrency) - in_flight
            limit = min(limit, room)
            if limit <= 0:
                return []
            self._set_exporter_concurrency(concurrency)
            entries = self._expire(self._store.take_due(now, limit), now)
            for entry in entries:
                self._streaming[entry.seq] = entry
            self._batch_in_flight = len(self._streaming)
            self._stream_took += len(entries)
            return [(entry.seq, entry.event) for entry in entries]
        except Exception as exc:
            report_internal_error(exc, "export.stream_take")
            return []

    def _stream_done(self, token: int, outcome: Outcome) -> None:
        entry = self._streaming.pop(token, None)
        if entry is not None:
            self._batch_in_flight = len(self._streaming)
            self._apply([entry], [outcome])

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._backoff_cap, self._backoff_base * 2.0 ** min(attempt, 64))
        return max(self._backoff_floor, random.uniform(0.0, ceiling))

    def _apply(self, batch: Sequence[Entry], outcomes: Sequence[Outcome]) -> None:
        now = time.monotonic()
        acked: list[Entry] = []
        retry: list[Entry] = []
        rejected: list[tuple[Entry, str, int | None]] = []
        requests = {"2xx": 0, "4xx": 0, "5xx": 0, "network": 0}
        congestion = auth = False
        pause_for = 0.0
        failures = 0
        for entry, outcome in zip(batch, outcomes, strict=True):
            status = outcome.status
            if status is not None:
                bucket = f"{status // 100}xx"
                if bucket in requests:
                    requests[bucket] += 1
            kind = outcome.kind
            if kind == "ack":
                acked.append(entry)
            elif kind == "reject":
                reason = outcome.reason or (f"HTTP {status}" if status is not None else "rejected")
                rejected.append((entry, reason, status))
            elif kind == "auth":
                auth = True
                entry.next_at = now  # kept, not counted as an attempt: the key is wrong, not the event
                retry.append(entry)
            elif outcome.reason == "not_sent":
                entry.next_at = now
                retry.append(entry)
            else:
                if status is None and outcome.reason != "exporter_error":
                    requests["network"] += 1
                if status == 409:
                    entry.conflicts += 1
                    if entry.conflicts > _CONFLICT_RETRIES:
                        rejected.append((entry, "conflict", status))
                        continue
                entry.attempts += 1
                failures += 1
                delay = self._backoff(entry.attempts)
                if outcome.retry_after is not None:
                    honoured = min(max(outcome.retry_after, 0.0), self._retry_after_cap)
                    delay = max(delay, honoured)
                    pause_for = max(pause_for, honoured)
                    congestion = True
                elif status in _CONGESTION_STATUSES:
                    pause_for = max(pause_for, delay)
                    congestion = True
                entry.next_at = now + delay
                retry.append(entry)
        self._finish(
            now, acked=acked, retry=retry, rejected=rejected, requests=requests, failures=failures,
            congestion=congestion, pause_for=pause_for, auth=auth,
        )

    def _finish(
        self,
        now: float,
        *,
        acked: list[Entry],
        retry: list[Entry],
        rejected: list[tuple[Entry, str, int | None]],
        requests: dict[str, int] | None = None,
        failures: int = 0,
        congestion: bool = False,
        pause_for: float = 0.0,
        auth: bool = False,
    ) -> None:
        """Hand the results to the store, then update counters and flow control in one locked step."""
        store = self._store
        if acked:
            store.ack(acked)
        if retry:
            store.retry(retry)
        wall = self._clock() if rejected else 0.0
        for entry, reason, status in rejected:
            store.set_aside([entry], reason)
            self._dead.add(SetAside(entry.event, reason, status, entry.attempts, wall))
        for entry, reason, status in rejected:
            # Before the counters move: once flush() sees the event finished, its callback has run.
            detail = reason if status is None else f"HTTP {status}: {reason}"
            self._notify(entry.event.idempotency_key, reason, detail)
        with self._cond:
            if self._abandoned:
                return
            outstanding = self._outstanding
            recovered = self._recovered_out
            on_disk = 0
            for entry in acked:
                outstanding.pop(entry.seq, None)
                if entry.spooled:
                    on_disk += 1
                    recovered.pop(entry.seq, None)
            for entry, reason, _ in rejected:
                outstanding.pop(entry.seq, None)
                if entry.spooled:
                    on_disk += 1
                    recovered.pop(entry.seq, None)
                self._set_aside_reasons[reason] = self._set_aside_reasons.get(reason, 0) + 1
            finished = len(acked) + len(rejected)
            self._spooled -= on_disk
            self._pending -= finished - on_disk
            self._acked += len(acked)
            self._set_aside += len(rejected)
            self._retried += failures
            if requests:
                for bucket, count in requests.items():
                    self._requests[bucket] += count
            # AIMD on the concurrency limit.
            if congestion:
                if now >= self._congestion_holdoff:
                    self._concurrency = max(1, self._concurrency // 2)
                    self._congestion_holdoff = now + max(pause_for, self._backoff_floor)
                self._consecutive_acks = 0
            elif failures:
                self._consecutive_acks = 0
            else:
                self._consecutive_acks += len(acked)
                while self._consecutive_acks >= 20 and self._concurrency < self._max_in_flight:
                    self._concurrency += 1
                    self._consecutive_acks -= 20
            # Circuit breaker: after repeated failures, one probe per backoff interval.
            if acked:
                self._consecutive_failures = 0
            else:
                self._consecutive_failures += failures
                if failures and self._consecutive_failures >= self._breaker_threshold:
                    excess = self._consecutive_failures - self._breaker_threshold + 1
                    interval = min(self._backoff_cap, self._backoff_base * 2.0 ** min(excess, 64))
                    pause_for = max(pause_for, self._backoff_floor, interval / 2 + random.uniform(0, interval / 2))
            if pause_for > 0:
                self._pause_until = max(self._pause_until, now + pause_for)
            was_auth_paused = self._auth_paused
            if acked:
                self._auth_paused = False
            elif auth:
                self._auth_paused = True
                self._auth_until = now + self._auth_probe_interval
            self._cond.notify_all()
        if auth and not acked:
            _auth_throttle.log(
                logger, logging.ERROR, "auth",
                "Paygentic refused the API key (HTTP 401/403); delivery is paused, events are kept and retried "
                "every %.0f s",
                self._auth_probe_interval,
            )
        elif was_auth_paused and acked:
            logger.warning("Paygentic accepted the API key again; delivery resumed")
        for entry, reason, _ in rejected:
            _throttle.log(
                logger, logging.WARNING, f"set-aside-{reason}",
                "event %s set aside (%s): it will not be sent again", entry.event.idempotency_key, reason,
            )

    def _deliver_notices(self) -> None:
        notices = self._notices
        while notices:
            try:
                key, reason, detail = notices.popleft()
            except IndexError:
                return
            self._notify(key, reason, detail)

    def _notify(self, key: str, reason: str, detail: str) -> None:
        callback = self._on_error
        if callback is None:
            return
        try:
            callback(key, reason, detail)
        except Exception as exc:
            report_internal_error(exc, "export.on_error")

    # ------------------------------------------------------------------ flush and shutdown

    def _done_locked(self, target: int) -> bool:
        incoming = self._incoming
        if incoming and incoming[0].seq <= target:
            return False
        if self._recovered_out and next(iter(self._recovered_out)) <= target:
            return False
        return not (self._outstanding and next(iter(self._outstanding)) <= target)

    def _succeeded_locked(self, target: int) -> bool:
        return self._lost_min_seq is None or self._lost_min_seq > target

    def pause(self) -> None:
        """Stop starting new sends until :meth:`resume` (e.g. before a serverless platform freezes the process).

        Requests already on the wire may finish. ``submit()`` keeps accepting events (and the spool keeps
        committing them). :meth:`flush` still sends while it runs and leaves the pipeline paused when it returns;
        :meth:`shutdown` sends regardless. Idempotent; never raises.
        """
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        """Send again after :meth:`pause`. Idempotent; never raises."""
        with self._lock:
            self._paused = False
        self._wake.set()

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`."""
        return self._paused

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event submitted before this call is acknowledged or set aside.

        Flushing implies sending: on a paused pipeline it sends for the duration of the call and the pipeline is
        paused again when it returns (new sends stop; requests on the wire may finish). Never raises. Safe from
        any thread, including one running an asyncio loop (it only waits on a condition; prefer :meth:`aflush`
        there, which does not block the loop).

        Returns:
            True if that happened within ``timeout`` seconds.
        """
        try:
            self._check_pid()
            deadline = time.monotonic() + max(0.0, timeout)
            self._drain_feeder()  # calls finished before this flush become events now
            with self._lock:
                target = self._seq
                if self._done_locked(target):
                    return self._succeeded_locked(target)
                self._flushing += 1  # a paused pipeline sends while any flush runs
            try:
                done = self._flush_wait(target, deadline)
            finally:
                with self._lock:
                    self._flushing -= 1
            if done and self._self_fed:
                # Acknowledged rows are deleted on disk before flush() returns, so a process that exits right
                # after (os._exit, a frozen serverless instance) leaves nothing behind to be resent.
                store: Any = self._store
                store.commit_now(max(0.0, deadline - time.monotonic()))
            return done
        except Exception as exc:
            report_internal_error(exc, "export.flush")
            return False

    def _flush_wait(self, target: int, deadline: float) -> bool:
        """Wake the sender and wait until every event up to ``target`` is finished, or ``deadline``."""
        if _running_loop():
            _throttle.log(
                logger, logging.WARNING, "flush-in-loop",
                "flush() called from a running event loop blocks it; use `await pipeline.aflush()`",
            )
        if self._worker is None:
            self._start_worker()
        if self._self_fed:
            store: Any = self._store
            store.nudge(urgent=True)  # commit now rather than at the end of the group-commit window
        if self._worker_running:
            self._wake.set()
        else:
            self._drive_inline(lambda: self._done_locked(target), deadline)
        with self._cond:
            while not self._done_locked(target):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return self._succeeded_locked(target)

    async def aflush(self, timeout: float = 10.0) -> bool:
        """:meth:`flush` without blocking the running event loop."""
        return await asyncio.to_thread(self.flush, timeout)

    def _drive_inline(self, done: Callable[[], bool] | None, until: float) -> None:
        """Deliver on the calling thread (no worker thread: it could not start, or the interpreter is exiting)."""
        remaining = until - time.monotonic()
        if remaining > 0 and self._drive_lock.acquire(timeout=remaining):
            try:
                self._drive(done, until)
            finally:
                self._drive_lock.release()

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting events, deliver what is queued within ``timeout`` (default: ``shutdown_timeout``),
        and close the exporter. Idempotent; never raises.

        With the spool, everything still in memory is committed to disk first (typically well under 200 ms),
        then delivery continues with the remaining budget; what is left stays on disk for the next process on
        the same spool directory and is not counted as dropped (``stats()["spooled"]``). Without it, the rest
        is counted ``dropped["shutdown_timeout"]``.

        Starts no thread: when the worker is not running (at interpreter exit), it delivers on the calling thread.
        """
        try:
            self._check_pid()
            budget = self._shutdown_timeout if timeout is None else max(0.0, timeout)
            if not self._closed:
                self._drain_feeder()  # deferred calls are accepted events-to-be: queue them before closing
            with self._lock:
                if self._closed and self._deadline is not None:
                    return
                self._closed = True
                deadline = self._deadline = time.monotonic() + budget
                pending = self._pending + self._spooled
            store: Any = self._store
            if self._self_fed:
                store.commit_now(max(0.0, deadline - time.monotonic()))  # persist first, then drain
            self._wake.set()
            worker = self._worker
            if worker is not None and worker.is_alive():
                if worker is not threading.current_thread():  # e.g. shutdown() from inside on_error
                    worker.join(max(0.0, deadline - time.monotonic()))
            elif pending:
                self._drive_inline(None, deadline)
            self._drain_feeder()  # a call deferred while closing: submitted now, counted dropped[shutdown]
            self._abandon_rest()
            try:
                self._exporter.shutdown()
            except Exception as exc:
                report_internal_error(exc, f"export.{type(self._exporter).__name__}.shutdown")
            if worker is not None and worker.is_alive() and worker is not threading.current_thread():
                worker.join(0.5)  # the exporter has cut its export short; let the thread finish
            close_store = getattr(store, "close", None)
            if close_store is not None:
                close_store()  # write back the last acknowledgements; the file is released for adoption
            if self._atexit_hook is not None:
                atexit.unregister(self._atexit_hook)
            _live.discard(self)
        except Exception as exc:
            report_internal_error(exc, "export.shutdown")

    def _abandon_rest(self) -> None:
        with self._cond:
            left = self._pending
            if left:
                firsts = [self._incoming[0].seq] if self._incoming else []
                if self._outstanding:
                    firsts.append(next(iter(self._outstanding)))
                self._lost_min_seq = min(firsts) if firsts else self._seq
                self._dropped["shutdown_timeout"] = self._dropped.get("shutdown_timeout", 0) + left
                self._pending = 0
                self._incoming.clear()
                if not self._store.durable:
                    self._outstanding.clear()
            self._committed_seq = self._seq
            self._abandoned = True
            self._cond.notify_all()
        if left:
            logger.warning("shutdown: %d undelivered event(s) dropped after the shutdown timeout", left)

    # ------------------------------------------------------------------ fork

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            self._fork_reinit()

    def _fork_prepare(self) -> None:
        # No submit, flush or shutdown bookkeeping may straddle the fork, and no spool transaction either: a child
        # forked while the writer is inside SQLite could inherit SQLite's own mutexes held. Writer lock first: the
        # writer takes the queue lock while holding it.
        if self._pid == os.getpid():
            store: Any = self._store
            store_lock = getattr(store, "fork_lock", None)
            if store_lock is not None:
                store.fork_waiting = True
                store_lock.acquire()
                store.fork_waiting = False
                self._fork_store_lock = store_lock
            self._lock.acquire()
            self._fork_locked = True

    def _fork_release(self) -> None:
        if self._fork_locked:
            self._fork_locked = False
            self._lock.release()
        store_lock, self._fork_store_lock = self._fork_store_lock, None
        if store_lock is not None:
            store_lock.release()

    def _fork_reinit(self) -> None:
        """In a forked child: fresh locks and an empty queue (the parent still owns and sends its events),
        counters from zero, the worker "not started", and the exporter's inherited connections forgotten. A
        paused parent has a paused child."""
        paused = self._paused
        old_store = self._store
        self._init_state()
        self._paused = paused
        feeder = self._feeder
        if feeder is not None:
            try:
                feeder.forget_deferred()
            except Exception as exc:
                report_internal_error(exc, "export.feeder.after_fork_in_child")
        forget = getattr(old_store, "after_fork_in_child", None)
        if forget is not None:
            try:
                forget()
            except Exception as exc:
                report_internal_error(exc, "export.store.after_fork_in_child")
        hook = getattr(self._exporter, "after_fork_in_child", None)
        if hook is not None:
            try:
                hook()
            except Exception as exc:
                report_internal_error(exc, "export.after_fork_in_child")

    # ------------------------------------------------------------------ introspection

    def stats(self) -> dict[str, Any]:
        """A consistent snapshot of delivery accounting.

        ``recorded == acknowledged + queued + spooled + set_aside + sum(dropped.values())`` always holds.
        ``queued`` is in memory and not (yet) on disk; ``spooled`` is committed to the spool and not acknowledged
        (in flight included). ``recorded`` includes ``recovered_from_spool``: events adopted from spool files left
        by processes that died (or closed) before delivering them. Also ``spool_errors`` (disk failures that
        switched the spool to memory-only for a while) and ``spool_bytes``.
        Gauges: ``in_flight``, ``concurrency_limit``, ``paused_until`` (epoch seconds by the pipeline clock, or
        None), ``oldest_pending_age_s``, ``circuit_state``; and ``requests`` (by status class, ``network`` for
        connection failures), ``retried``, ``set_aside_reasons``.
        """
        self._check_pid()
        self._drain_feeder()  # calls finished before stats() are counted as recorded
        try:
            wall = self._clock()
        except Exception:  # a broken user clock must not make stats() fail
            wall = time.time()
        now = time.monotonic()
        exporter_in_flight = getattr(self._exporter, "in_flight", None)
        with self._lock:
            oldest: float | None = None
            if self._outstanding:
                oldest = next(iter(self._outstanding.values()))
            if self._recovered_out:
                first = next(iter(self._recovered_out.values()))
                oldest = first if oldest is None else min(oldest, first)
            if self._incoming and (oldest is None or self._incoming[0].recorded_at < oldest):
                oldest = self._incoming[0].recorded_at
            paused = max(self._pause_until, self._auth_until if self._auth_paused else 0.0)
            if self._auth_paused:
                circuit = "auth_paused"
            elif self._consecutive_failures >= self._breaker_threshold:
                circuit = "open"
            else:
                circuit = "closed"
            batch = self._batch_in_flight
            return {
                "recorded": self._recorded,
                "acknowledged": self._acked,
                "queued": self._pending,
                "spooled": self._spooled,
                "set_aside": self._set_aside,
                "dropped": dict(self._dropped),
                "in_flight": min(batch, exporter_in_flight) if isinstance(exporter_in_flight, int) else batch,
                "concurrency_limit": self._concurrency,
                "paused_until": wall + (paused - now) if paused > now else None,
                "oldest_pending_age_s": max(0.0, wall - oldest) if oldest is not None else 0.0,
                "circuit_state": circuit,
                "paused": self._paused,
                "requests": dict(self._requests),
                "retried": self._retried,
                "set_aside_reasons": dict(self._set_aside_reasons),
                "recovered_from_spool": self._recovered,
                "spool_errors": self._spool_errors,
                "spool_bytes": int(getattr(self._store, "bytes_used", 0)),
            }

    @property
    def dead_letters(self) -> list[SetAside]:
        """The most recent events set aside (rejected by the server or past the dedup horizon), oldest first."""
        return self._dead.items()

    @property
    def exporter(self) -> Exporter:
        """The exporter events are handed to."""
        return self._exporter

    @property
    def closed(self) -> bool:
        """True once :meth:`shutdown` has been called."""
        return self._closed


def _running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Host:
    """The pipeline as seen by a self-feeding store (:class:`~._store.StoreHost`)."""

    def __init__(self, pipeline: DeliveryPipeline) -> None:
        self._p = pipeline
        self.max_queue_size = pipeline._max_queue_size

    def clock(self) -> float:
        try:
            return float(self._p._clock())
        except Exception:  # a broken user clock must not break the spool
            return time.time()

    def has_incoming(self) -> bool:
        return bool(self._p._incoming)

    def take_incoming(self, limit: int) -> list[Entry]:
        p = self._p
        with p._lock:
            if p._abandoned:
                return []
            incoming = p._incoming
            entries = [incoming.popleft() for _ in range(min(limit, len(incoming)))]
            outstanding = p._outstanding
            for entry in entries:
                outstanding[entry.seq] = entry.recorded_at
        return entries

    def committed(self, entries: list[Entry], durable: bool) -> None:
        p = self._p
        with p._cond:
            if durable and not p._abandoned:
                for entry in entries:
                    entry.spooled = True
                p._pending -= len(entries)
                p._spooled += len(entries)
            if entries:
                p._committed_seq = max(p._committed_seq, entries[-1].seq)
            p._cond.notify_all()

    def dropped_accepted(self, entries: list[Entry], reason: str, detail: str) -> None:
        p = self._p
        with p._cond:
            if not p._abandoned:
                for entry in entries:
                    p._outstanding.pop(entry.seq, None)
                p._pending -= len(entries)
                p._dropped[reason] = p._dropped.get(reason, 0) + len(entries)
            if entries:
                p._committed_seq = max(p._committed_seq, entries[-1].seq)
            p._cond.notify_all()
        for entry in entries:
            p._notices.append((entry.event.idempotency_key, reason, detail))
        p._wake.set()

    def reserve_seqs(self, count: int) -> int:
        p = self._p
        with p._lock:
            first = p._seq + 1
            p._seq += count
        return first

    def recovered(self, entries: list[Entry], dropped: dict[str, int]) -> None:
        p = self._p
        with p._cond:
            if p._abandoned:
                return
            lost = sum(dropped.values())
            p._recorded += len(entries) + lost
            p._recovered += len(entries) + lost
            p._spooled += len(entries)
            for reason, count in dropped.items():
                p._dropped[reason] = p._dropped.get(reason, 0) + count
            for entry in entries:
                p._recovered_out[entry.seq] = entry.recorded_at

    def lost(self, seqs: list[int], reason: str) -> None:
        p = self._p
        with p._cond:
            if p._abandoned:
                return
            for seq in seqs:
                p._outstanding.pop(seq, None)
                p._recovered_out.pop(seq, None)
            p._spooled -= len(seqs)
            p._dropped[reason] = p._dropped.get(reason, 0) + len(seqs)
            p._cond.notify_all()

    def spool_error(self) -> None:
        p = self._p
        with p._lock:
            p._spool_errors += 1

    def wake_sender(self) -> None:
        self._p._wake.set()


if TYPE_CHECKING:
    _host_check: StoreHost = _Host.__new__(_Host)
