"""Exporters for development and tests: print, append to a file, or keep in memory. All acknowledge everything."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from typing import IO

from .._events import CostEvent, decimal_to_json, format_timestamp
from ._base import ACK, Outcome

__all__ = ["ConsoleExporter", "InMemoryExporter", "JsonlExporter"]


def _describe(event: CostEvent) -> str:
    data = event.data
    try:
        amount = decimal_to_json(event.amount)
    except Exception:
        amount = repr(data.get("amount"))
    where = "/".join(str(data[name]) for name in ("provider", "model", "operation") if data.get(name) is not None)
    customer = event.subject or (f"external:{event.external_subject}" if event.external_subject else "-")
    parts = [format_timestamp(event.timestamp), customer, event.type, f"{amount} {data.get('currency', '')}".rstrip()]
    if where:
        parts.append(where)
    parts.append(f"key={event.idempotency_key}")
    return "  ".join(parts)


class ConsoleExporter:
    """Prints one readable line per event (time, customer, type, amount and currency, provider/model/operation,
    key). For development: nothing is sent anywhere.

    Args:
        stream: where to write; default ``sys.stderr`` at the time of each export.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def export(self, events: Sequence[CostEvent], timeout: float) -> Sequence[Outcome]:
        """Print ``events``; acknowledge them all."""
        text = "".join(_describe(event) + "\n" for event in events)
        stream = self._stream if self._stream is not None else sys.stderr
        with self._lock:
            stream.write(text)
            stream.flush()
        return [ACK] * len(events)

    def shutdown(self) -> None:
        """Nothing to release (the stream belongs to the caller)."""


class JsonlExporter:
    """Appends each event's exact request body (``CostEvent.to_json()``) as one line of a file, flushed per batch.

    Args:
        path: the file to append to (created when missing).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()

    def export(self, events: Sequence[CostEvent], timeout: float) -> Sequence[Outcome]:
        """Append ``events``; acknowledge them all. A file error raises (the pipeline retries the batch)."""
        data = b"".join(event.to_json() + b"\n" for event in events)
        with self._lock:
            if self._file is None:
                self._file = open(self.path, "ab")  # noqa: SIM115 - kept open across batches
            self._file.write(data)
            self._file.flush()
        return [ACK] * len(events)

    def shutdown(self) -> None:
        """Close the file."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def after_fork_in_child(self) -> None:
        """Reopen in the child instead of sharing the parent's file object."""
        self._file = None
        self._lock = threading.Lock()


class InMemoryExporter:
    """Keeps delivered events in :attr:`events` (tests, demos)."""

    def __init__(self) -> None:
        self.events: list[CostEvent] = []
        self._lock = threading.Lock()

    def export(self, events: Sequence[CostEvent], timeout: float) -> Sequence[Outcome]:
        """Keep ``events``; acknowledge them all."""
        with self._lock:
            self.events.extend(events)
        return [ACK] * len(events)

    def clear(self) -> None:
        """Forget the events received so far."""
        with self._lock:
            self.events.clear()

    def shutdown(self) -> None:
        """Nothing to release."""

    def after_fork_in_child(self) -> None:
        """A forked child starts with no events and a fresh lock."""
        self.events = []
        self._lock = threading.Lock()
