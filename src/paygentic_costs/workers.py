"""One-line hooks for worker processes that end without running ``atexit``, where queued costs would be lost.

Recorded costs are delivered by a background thread and, at normal interpreter exit, by an ``atexit`` flush. Some
worker models end their processes with ``os._exit()``, which skips ``atexit``:

- **Celery prefork** children (billiard), including those recycled by ``max_tasks_per_child``::

      import paygentic_costs.workers
      paygentic_costs.workers.connect_celery()           # in the module that creates the Celery app

- **RQ** work-horses (one forked process per job)::

      rq worker --worker-class paygentic_costs.workers.RQWorker

- **multiprocessing** pool workers started with ``fork`` (and any pool ended by ``terminate()``, which is what
  ``with Pool(...)`` does on exit)::

      Pool(initializer=paygentic_costs.workers.init_worker_process)

Gunicorn workers (with or without ``--preload``) and ``spawn`` pools closed with ``close()`` / ``join()`` exit through
``sys.exit`` and need nothing. Serverless handlers use :func:`paygentic_costs.flush_after`.

Importing this module imports no worker framework; each helper imports its framework when called.
"""

from __future__ import annotations

import importlib
import multiprocessing.util
import os
import signal
import threading
from types import FrameType
from typing import Any

from . import _runtime
from ._guard import report_internal_error

__all__ = ["DEFAULT_TASK_FLUSH_TIMEOUT", "RQWorker", "connect_celery", "init_worker_process"]

DEFAULT_TASK_FLUSH_TIMEOUT = 2.0
"""Seconds an optional per-task flush may take (bounded, so a slow API never holds a worker for long)."""

# Run before multiprocessing's own finalizers (queues, managers): ours may still need the network.
_FINALIZER_PRIORITY = 100


def _shutdown(timeout: float | None = None) -> None:
    """``paygentic_costs.shutdown()`` that never raises (it runs inside framework shutdown paths)."""
    try:
        runtime = _runtime.current_runtime()
        if runtime is not None:
            _runtime.reset(runtime.settings.shutdown_timeout if timeout is None else timeout)
    except Exception as exc:
        report_internal_error(exc, "workers.shutdown")


def _flush(timeout: float) -> None:
    try:
        runtime = _runtime.current_runtime()
        if runtime is not None:
            runtime.flush(timeout)
    except Exception as exc:
        report_internal_error(exc, "workers.flush")


# ---------------------------------------------------------------------------------------------------------- Celery

_celery_lock = threading.Lock()
_celery_flush_timeout: float | None = None
_celery_connected = False


def _on_celery_process_shutdown(**_: Any) -> None:
    _shutdown()


def _on_celery_task_postrun(**_: Any) -> None:
    timeout = _celery_flush_timeout
    if timeout is not None:
        _flush(timeout)


def connect_celery(*, flush_each_task: bool = False, timeout: float = DEFAULT_TASK_FLUSH_TIMEOUT) -> None:
    """Deliver what Celery pool processes recorded before they exit (call once where the Celery app is created).

    Celery's prefork pool ends its child processes with ``os._exit()``, both at worker shutdown and when
    ``max_tasks_per_child`` recycles one, so ``atexit`` never runs there. This connects ``worker_process_shutdown``
    to :func:`paygentic_costs.shutdown`, which delivers what is pending (at most ``shutdown_timeout`` seconds).
    Between tasks the background thread keeps delivering. Idempotent.

    Args:
        flush_each_task: Also flush after every task (``task_postrun``), at most ``timeout`` seconds. Only needed if
            a child may be killed without warning (``SIGKILL``, the OOM killer) and no spool is configured; it costs
            up to one API round trip per task.
        timeout: The per-task flush budget, in seconds.

    Raises:
        ImportError: Celery is not installed.
    """
    global _celery_connected, _celery_flush_timeout
    signals = importlib.import_module("celery.signals")
    with _celery_lock:
        _celery_flush_timeout = max(0.0, timeout) if flush_each_task else None
        if not _celery_connected:
            # weak=False: the receivers are module functions, but keep them even if a framework copies signals.
            signals.worker_process_shutdown.connect(_on_celery_process_shutdown, weak=False)
            signals.task_postrun.connect(_on_celery_task_postrun, weak=False)
            _celery_connected = True


