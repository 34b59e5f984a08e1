"""Loggers for delivery, with a per-message throttle so a long outage cannot flood the host's logs."""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["LogThrottle", "internal_logger", "logger"]

logger = logging.getLogger("paygentic_costs")
internal_logger = logging.getLogger("paygentic_costs.internal")


class LogThrottle:
    """Lets one line per key through per ``window`` seconds (the OpenTelemetry ``DuplicateFilter`` idea).

    Kept as a helper rather than a :class:`logging.Filter` on the shared loggers, so it only throttles what
    delivery logs, never other parts of the library.
    """

    def __init__(self, window: float = 20.0) -> None:
        self._window = window
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> int | None:
        """Return ``None`` to suppress, else how many lines with this key were suppressed since the last one."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._window:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last[key] = now
            if len(self._last) > 1024:  # keys are few in practice; never let them grow without bound
                self._last = {key: now}
            return self._suppressed.pop(key, 0)

    def log(
        self,
        target: logging.Logger,
        level: int,
        key: str,
        msg: str,
        *args: object,
        exc_info: BaseException | None = None,
    ) -> None:
        """Log ``msg % args`` unless a line with the same ``key`` went out less than ``window`` seconds ago."""
        suppressed = self.allow(key)
        if suppressed is None:
            return
        if suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        target.log(level, msg, *args, exc_info=exc_info)

    def reset(self) -> None:
        """Forget history (a forked child starts with a clean slate)."""
        with self._lock:
            self._last.clear()
            self._suppressed.clear()
