"""The spool's on-disk format: one SQLite file per process, its lock, and the operations on files left behind.

Layout under a spool root: ``<root>/<account>/spool-<pid>-<start_ms>.db`` with a sidecar
``spool-<pid>-<start_ms>.lock`` that the owning process holds with an exclusive ``flock`` for its lifetime.
``<account>`` is a hash of (API key, base URL), so two accounts never share a directory. A file whose lock can
be taken belongs to nobody (its process died or closed) and may be adopted by exactly one live process.

Each row keeps the exact request body plus a CRC32 over the body and the recorded time, so a replay sends the
very same bytes and a damaged record is detected instead of sent with a wrong amount.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PENDING",
    "RETRY_HORIZON",
    "ROW_OVERHEAD",
    "SET_ASIDE",
    "FileSummary",
    "Row",
    "account_directory",
    "checksum",
    "connect",
    "file_summary",
    "list_spool_files",
    "lock_path",
    "quarantine",
    "read_rows",
    "remove_spool_file",
    "salvage",
    "try_lock",
]

PENDING = 0
SET_ASIDE = 1
RETRY_HORIZON = 23 * 3600.0  # never resend an unacknowledged event recorded longer ago (24 h dedup window - 1 h)
ROW_OVERHEAD = 64  # bytes counted per row on top of its body (key, numbers, b-tree cell); keeps the cap honest
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    body BLOB NOT NULL,
    recorded_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    state INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    crc INTEGER NOT NULL
)
"""
_COLUMNS = "id, seq, key, body, recorded_at, attempts, next_at, state, reason, crc"


@dataclass(frozen=True, slots=True)
class Row:
    """One spooled event. ``id`` is the file's write order; ``seq`` the owning pipeline's sequence number.
    ``next_at`` is wall-clock time: the retry time when pending, the set-aside time when set aside."""

    id: int
    seq: int
    key: str
    body: bytes
    recorded_at: float
    attempts: int
    next_at: float
    state: int
    reason: str | None
    crc: int

    @property
    def intact(self) -> bool:
        """The body and recorded time are what was written."""
        return checksum(self.body, self.recorded_at) == self.crc


def checksum(body: bytes, recorded_at: float) -> int:
    """CRC32 over the recorded time and the body."""
    return zlib.crc32(body, zlib.crc32(struct.pack("<d", recorded_at)))


def account_directory(root: str | os.PathLike[str], api_key: str, base_url: str) -> Path:
    """The sub-directory of ``root`` for one (API key, base URL) pair."""
    digest = hashlib.sha256(f"{api_key}\n{base_url}".encode()).hexdigest()[:16]
    return Path(root) / digest


def lock_path(db_path: str | os.PathLike[str]) -> Path:
    """The sidecar lock of a spool file."""
    path = Path(db_path)
    return path.with_suffix(".lock")


def connect(path: str | os.PathLike[str], *, create: bool, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open a spool file in WAL mode with the schema in place.

    Raises:
        sqlite3.Error, OSError: the file cannot be opened or is not a database.
    """
    mode = "rwc" if create else "rw"
    conn = sqlite3.connect(
        f"file:{os.fspath(path)}?mode={mode}", uri=True, timeout=5.0, check_same_thread=False,
        isolation_level=None,  # explicit BEGIN/COMMIT: one transaction per group commit
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous.upper() == 'FULL' else 'NORMAL'}")
        if create:
            conn.execute(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def read_rows(conn: sqlite3.Connection, *, after: int, limit: int, state: int | None = PENDING) -> list[Row]:
    """Rows with ``id > after`` in write order (``state=None``: all states)."""
    if state is None:
        cursor = conn.execute(f"SELECT {_COLUMNS} FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
    else:
        cursor = conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE id > ? AND state = ? ORDER BY id LIMIT ?", (after, state, limit)
        )
    return [Row(int(r[0]), int(r[1]), str(r[2]), bytes(r[3]), float(r[4]), int(r[5]), float(r[6]), int(r[7]), r[8],
                int(r[9])) for r in cursor.fetchall()]


def try_lock(path: str | os.PathLike[str]) -> int | None:
    """Take the exclusive lock at ``path`` without waiting; return the open descriptor, or None if it is held.

    The descriptor is checked to still name the file at ``path`` (another process may have finished adopting and
    removed it between our open and our lock).
    """
    try:
        fd = os.open(os.fspath(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(os.fspath(path)).st_ino:
            raise OSError("lock file replaced")
    except OSError:
        os.close(fd)
        return None
    return fd


def list_spool_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Spool files in one account directory, oldest name first (quarantined ``.corrupt`` files excluded)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [Path(directory) / name for name in names if name.startswith("spool-") and name.endswith(".db")]


def remove_spool_file(path: str | os.PathLike[str]) -> None:
    """Delete a spool file with its WAL, shared-memory index and lock (missing parts are fine)."""
    base = os.fspath(path)
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(base + suffix)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock_path(path))


def quarantine(path: str | os.PathLike[str]) -> Path:
    """Rename a damaged spool file (and its WAL) to ``.corrupt`` so it is kept for inspection, never replayed."""
    base = os.fspath(path)
    target = Path(base[: -len(".db")] + f".{int(time.time())}.corrupt")
    os.replace(base, target)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(base + suffix, os.fspath(target) + suffix)
    return target


def salvage(path: str | os.PathLike[str]) -> Iterator[Row]:
    """Every row still readable in a damaged file, in order; unreadable stretches are skipped.

    The file is opened read-only and ``immutable`` so nothing is written to it.
    """
    try:
        conn = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro&immutable=1", uri=True, check_same_thread=False)
    except sqlite3.Error:
        return
    try:
        after, skip = 0, 1
        while True:
            try:
                rows = read_rows(conn, after=after, limit=500, state=None)
            except sqlite3.Error:
                if skip > 1 << 40:
                    return
                after += skip  # jump over the unreadable page(s) and try again
                skip *= 8
                continue
            if not rows:
                return
            skip = 1
            yield from rows
            after = rows[-1].id
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class FileSummary:
    """What one spool file holds (for ``paygentic-costs spool``)."""

    path: Path
    pending: int
    set_aside: int
    oldest_recorded_at: float | None
    bytes: int
    owned: bool  # a live process holds its lock


def file_summary(path: Path) -> FileSummary:
    """Counts for one spool file, read without disturbing its owner.

    Raises:
        sqlite3.Error: the file cannot be read.
    """
    fd = try_lock(lock_path(path))
    owned = fd is None
    if fd is not None:
        os.close(fd)
    conn = connect(path, create=False)
    try:
        pending, oldest = conn.execute(
            "SELECT count(*), min(recorded_at) FROM events WHERE state = ?", (PENDING,)
        ).fetchone()
        (aside,) = conn.execute("SELECT count(*) FROM events WHERE state = ?", (SET_ASIDE,)).fetchone()
    finally:
        conn.close()
    size = sum(os.path.getsize(os.fspath(path) + s) for s in ("", "-wal") if os.path.exists(os.fspath(path) + s))
    return FileSummary(path, int(pending), int(aside), None if oldest is None else float(oldest), size, owned)