# ---------------------------------------------------------------------------------------------------------- RQ

_rq_classes: dict[str, type] = {}
_rq_lock = threading.Lock()


class _RQJobEnd:
    """Mixed into an RQ worker class: every job ends by delivering what it recorded.

    ``perform_job`` runs in the work-horse (a forked child that ends with ``os._exit()``) for the forking workers and
    in the worker itself for ``SimpleWorker``: the horse shuts the pipeline down (its process is about to vanish),
    an in-process worker only flushes.
    """

    _paygentic_flush_timeout: float | None = None  # None: the configured shutdown_timeout

    def perform_job(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().perform_job(*args, **kwargs)  # type: ignore[misc]
        finally:
            if getattr(self, "_is_horse", False):
                _shutdown(self._paygentic_flush_timeout)
            else:
                _flush(self._paygentic_flush_timeout or _default_timeout())


def _default_timeout() -> float:
    runtime = _runtime.current_runtime()
    return runtime.settings.shutdown_timeout if runtime is not None else DEFAULT_TASK_FLUSH_TIMEOUT


def _rq_worker_class(name: str) -> type:
    with _rq_lock:
        cls = _rq_classes.get(name)
        if cls is None:
            rq_worker = importlib.import_module("rq.worker")
            base = rq_worker.Worker
            doc = (
                "``rq.Worker`` whose work-horses deliver what each job recorded before they exit with "
                "``os._exit()``: ``rq worker --worker-class paygentic_costs.workers.RQWorker``."
            )
            # __module__/__qualname__ name this module so that pickling the class (RQ does, for some worker
            # classes and for the worker registry) finds it again through the module's __getattr__.
            cls = type(name, (_RQJobEnd, base), {"__module__": __name__, "__qualname__": name, "__doc__": doc})
            _rq_classes[name] = cls
        return cls


RQWorker: type
"""``rq.Worker`` with the job-end hook (built on first access, so importing this module does not import RQ)."""


def __getattr__(name: str) -> Any:
    if name == "RQWorker":
        return _rq_worker_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------------------------------- multiprocessing


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if getattr(multiprocessing.util, "_exiting", False):
        # Already on multiprocessing's exit path (Pool.terminate() signals a worker that has just taken its exit
        # sentinel): raising here would skip the finalizers still to run, ours among them, and lose what is pending.
        return
    raise SystemExit(128 + signum)  # unwinds to multiprocessing's exit path, which runs the finalizers


def _finalize_process() -> None:
    # Pool.terminate() signals every worker, also one that already took its exit sentinel and is delivering here:
    # a SIGTERM now would cut the delivery short. It is bounded by shutdown_timeout, so let it finish.
    if _owns_sigterm(_on_sigterm):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _shutdown()


def _owns_sigterm(*ours: object) -> bool:
    """On the main thread of a POSIX process whose SIGTERM disposition is the default (or one of ``ours``)."""
    if os.name != "posix" or threading.current_thread() is not threading.main_thread():
        return False
    return signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None, *ours)


def init_worker_process() -> None:
    """Make a ``multiprocessing`` child deliver what it recorded before it exits (use as a pool ``initializer``).

    Children started with ``fork`` end with ``os._exit()`` and never run ``atexit``; ``Pool.terminate()`` (called by
    ``with Pool(...)`` on exit) ends every worker with ``SIGTERM``, with any start method. This registers
    :func:`paygentic_costs.shutdown` as a multiprocessing finalizer of the child (it runs when the child exits
    normally: ``close()`` / ``join()``, ``maxtasksperchild``) and, if the child still has the default ``SIGTERM``
    disposition, turns ``SIGTERM`` into a normal exit so the finalizer runs then too. Once the child is exiting
    (multiprocessing's exit finalizers have started) further ``SIGTERM`` signals are ignored, so the finalizer
    delivers (at most ``shutdown_timeout`` seconds) even when the signal lands mid-exit.

    Call it at the start of the child: ``Pool(initializer=paygentic_costs.workers.init_worker_process)``, or from
    your own initializer, or first thing in a ``Process`` target. The ``SIGTERM`` part needs the child's main thread.
    """
    multiprocessing.util.Finalize(None, _finalize_process, exitpriority=_FINALIZER_PRIORITY)
    if _owns_sigterm():
        signal.signal(signal.SIGTERM, _on_sigterm)
