"""Pool tasks for the multiprocessing tests (importable by name, as ``spawn`` children need)."""

from __future__ import annotations

import multiprocessing.util
import os

import paygentic_costs as pc


def record_cost(n: int) -> int:
    """Record the cost of work item ``n``; returns the worker's pid."""
    with pc.job(f"mp-{n}", customer="cus_mp"):
        pc.record("cost.task", amount="0.0010", provider="test", operation="task")
    return os.getpid()


def exit_with_sigterm_during_shutdown(tasks: int) -> None:
    """A ``Process`` target: record ``tasks`` costs, then exit normally; a ``SIGTERM`` lands while multiprocessing is
    already running its exit finalizers, before ours (what ``Pool.terminate()`` does to a worker that just took its
    exit sentinel)."""
    import signal

    import paygentic_costs.workers

    paygentic_costs.workers.init_worker_process()
    # Runs before paygentic's finalizer (higher priority): the signal arrives mid-exit.
    multiprocessing.util.Finalize(None, os.kill, args=(os.getpid(), signal.SIGTERM), exitpriority=1_000)
    for n in range(tasks):
        record_cost(n)
