"""``paygentic-costs spool``: what waits in the spool directory, re-queue set-aside events, export them.

- ``spool`` (or ``spool show``): per file, pending and set-aside counts, the oldest pending event's age, size and
  whether a live process owns it;
- ``spool retry``: moves set-aside events still inside the dedup horizon (recorded less than 23 h ago) into a new
  spool file, which the next live process adopts and sends. Events past the horizon are never re-queued: the server
  could no longer recognise a resend, so sending one might double-count it;
- ``spool export [PATH]``: pending and set-aside events as JSONL (to PATH, or stdout), each line with the exact
  request body under ``event``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from ..export._spool_file import (
    PENDING,
    RETRY_HORIZON,
    SET_ASIDE,
    connect,
    file_summary,
    list_spool_files,
    lock_path,
    read_rows,
    try_lock,
)

__all__ = ["run_spool"]


def _root(args: argparse.Namespace) -> Path | None:
    if args.spool_dir:
        return Path(args.spool_dir)
    from .._config import resolve_settings

    settings = resolve_settings(
        api_key=None, base_url=None, source=None, rates=None, exporter=None, max_queue_size=10_000,
        max_in_flight=8, shutdown_timeout=5.0, spool_dir=None, durability="batch", strict=None, propagate=None,
        state_dir=None, on_error=None,
    )
    return settings.spool_dir


def _files(root: Path) -> Iterator[Path]:
    """Spool files in ``root`` itself and in its per-account sub-directories."""
    yield from list_spool_files(root)
    with contextlib.suppress(OSError):
        for child in sorted(root.iterdir()):
            if child.is_dir():
                yield from list_spool_files(child)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _show(root: Path, out: TextIO) -> int:
    now = time.time()
    total_pending = total_aside = 0
    files = list(_files(root))
    print(f"spool directory: {root}", file=out)
    for path in files:
        try:
            summary = file_summary(path)
        except (sqlite3.Error, OSError) as exc:
            print(f"  {path.relative_to(root)}: unreadable ({exc})", file=out)
            continue
        total_pending += summary.pending
        total_aside += summary.set_aside
        oldest = "-" if summary.oldest_recorded_at is None else _age(max(0.0, now - summary.oldest_recorded_at))
        owner = "owned by a live process" if summary.owned else "no live owner (adopted by the next process)"
        print(f"  {path.relative_to(root)}: {summary.pending} pending, {summary.set_aside} set aside, "
              f"oldest pending {oldest}, {summary.bytes} bytes, {owner}", file=out)
    if not files:
        print("  no spool files", file=out)
    print(f"total: {total_pending} pending, {total_aside} set aside in {len(files)} file(s)", file=out)
    return 0


def _retry(root: Path, out: TextIO) -> int:
    now = time.time()
    moved = expired = 0
    for path in _files(root):
        try:
            conn = connect(path, create=False)
        except (sqlite3.Error, OSError) as exc:
            print(f"  {path.name}: unreadable ({exc})", file=out)
            continue
        try:
            rows = read_rows(conn, after=0, limit=1 << 62, state=SET_ASIDE)
            inside = [row for row in rows if row.intact and now < row.recorded_at + RETRY_HORIZON]
            expired += len(rows) - len(inside)
            if not inside:
                continue
            target = path.parent / f"spool-{os.getpid()}-{int(now * 1000)}-retry.db"
            fd = try_lock(lock_path(target))  # held while writing, so no process adopts a half-written file
            if fd is None:
                continue
            try:
                dest = connect(target, create=True)
                try:
                    dest.execute("BEGIN IMMEDIATE")
                    dest.executemany(
                        "INSERT INTO events (seq, key, body, recorded_at, attempts, next_at, state, crc) "
                        "VALUES (0, ?, ?, ?, 0, 0, ?, ?)",
                        [(row.key, row.body, row.recorded_at, PENDING, row.crc) for row in inside],
                    )
                    dest.execute("COMMIT")
                finally:
                    dest.close()
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("DELETE FROM events WHERE id = ?", [(row.id,) for row in inside])
                conn.execute("COMMIT")
            finally:
                os.close(fd)
            moved += len(inside)
        finally:
            conn.close()
    print(f"re-queued {moved} set-aside event(s); {expired} past the dedup horizon (23 h) stay set aside", file=out)
    return 0


def _export(root: Path, target: str | None, out: TextIO) -> int:
    count = 0
    sink: TextIO = out if target in (None, "-") else open(str(target), "w", encoding="ascii")  # noqa: SIM115
    try:
        for path in _files(root):
            try:
                conn = connect(path, create=False)
            except (sqlite3.Error, OSError):
                continue
            try:
                for row in read_rows(conn, after=0, limit=1 << 62, state=None):
                    head = json.dumps({
                        "file": str(path), "state": "pending" if row.state == PENDING else "set_aside",
                        "reason": row.reason, "recordedAt": row.recorded_at, "attempts": row.attempts,
                        "intact": row.intact,
                    }, separators=(",", ":"))
                    sink.write(head[:-1] + ',"event":' + row.body.decode("ascii", "replace") + "}\n")
                    count += 1
            finally:
                conn.close()
    finally:
        if sink is not out:
            sink.close()
    if sink is not out:
        print(f"exported {count} event(s) to {target}", file=out)
    return 0


def run_spool(args: argparse.Namespace) -> int:
    """Run ``paygentic-costs spool [show|retry|export [PATH]]``."""
    root = _root(args)
    out = sys.stdout
    if root is None:
        print("the spool is off (spool_dir / PAYGENTIC_COSTS_SPOOL_DIR, or a serverless environment)", file=out)
        return 0
    action = args.action or "show"
    if action == "retry":
        return _retry(root, out)
    if action == "export":
        return _export(root, args.target, out)
    return _show(root, out)
