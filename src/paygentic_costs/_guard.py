"""Internal-error guard: instrumentation problems are logged once and swallowed, never raised into user code."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["guard", "internal_logger", "log_once", "public_logger", "set_error_sink"]

public_logger = logging.getLogger("paygentic_costs")
internal_logger = logging.getLogger("paygentic_costs.internal")

_sink: Callable[[BaseException], None] | None = None
_seen: dict[str, float] = {}
_seen_lock = threading.Lock()
_REPEAT_AFTER_S = 20.0  # one line per error class per 20 s, like OTel's DuplicateFilter


def set_error_sink(sink: Callable[[BaseException], None] | None) -> None:
    """Also hand every swallowed internal error to ``sink`` (the test suite turns them into failures)."""
    global _sink
    _sink = sink


def get_error_sink() -> Callable[[BaseException], None] | None:
    """The current error sink (see :func:`set_error_sink`)."""
    return _sink


def _should_log(key: str) -> bool:
    now = time.monotonic()
    with _seen_lock:
        last = _seen.get(key)
        if last is not None and now - last < _REPEAT_AFTER_S:
            return False
        _seen[key] = now
        if len(_seen) > 1000:  # bounded: a storm of distinct messages must not grow memory
            _seen.clear()
        return True


def log_once(logger: logging.Logger, level: int, key: str, message: str, *args: object) -> None:
    """Log ``message`` unless the same ``key`` was logged in the last 20 seconds."""
    if _should_log(key):
        logger.log(level, message, *args)


def report_internal_error(exc: BaseException, where: str) -> None:
    """Log a swallowed internal error (deduplicated) and pass it to the error sink."""
    try:
        if _should_log(f"{where}:{type(exc).__name__}"):
            internal_logger.warning("internal error in %s: %s", where, type(exc).__name__, exc_info=exc)
        if _sink is not None:
            _sink(exc)
    except Exception:  # logging must never be the thing that breaks the host
        pass


class guard:  # lower-case: used like the function it replaced, ``with guard("openai.finish"):``
    """Run a block of instrumentation logic; any exception is reported and swallowed.

    A plain class rather than ``@contextmanager``: it sits on every instrumented call, and a generator-based
    context manager costs several times more to enter and leave.
    """

    __slots__ = ("where",)

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> bool:
        if ev is not None and isinstance(ev, Exception):
            report_internal_error(ev, self.where)
            return True
        return False

    def report(self, error: Exception) -> None:
        """Report ``error`` as this block would: for ``try``/``except Exception`` on the hottest paths, where even
        entering a context manager costs a call."""
        report_internal_error(error, self.where)
