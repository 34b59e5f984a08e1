"""Events set aside: rejected by the server, or past the dedup horizon. Kept for reconciliation, never resent."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone

from .._events import CostEvent, format_timestamp
from ._log import LogThrottle, internal_logger

__all__ = ["DeadLetterBox", "SetAside"]

_throttle = LogThrottle()


@dataclass(frozen=True, slots=True)
class SetAside:
    """One event the pipeline gave up on, and why."""

    event: CostEvent
    reason: str
    status: int | None
    attempts: int
    at: float  # wall-clock seconds (the pipeline's clock)


class DeadLetterBox:
    """The most recent set-aside events in memory, and optionally every one of them appended to a JSONL file.

    Each file line is ``{"setAsideAt", "reason", "status", "attempts", "event"}`` where ``event`` is the exact
    request body, so a line can be replayed or reconciled byte for byte.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, keep: int = 10_000) -> None:
        self.path = os.fspath(path) if path is not None else None
        self._recent: deque[SetAside] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, item: SetAside) -> None:
        """Record ``item``; a file error is logged (throttled), never raised."""
        with self._lock:
            self._recent.append(item)
        if self.path is None:
            return
        try:
            body = item.event.to_json().decode("ascii")
        except Exception:  # an unserialisable event is still recorded, by key
            body = json.dumps({"idempotencyKey": item.event.idempotency_key})
        stamp = _epoch_to_rfc3339(item.at)
        head = json.dumps(
            {"setAsideAt": stamp, "reason": item.reason, "status": item.status, "attempts": item.attempts},
            separators=(",", ":"),
        )
        line = head[:-1] + ',"event":' + body + "}\n"
        try:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            with open(self.path, "a", encoding="ascii") as fh:
                fh.write(line)
        except OSError as exc:
            _throttle.log(
                internal_logger, logging.ERROR, "dead-letter-write", "cannot append to the dead-letter file %s: %s",
                self.path, exc,
            )

    def items(self) -> list[SetAside]:
        """A snapshot of the most recent set-aside events, oldest first."""
        with self._lock:
            return list(self._recent)

    def clear(self) -> None:
        """Forget the in-memory list (the file is left as is)."""
        with self._lock:
            self._recent.clear()


def _epoch_to_rfc3339(seconds: float) -> str:
    """RFC 3339 UTC for an epoch time (the current time for clocks that are not epoch-based)."""
    try:
        moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        moment = datetime.fromtimestamp(time.time(), tz=timezone.utc)
    return format_timestamp(moment)
