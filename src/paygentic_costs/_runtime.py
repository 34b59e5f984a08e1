"""The process-wide runtime: settings, recorder, delivery pipeline, unpriced store. Built by ``configure()``.

Nothing happens at import. The first recorded cost without a ``configure()`` call configures from the environment,
so decorators and context managers are safe to use before (or without) ``configure()``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._config import Settings, resolve_settings
from ._guard import public_logger, report_internal_error
from ._recorder import Recorder

if TYPE_CHECKING:
    from .export import DeliveryPipeline, Exporter
    from .export._store import Store
    from .pricing import UnpricedStore

__all__ = ["Runtime", "configure", "get_runtime", "reset"]


@dataclass
class Runtime:
    """Everything ``configure()`` built, torn down together by ``shutdown()``."""

    settings: Settings
    pipeline: DeliveryPipeline
    recorder: Recorder
    unpriced: UnpricedStore

    def flush(self, timeout: float) -> bool:
        self._persist_unpriced()
        return self.pipeline.flush(timeout)

    def shutdown(self, timeout: float | None) -> None:
        self._persist_unpriced()
        self.pipeline.shutdown(self.settings.shutdown_timeout if timeout is None else timeout)

    def _persist_unpriced(self) -> None:
        try:
            self.unpriced.persist()
        except Exception as exc:
            report_internal_error(exc, "unpriced.persist")

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = dict(self.pipeline.stats())
        result.update(self.recorder.stats())
        return result


_lock = threading.RLock()
_runtime: Runtime | None = None


def _build_exporter(settings: Settings) -> Exporter:
    from .export import ConsoleExporter, PaygenticExporter

    if settings.exporter is not None:
        return settings.exporter
    if settings.api_key:
        return PaygenticExporter(
            settings.api_key.reveal(), base_url=settings.base_url, max_in_flight=settings.max_in_flight
        )
    public_logger.warning(
        "paygentic_costs: no API key configured (PAYGENTIC_API_KEY), so cost events are printed to stderr instead "
        "of sent. Pass configure(api_key=...) or set PAYGENTIC_API_KEY to send them to Paygentic."
    )
    return ConsoleExporter()


def _build_store(settings: Settings) -> Callable[[], Store]:
    """The spool when it is on, else the memory store.

    The default spool (no ``spool_dir`` configured) only backs real delivery to Paygentic; an explicit
    ``spool_dir`` backs any exporter. Each (API key, base URL) pair gets its own sub-directory.
    """
    from .export._spool import SpoolStore
    from .export._spool_file import account_directory
    from .export._store import MemoryStore

    root = settings.spool_dir
    if root is None or not (settings.spool_explicit or (settings.exporter is None and settings.api_key)):
        return MemoryStore
    directory = account_directory(root, settings.api_key.reveal(), settings.base_url)
    return functools.partial(SpoolStore, directory, max_bytes=settings.spool_max_bytes,
                             synchronous=settings.spool_synchronous)


def configure(**kwargs: Any) -> Runtime:
    """Build (or rebuild) the runtime; the previous one is shut down first. See ``paygentic_costs.configure``."""
    global _runtime
    from .export import DeliveryPipeline
    from .pricing import UnpricedStore

    settings = resolve_settings(**kwargs)  # validate before touching the running pipeline
    with _lock:
        previous = _runtime
        _runtime = None
        if previous is not None:
            previous.shutdown(previous.settings.shutdown_timeout)
        exporter = _build_exporter(settings)
        on_error: Callable[[str, str, str], None] | None = settings.on_error
        pipeline = DeliveryPipeline(
            exporter,
            max_queue_size=settings.max_queue_size,
            max_in_flight=settings.max_in_flight,
            shutdown_timeout=settings.shutdown_timeout,
            on_error=on_error,
            dead_letter_path=settings.state_dir / "dead-letter.jsonl",
            store=_build_store(settings),
            durability=settings.durability,
        )
        unpriced = UnpricedStore(settings.state_dir / "unpriced.jsonl")
        recorder = Recorder(settings, pipeline.submit, unpriced.hold, arm=pipeline.arm_deferred)
        pipeline.set_feeder(recorder)
        _runtime = Runtime(settings, pipeline, recorder, unpriced)
        if settings.propagate:
            from ._propagate import enable_propagation

            enable_propagation()
        return _runtime


def get_runtime() -> Runtime:
    """The current runtime, configuring from the environment on first use."""
    runtime = _runtime
    if runtime is not None:
        return runtime
    with _lock:
        if _runtime is None:
            return configure(
                api_key=None,
                base_url=None,
                source=None,
                rates=None,
                exporter=None,
                max_queue_size=10_000,
                max_in_flight=8,
                shutdown_timeout=5.0,
                spool_dir=None,
                durability="batch",
                strict=None,
                propagate=None,
                state_dir=None,
                on_error=None,
            )
        return _runtime


def current_runtime() -> Runtime | None:
    """The runtime if one was built (no side effects)."""
    return _runtime


def reset(timeout: float = 0.0) -> None:
    """Shut down and forget the runtime (tests, and ``shutdown()``)."""
    global _runtime
    with _lock:
        previous, _runtime = _runtime, None
    if previous is not None:
        previous.shutdown(timeout)
