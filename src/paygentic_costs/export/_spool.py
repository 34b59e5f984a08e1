"""The durable spool: accepted events are group-committed to a per-process SQLite file before they are sent.

One writer thread (``paygentic_costs-spool``, started with the delivery worker) owns the file. Every
``commit_interval`` (or sooner, once ``commit_events`` are waiting, or at once for ``flush``/``shutdown`` and
``durability="sync"``) it takes what ``submit()`` queued, writes it in one transaction, and only then hands the
events to the sender; acknowledgements, retries and set-asides are written back in the same transactions, and a
row is deleted only after a 2xx. Because the sender never touches SQLite, a slow disk cannot stall sending.

Memory stays bounded during a long outage: up to ``max_queue_size`` committed events are kept in memory for
sending; beyond that new events live on disk only and are read back as room frees up.

Disk errors (``OSError``, ``ENOSPC``, ``sqlite3.Error``) never reach the caller: the store counts
``spool_errors``, carries on memory-only (those events are counted ``queued`` and bounded by ``max_queue_size``)
and tries the file again every ``reopen_interval`` seconds.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from .._events import CostEvent
from .._guard import report_internal_error
from ._log import LogThrottle, logger
from ._spool_file import (
    PENDING,
    ROW_OVERHEAD,
    SET_ASIDE,
    Row,
    checksum,
    connect,
    list_spool_files,
    lock_path,
    quarantine,
    read_rows,
    remove_spool_file,
    salvage,
    try_lock,
)
from ._store import Entry, StoreHost

__all__ = ["SpoolStore"]

_ADOPT_CHUNK = 500  # rows moved from an adopted file per transaction
_LOAD_CHUNK = 2000  # rows read back from disk per writer turn
_TURN_GROUPS = 8  # group commits per turn at most: between turns, fork() and close() can take the writer lock
_FULL_LOG_WINDOW = 60.0  # "spool full" is logged at ERROR at most once a minute
_SET_ASIDE_TTL = 7 * 86400.0  # set-aside rows are kept this long for reconciliation

_throttle = LogThrottle()
_full_throttle = LogThrottle(_FULL_LOG_WINDOW)

# SQLite connections a forked child inherited: referenced forever so no finaliser closes them under the parent.
_inherited: list[object] = []


class SpoolStore:
    """A :class:`~._store.Store` backed by a SQLite file in ``directory`` (one file per process).

    Args:
        directory: the account's spool directory (see :func:`~._spool_file.account_directory`); created if
            missing.
        max_bytes: cap on the events held on disk (bodies plus a fixed per-row overhead). Beyond it new events
            are dropped and counted ``dropped["spool_full"]``.
        synchronous: ``"NORMAL"`` (survives a process crash) or ``"FULL"`` (also survives power loss, at an
            fsync per commit).
        commit_interval: the longest an accepted event waits before it is on disk (the loss window on a crash).
        commit_events: commit early once this many events are waiting.
        adopt_interval: how often files left by dead processes are looked for (also at start).
        reopen_interval: after a disk error, how long to run memory-only before trying the file again.
    """

    durable = True

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 256 * 1024 * 1024,
        synchronous: str = "NORMAL",
        commit_interval: float = 0.1,
        commit_events: int = 500,
        adopt_interval: float = 60.0,
        reopen_interval: float = 60.0,
    ) -> None:
        self.directory = Path(directory)
        self.full = False
        self._max_bytes = max_bytes
        self._synchronous = synchronous
        # 40 % of the window lingers for more events; the rest is margin for the commit itself on a busy machine.
        self._linger = max(0.0, commit_interval * 0.4)
        # When the oldest uncommitted event reaches this age, recording threads wait for the commit (back-pressure):
        # a thread recording at full speed holds the GIL, and the writer then gets it only every switch interval.
        self.pressure_age = commit_interval * 0.6
        self.commit_events = max(1, commit_events)
        self._adopt_interval = adopt_interval
        self._reopen_interval = reopen_interval
        self._host: StoreHost | None = None
        self._mem_limit = 10_000
        self._lock = threading.Lock()  # memory part and pending write-backs; never held across I/O
        # Memory part (worker side).
        self._ready: deque[Entry] = deque()
        self._waiting: list[tuple[float, int, Entry]] = []
        self._in_flight = 0
        self._cold = False  # some committed pending rows are on disk only
        self._cold_after = 0  # ... and they are the rows with a larger id than this
        self._cold_count = 0
        # Write-backs for the next transaction.
        self._deletes: list[tuple[int, int]] = []  # (row id, bytes)
        self._updates: list[tuple[int, float, int]] = []  # (attempts, next_at wall, row id)
        self._asides: list[tuple[str, float, int]] = []  # (reason, when, row id)
        # Writer side.
        self._writer_lock = threading.Lock()  # one writer turn at a time (thread, or inline at exit)
        self._thread: threading.Thread | None = None
        self._kick = threading.Event()  # wakes an idle writer
        self._urgent = threading.Event()  # commit now, without lingering
        self._turns = threading.Condition(threading.Lock())
        self._turns_started = 0
        self._turns_done = 0
        self.writer_idle = False
        self.fork_waiting = False  # a fork() is waiting for the writer lock
        self._stopping = False
        self._closed = False
        self.path: Path | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._reopen_at = 0.0  # monotonic; 0 = open at the first turn
        self._bytes = 0
        self._last_row = 0  # row ids are never reused: a late acknowledgement must not delete a newer row
        self._next_adopt = 0.0  # monotonic
        self._adopting: tuple[Path, int, sqlite3.Connection] | None = None
        self._pid = os.getpid()

    # ------------------------------------------------------------------ binding and lifecycle

    def bind(self, host: StoreHost) -> None:
        """Attach to the pipeline whose accepted events this store takes."""
        self._host = host
        self._mem_limit = max(1, host.max_queue_size)
        self._open()  # now rather than at the first commit: the first group commit must not wait for it

    @property
    def fork_lock(self) -> threading.Lock:
        """Held by the pipeline across ``fork()`` so no writer turn (no SQLite call) straddles it."""
        return self._writer_lock

    @property
    def bytes_used(self) -> int:
        """Bytes counted against the cap (bodies plus per-row overhead)."""
        return self._bytes

    @property
    def degraded(self) -> bool:
        """Running memory-only after a disk error."""
        return self._conn is None and self._reopen_at > 0

    def has_orphans(self) -> bool:
        """Whether files left by dead processes wait in the directory (a cheap check; takes no lock for long)."""
        for path in list_spool_files(self.directory):
            if path == self.path:
                continue
            fd = try_lock(lock_path(path))
            if fd is not None:
                os.close(fd)
                return True
        return False

    def start(self) -> None:
        """Start the writer thread (lazily, with the delivery worker). A refused start leaves the store to be
        driven inline by :meth:`turn_inline`."""
        if self._thread is not None or self._closed:
            return
        thread = threading.Thread(target=self._run, name="paygentic_costs-spool", daemon=True)
        self._thread = thread
        try:
            thread.start()
        except RuntimeError as exc:
            _throttle.log(logger, logging.WARNING, "spool-start",
                          "cannot start the spool thread (%s); the spool is written by flush() and shutdown()", exc)

    def writer_alive(self) -> bool:
        """The writer thread is running."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def on_writer_thread(self) -> bool:
        """The caller is the writer thread itself (waiting for the writer from there would deadlock)."""
        return self._thread is threading.current_thread()

    def nudge(self, urgent: bool = False) -> None:
        """Wake the writer; ``urgent`` skips the group-commit linger."""
        if urgent:
            self._urgent.set()
        self._kick.set()

    def commit_now(self, timeout: float) -> bool:
        """Have everything accepted so far committed (or run memory-only) within ``timeout``; True if done."""
        if not self.writer_alive() or self.on_writer_thread():
            self.turn_inline()
            return True
        deadline = time.monotonic() + max(0.0, timeout)
        with self._turns:
            target = self._turns_started + 1
            self.nudge(urgent=True)
            while self._turns_done < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._turns.wait(remaining)
        return True

    def turn_inline(self) -> None:
        """One writer turn on the calling thread (no writer thread: it could not start, or has stopped)."""
        with self._writer_lock:
            self._turn()

    def close(self, timeout: float = 1.0) -> None:
        """Write back what is pending, close the file and release it (the next process adopts what is left).

        An empty file is deleted. Idempotent; never raises.
        """
        if self._closed or self._pid != os.getpid():
            return
        self._stopping = True
        self.nudge(urgent=True)
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)
        acquired = self._writer_lock.acquire(timeout=timeout)
        try:
            self._closed = True
            if acquired:
                with contextlib.suppress(Exception):
                    self._turn(final=True)
            self._release_adoption()
            conn, self._conn = self._conn, None
            empty = False
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    (rows,) = conn.execute("SELECT count(*) FROM events").fetchone()
                    empty = rows == 0
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            if empty and self.path is not None:
                remove_spool_file(self.path)
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)
                self._lock_fd = None
        finally:
            if acquired:
                self._writer_lock.release()

    def after_fork_in_child(self) -> None:
        """In a forked child: let go of the parent's file without touching it (the child opens its own)."""
        _inherited.append(self._conn)
        if self._adopting is not None:
            _inherited.append(self._adopting[2])
            with contextlib.suppress(OSError):
                os.close(self._adopting[1])  # our copy only: the parent's descriptor keeps its lock
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
        self._conn = None
        self._adopting = None
        self._lock_fd = None
        self._closed = True

    # ------------------------------------------------------------------ Store protocol (worker side)

    def put(self, entries: Iterable[Entry]) -> None:
        """Not used: this store takes accepted events itself (:meth:`bind`)."""
        raise TypeError("SpoolStore takes events from its pipeline; put() is not used")

    def take_due(self, now: float, limit: int) -> list[Entry]:
        """Retries that are due first (they are older), then fresh entries."""
        out: list[Entry] = []
        with self._lock:
            waiting = self._waiting
            while waiting and len(out) < limit and waiting[0][0] <= now:
                out.append(heapq.heappop(waiting)[2])
            ready = self._ready
            while ready and len(out) < limit:
                out.append(ready.popleft())
            self._in_flight += len(out)
            refill = self._cold and len(ready) < self._mem_limit // 2
        if refill:
            self._kick.set()  # the writer reads more back from disk
        return out

    def ack(self, entries: Iterable[Entry]) -> None:
        """Delivered: their rows are deleted in the next transaction."""
        self._finished(entries, None)

    def retry(self, entries: Iterable[Entry]) -> None:
        """Park each until its ``next_at``; the attempt count and time are written back."""
        host = self._host
        now, wall = time.monotonic(), host.clock() if host is not None else time.time()
        with self._lock:
            for entry in entries:
                self._in_flight -= 1
                heapq.heappush(self._waiting, (entry.next_at, entry.seq, entry))
                if entry.row:
                    self._updates.append((entry.attempts, wall + max(0.0, entry.next_at - now), entry.row))

    def set_aside(self, entries: Iterable[Entry], reason: str) -> None:
        """Kept on disk, marked set aside, for reconciliation (``paygentic-costs spool``)."""
        self._finished(entries, reason)

    def next_due(self) -> float | None:
        """0.0 when fresh entries wait, else the earliest retry time."""
        with self._lock:
            if self._ready:
                return 0.0
            return self._waiting[0][0] if self._waiting else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._ready) + len(self._waiting) + self._cold_count

    def _finished(self, entries: Iterable[Entry], reason: str | None) -> None:
        host = self._host
        wall = host.clock() if host is not None and reason is not None else 0.0
        with self._lock:
            for entry in entries:
                self._in_flight -= 1
                if not entry.row:
                    continue
                if reason is None:
                    self._deletes.append((entry.row, _size(entry)))
                else:
                    self._asides.append((reason, wall, entry.row))
        if not self._urgent.is_set() and self.writer_idle:
            self._kick.set()

    # ------------------------------------------------------------------ the writer

    def _run(self) -> None:
        try:
            while True:
                if not self._stopping and not self._has_work():
                    self.writer_idle = True
                    if not self._has_work():  # re-checked after announcing idleness: no lost wake-up
                        due = self._next_adopt if self._conn is not None else self._reopen_at
                        self._kick.wait(max(0.0, min(1.0, due - time.monotonic())))
                    self.writer_idle = False
                    self._kick.clear()
                if self._stopping:
                    return
                if not self._urgent.is_set() and self._linger:
                    self._urgent.wait(self._linger)  # the group-commit window
                self._urgent.clear()
                if self.fork_waiting:
                    time.sleep(0.001)  # let the forking thread have the lock first (locks are not fair)
                with self._writer_lock:
                    if self._closed:
                        return
                    self._turn()
        except BaseException as exc:  # the interpreter is going away
            report_internal_error(exc, "export.spool")

    def _has_work(self) -> bool:
        host = self._host
        if host is not None and host.has_incoming():
            return True
        if self._conn is None:  # memory-only: only a reopen attempt is due (write-backs wait for the file)
            return time.monotonic() >= self._reopen_at
        with self._lock:
            if self._deletes or self._updates or self._asides:
                return True
            room = self._cold and len(self._ready) + len(self._waiting) + self._in_flight < self._mem_limit
        return room or self._adopting is not None or time.monotonic() >= self._next_adopt

    def _turn(self, final: bool = False) -> None:
        """One group commit: new events, write-backs, then (not final) read-back, adoption and housekeeping."""
        with self._turns:
            self._turns_started += 1
        try:
            self._turn_body(final)
        except Exception as exc:
            report_internal_error(exc, "export.spool.turn")
        finally:
            with self._turns:
                self._turns_done += 1
                self._turns.notify_all()

    def _turn_body(self, final: bool) -> None:
        host = self._host
        if host is None or self._pid != os.getpid():
            return
        now = time.monotonic()
        if self._conn is None and not final and now >= self._reopen_at and not self._closed:
            self._open()
        for _ in range(_TURN_GROUPS):
            # Groups of at most `commit_events`: the oldest events reach the disk first, whatever the backlog.
            entries = host.take_incoming(self.commit_events)
            self._commit(entries)
            if len(entries) < self.commit_events:
                break
        if final or self._conn is None:
            return
        self._read_back()
        if self._adopting is not None or time.monotonic() >= self._next_adopt:
            self._adopt()

    def _commit(self, entries: list[Entry]) -> None:
        """One transaction: ``entries`` plus pending write-backs; then hand the entries to the sender."""
        host = self._host
        assert host is not None
        with self._lock:
            deletes, self._deletes = self._deletes, []
            updates, self._updates = self._updates, []
            asides, self._asides = self._asides, []
        kept, overflow, unserialisable = self._fit(entries) if self._conn is not None else (entries, [], [])
        durable = False
        if self._conn is not None:
            try:
                self._write(kept, deletes, updates, asides)
                durable = True
            except (sqlite3.Error, OSError) as exc:
                self._degrade(exc)
                kept, overflow = kept + overflow, []
        if not durable:
            for entry in kept:
                entry.row = 0
            with self._lock:  # applied once the file is back
                self._deletes[:0] = deletes
                self._updates[:0] = updates
                self._asides[:0] = asides
        if overflow:
            self._report_full(len(overflow))
            host.dropped_accepted(overflow, "spool_full",
                                  f"the spool is full ({self._max_bytes} bytes); the event was dropped")
        if unserialisable:
            host.committed(unserialisable, False)
            self._publish(unserialisable, memory_only=True)
        if kept:
            host.committed(kept, durable)
            self._publish(kept, memory_only=not durable)

    # ------------------------------------------------------------------ file handling

    def _open(self) -> None:
        host = self._host
        assert host is not None
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            if self.path is None:
                self.path = self.directory / f"spool-{os.getpid()}-{int(time.time() * 1000)}.db"
            if self._lock_fd is None:
                fd = try_lock(lock_path(self.path))
                if fd is None:
                    raise OSError(f"cannot lock {lock_path(self.path)}")
                self._lock_fd = fd
            conn = connect(self.path, create=True, synchronous=self._synchronous)
            (used, last) = conn.execute(
                f"SELECT coalesce(sum(length(body)), 0) + count(*) * {ROW_OVERHEAD}, coalesce(max(id), 0) FROM events"
            ).fetchone()
        except (sqlite3.Error, OSError) as exc:
            self._degrade(exc)
            return
        self._conn = conn
        self._bytes = int(used)
        self._last_row = max(self._last_row, int(last))
        self._update_full()
        if self._reopen_at > 0:
            logger.warning("the spool at %s is writable again; events are spooled again", self.path)

    def _degrade(self, exc: BaseException) -> None:
        host = self._host
        if host is not None:
            host.spool_error()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._reopen_at = time.monotonic() + self._reopen_interval
        _throttle.log(
            logger, logging.ERROR, "spool-error",
            "the spool in %s failed (%s); delivery continues memory-only and the spool is retried in %.0f s",
            self.directory, exc, self._reopen_interval,
        )

    def _fit(self, entries: list[Entry]) -> tuple[list[Entry], list[Entry], list[Entry]]:
        """Split new entries into those that fit under the cap, those that do not, and unserialisable ones."""
        kept: list[Entry] = []
        overflow: list[Entry] = []
        bad: list[Entry] = []
        room = self._max_bytes - self._bytes
        for entry in entries:
            try:
                size = _size(entry)
            except Exception:  # the exporter rejects it later, with the reason; the spool just skips it
                bad.append(entry)
                continue
            if size <= room:
                room -= size
                kept.append(entry)
            else:
                overflow.append(entry)
        return kept, overflow, bad

    def _write(
        self,
        entries: list[Entry],
        deletes: list[tuple[int, int]],
        updates: list[tuple[int, float, int]],
        asides: list[tuple[str, float, int]],
    ) -> None:
        conn = self._conn
        assert conn is not None
        if not (entries or deletes or updates or asides):
            return
        first = self._last_row + 1
        rows: list[_Values] = []
        for i, entry in enumerate(entries):
            body = entry.event.to_json()
            rows.append((first + i, entry.seq, entry.event.idempotency_key, body, entry.recorded_at, entry.attempts,
                         0.0, PENDING, None, checksum(body, entry.recorded_at)))
        conn.execute("BEGIN IMMEDIATE")
        try:
            if rows:
                _insert(conn, rows)
            if deletes:
                _delete(conn, [row for row, _ in deletes])
            if updates:
                conn.executemany("UPDATE events SET attempts = ?, next_at = ? WHERE id = ? AND state = 0", updates)
            if asides:
                conn.executemany("UPDATE events SET state = 1, reason = ?, next_at = ? WHERE id = ?", asides)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        for i, entry in enumerate(entries):
            entry.row = first + i
        self._last_row += len(entries)
        self._bytes += sum(len(row[3]) + ROW_OVERHEAD for row in rows) - sum(size for _, size in deletes)
        self._update_full()

    def _update_full(self) -> None:
        if self.full:
            self.full = self._bytes > self._max_bytes * 0.9  # hysteresis: no flapping at the edge
        else:
            self.full = self._bytes >= self._max_bytes - ROW_OVERHEAD

    def _report_full(self, count: int) -> None:
        self.full = True
        _full_throttle.log(
            logger, logging.ERROR, "spool-full",
            "the spool in %s is full (%d bytes): new events are dropped (%d now) until it drains",
            self.directory, self._max_bytes, count,
        )

    # ------------------------------------------------------------------ memory part

    def _publish(self, entries: list[Entry], *, memory_only: bool) -> None:
        """Hand committed entries to the sender; beyond the memory limit they stay on disk only."""
        with self._lock:
            if not memory_only and (
                self._cold or len(self._ready) + len(self._waiting) + self._in_flight + len(entries) > self._mem_limit
            ):
                if not self._cold:
                    self._cold = True
                    self._cold_after = entries[0].row - 1
                self._cold_count += len(entries)
                return
            self._ready.extend(entries)
        host = self._host
        if host is not None:
            host.wake_sender()

    def _read_back(self) -> None:
        """Load disk-only rows into memory as room frees up, in write order; corrupt rows are counted lost."""
        with self._lock:
            if not self._cold:
                return
            room = self._mem_limit - (len(self._ready) + len(self._waiting) + self._in_flight)
            after = self._cold_after
        if room <= 0:
            return
        conn = self._conn
        host = self._host
        assert conn is not None and host is not None
        limit = min(room, _LOAD_CHUNK)
        try:
            rows = read_rows(conn, after=after, limit=limit)
        except (sqlite3.Error, OSError) as exc:
            self._degrade(exc)
            return
        entries, bad = self._entries_from(rows, keep_seq=True)
        if bad:
            host.lost([row.seq for row in bad], "corrupt_spool")
            self._delete_rows([row.id for row in bad])
        with self._lock:
            self._ready.extend(entry for entry in entries if entry.next_at <= time.monotonic())
            for entry in entries:
                if entry.next_at > time.monotonic():
                    heapq.heappush(self._waiting, (entry.next_at, entry.seq, entry))
            self._cold_count -= len(rows)
            if rows:
                self._cold_after = rows[-1].id
            if len(rows) < limit:
                vanished = self._cold_count
                self._cold = False
                self._cold_count = 0
            else:
                vanished = 0
        if vanished:  # rows the spool counted but the file no longer has (removed behind our back)
            logger.error("%d spooled event(s) are missing from %s", vanished, self.path)
        if entries:
            host.wake_sender()

    def _entries_from(self, rows: list[Row], *, keep_seq: bool) -> tuple[list[Entry], list[Row]]:
        host = self._host
        assert host is not None
        now, wall = time.monotonic(), host.clock()
        entries: list[Entry] = []
        bad: list[Row] = []
        for row in rows:
            event = _event_of(row)
            if event is None:
                bad.append(row)
                continue
            entry = Entry(row.seq if keep_seq else 0, event, row.recorded_at)
            entry.attempts = row.attempts
            entry.next_at = now + max(0.0, row.next_at - wall) if row.next_at else 0.0
            entry.row = row.id
            entry.spooled = True
            entries.append(entry)
        return entries, bad

    def _delete_rows(self, ids: list[int]) -> None:
        conn = self._conn
        if conn is None or not ids:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            _delete(conn, ids)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._degrade(exc)

    # ------------------------------------------------------------------ adoption

    def _adopt(self) -> None:
        """Take over files whose owner is gone, a chunk per turn; quarantine and salvage damaged ones."""
        if self._adopting is None:
            self._next_adopt = time.monotonic() + self._adopt_interval
            self._purge_set_aside()
            for path in list_spool_files(self.directory):
                if path == self.path:
                    continue
                fd = try_lock(lock_path(path))
                if fd is None:
                    continue  # a live process owns it
                try:
                    src = connect(path, create=False)
                    (check,) = src.execute("PRAGMA quick_check").fetchone()
                    if check != "ok":
                        src.close()
                        raise sqlite3.DatabaseError(str(check))
                except sqlite3.Error as exc:
                    self._salvage(path, fd, exc)
                    continue
                except OSError:
                    os.close(fd)
                    continue
                self._adopting = (path, fd, src)
                break
        if self._adopting is not None:
            for _ in range(8):  # a few chunks per turn; the next turn continues
                if not self._adopt_chunk():
                    break

    def _adopt_chunk(self) -> bool:
        """Move one chunk of the adopted file into ours; False when there is nothing more to do this turn."""
        assert self._adopting is not None
        path, _, src = self._adopting
        try:
            rows = read_rows(src, after=0, limit=_ADOPT_CHUNK, state=None)
        except sqlite3.Error as exc:
            logger.error("cannot read the spool file %s (%s); it is quarantined", path, exc)
            self._release_adoption()
            self._salvage_path(path)
            return False
        if not rows:
            self._release_adoption(remove=True)
            return False
        if self._bytes + sum(len(row.body) + ROW_OVERHEAD for row in rows) > self._max_bytes:
            self._release_adoption()  # no room now; this file (or another process) gets it later
            return False
        self._import(rows)
        if self._conn is None:  # our file failed: leave theirs untouched for later
            self._release_adoption()
            return False
        try:
            src.execute("BEGIN IMMEDIATE")
            src.execute("DELETE FROM events WHERE id <= ?", (rows[-1].id,))
            src.execute("COMMIT")
        except sqlite3.Error as exc:
            # Already copied: a later adopter may resend these (same keys and bytes, so never double counted).
            with contextlib.suppress(sqlite3.Error):
                src.execute("ROLLBACK")
            logger.error("cannot update the adopted spool file %s (%s)", path, exc)
            self._release_adoption(remove=True)
            return False
        return self._conn is not None

    def _import(self, rows: list[Row]) -> None:
        """Copy rows from another file into ours, counting them as recovered (pending) or corrupt."""
        host = self._host
        conn = self._conn
        assert host is not None and conn is not None
        pending = [row for row in rows if row.state == PENDING]
        kept_aside = [row for row in rows if row.state != PENDING and row.intact]
        entries, bad = self._entries_from(pending, keep_seq=False)
        first = host.reserve_seqs(len(entries)) if entries else 0
        values: list[_Values] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            next_id = self._last_row + 1
            for i, entry in enumerate(entries):
                entry.seq = first + i
                entry.row = next_id
                body = entry.event.to_json()
                values.append((next_id, entry.seq, entry.event.idempotency_key, body, entry.recorded_at,
                               entry.attempts, 0.0, PENDING, None, checksum(body, entry.recorded_at)))
                next_id += 1
            for row in kept_aside:
                values.append((next_id, 0, row.key, row.body, row.recorded_at, row.attempts, row.next_at,
                               SET_ASIDE, row.reason, row.crc))
                next_id += 1
            _insert(conn, values)
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            for entry in entries:
                entry.row = 0
            self._degrade(exc)  # nothing was counted; the rows stay in their file for a later adoption
            return
        self._last_row = next_id - 1
        self._bytes += sum(len(value[3]) + ROW_OVERHEAD for value in values)
        self._update_full()
        if bad:
            logger.error("%d corrupt record(s) in an adopted spool file were dropped", len(bad))
        host.recovered(entries, {"corrupt_spool": len(bad)} if bad else {})
        if entries:
            self._publish(entries, memory_only=False)

    def _release_adoption(self, *, remove: bool = False) -> None:
        adopting, self._adopting = self._adopting, None
        if adopting is None:
            return
        path, fd, src = adopting
        with contextlib.suppress(sqlite3.Error):
            src.close()
        if remove:
            remove_spool_file(path)  # the lock file goes while we still hold it: late lockers see a new inode
        with contextlib.suppress(OSError):
            os.close(fd)

    def _salvage(self, path: Path, fd: int, exc: BaseException) -> None:
        logger.error("the spool file %s is damaged (%s); it is quarantined and its readable records recovered",
                     path, exc)
        try:
            self._salvage_path(path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path(path))
            os.close(fd)

    def _salvage_path(self, path: Path) -> None:
        try:
            target = quarantine(path)
        except OSError:
            return
        batch: list[Row] = []
        for row in salvage(target):
            batch.append(row)
            if len(batch) >= _ADOPT_CHUNK:
                self._import(batch)
                batch = []
                if self._conn is None:
                    return
        if batch:
            self._import(batch)

    def _purge_set_aside(self) -> None:
        conn = self._conn
        host = self._host
        if conn is None or host is None:
            return
        try:
            cursor = conn.execute("DELETE FROM events WHERE state = ? AND next_at < ?",
                                  (SET_ASIDE, host.clock() - _SET_ASIDE_TTL))
            if cursor.rowcount:
                (used,) = conn.execute(
                    f"SELECT coalesce(sum(length(body)), 0) + count(*) * {ROW_OVERHEAD} FROM events").fetchone()
                self._bytes = int(used)
                self._update_full()
        except sqlite3.Error as exc:
            self._degrade(exc)


