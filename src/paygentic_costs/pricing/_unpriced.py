"""``UnpricedStore``: usage that no rate could price, kept in a local JSONL file until it can be re-priced.

The hot path only calls ``hold`` (a list append under a lock). ``persist`` (from a background thread or at
shutdown) appends the pending items to the file, one JSON object per line. ``take`` removes items atomically by
rewriting the file to a temporary sibling and ``os.replace``-ing it over the original.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = ["UnpricedStore"]


def _json_default(value: object) -> object:
    # Money stays exact: Decimals are written as strings, never floats.
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)


class UnpricedStore:
    """An append-only JSONL file of unpriced usage, plus the items held in memory but not yet written.

    Items are plain JSON objects whose shape the caller chooses; ``count_by_model`` reads their ``provider`` and
    ``model`` keys when present. Safe to share between threads of one process.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Remember the file; it (and its parent directories) is created on the first ``persist``.

        Args:
            path: The JSONL file.
        """
        self._path = Path(path)
        self._pending: list[dict[str, Any]] = []
        self._pending_lock = threading.Lock()
        self._file_lock = threading.Lock()

    @property
    def path(self) -> Path:
        """The JSONL file."""
        return self._path

    def hold(self, item: Mapping[str, Any]) -> None:
        """Keep ``item`` in memory until the next ``persist``. Cheap: no I/O, no serialisation."""
        copied = dict(item)
        with self._pending_lock:
            self._pending.append(copied)

    @property
    def pending(self) -> int:
        """How many held items have not been written yet."""
        return len(self._pending)

    def persist(self) -> int:
        """Append every pending item to the file (creating it and its directories if needed).

        Returns:
            How many items were written.

        Raises:
            OSError: If the file cannot be written; the items stay pending for the next attempt.
        """
        with self._file_lock:
            with self._pending_lock:
                batch, self._pending = self._pending, []
            if not batch:
                return 0
            try:
                lines = "".join(json.dumps(item, default=_json_default, separators=(",", ":")) + "\n" for item in batch)
                self._path.parent.mkdir(parents=True, exist_ok=True)
                if not self._ends_with_newline():
                    lines = "\n" + lines  # a torn last line must not swallow the first new item
                with open(self._path, "a", encoding="utf-8") as f:
                    f.write(lines)
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:
                with self._pending_lock:
                    self._pending[:0] = batch
                raise
            return len(batch)

    def load(self) -> list[dict[str, Any]]:
        """Every item: those in the file (in order), then those still pending. Unreadable lines are skipped."""
        with self._file_lock:
            items = [item for _, item in self._read()]
        with self._pending_lock:
            items.extend(dict(item) for item in self._pending)
        return items

    def take(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Remove and return every item for which ``predicate`` is true (pending items are persisted first).

        The file is rewritten to a temporary file in the same directory and moved over the original with
        ``os.replace``, so a crash leaves either the old or the new file, never a mix. Lines that are not valid JSON
        objects are kept as they are.
        """
        self.persist()
        with self._file_lock:
            taken: list[dict[str, Any]] = []
            kept: list[str] = []
            for line, item in self._read(keep_invalid=True):
                if item is not None and predicate(item):
                    taken.append(item)
                else:
                    kept.append(line)
            if taken:
                self._rewrite(kept)
            return taken

    def count_by_model(self) -> dict[str, int]:
        """Item counts keyed by ``"provider:model"`` (or ``model``, or ``"unknown"`` when the item names none)."""
        counts: dict[str, int] = {}
        for item in self.load():
            model = item.get("model")
            provider = item.get("provider")
            if model is None:
                key = "unknown"
            elif provider is None:
                key = str(model)
            else:
                key = f"{provider}:{model}"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def _ends_with_newline(self) -> bool:
        try:
            with open(self._path, "rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() == 0:
                    return True
                f.seek(-1, os.SEEK_END)
                return f.read(1) == b"\n"
        except FileNotFoundError:
            return True

    def _read(self, *, keep_invalid: bool = False) -> list[tuple[str, Any]]:
        try:
            with open(self._path, encoding="utf-8") as f:
                raw_lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        result: list[tuple[str, Any]] = []
        for line in raw_lines:
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                item = None
            if not isinstance(item, dict):
                # A torn last line after a crash, or foreign content: never lose it, never return it.
                if keep_invalid:
                    result.append((line, None))
                continue
            result.append((line, item))
        return result

    def _rewrite(self, lines: list[str]) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self._path.name + ".", suffix=".tmp", dir=self._path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in lines))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
