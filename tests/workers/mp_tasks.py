"""Pool tasks for the multiprocessing tests (importable by name, as ``spawn`` children need)."""

from __future__ import annotations

import os

import paygentic_costs as pc


def record_cost(n: int) -> int:
    """Record the cost of work item ``n``; returns the worker's pid."""
    with pc.job(f"mp-{n}", customer="cus_mp"):
        pc.record("cost.task", amount="0.0010", provider="test", operation="task")
    return os.getpid()