_Values = tuple[int, int, str, bytes, float, int, float, int, "str | None", int]
_INSERT_ROWS = 400  # rows per INSERT statement (10 variables each; SQLite allows 32 766)
_DELETE_IDS = 900


def _insert(conn: sqlite3.Connection, values: list[_Values]) -> None:
    """Insert rows with few statements: the sqlite3 module releases and re-takes the GIL around every statement
    step, and under a busy recording thread each re-take can wait a whole switch interval."""
    for start in range(0, len(values), _INSERT_ROWS):
        chunk = values[start:start + _INSERT_ROWS]
        marks = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
        conn.execute(
            "INSERT INTO events (id, seq, key, body, recorded_at, attempts, next_at, state, reason, crc) "
            f"VALUES {marks}",
            [value for row in chunk for value in row],
        )


def _delete(conn: sqlite3.Connection, ids: list[int]) -> None:
    for start in range(0, len(ids), _DELETE_IDS):
        chunk = ids[start:start + _DELETE_IDS]
        conn.execute(f"DELETE FROM events WHERE id IN ({', '.join(['?'] * len(chunk))})", chunk)


def _size(entry: Entry) -> int:
    return len(entry.event.to_json()) + ROW_OVERHEAD


def _event_of(row: Row) -> CostEvent | None:
    """The event a row holds, or None when the row is damaged."""
    if not row.intact:
        return None
    try:
        event = CostEvent.from_json(row.body)
    except Exception:
        return None
    return event if event.idempotency_key == row.key else None
