"""RQ jobs for the work-horse tests: each records one cost keyed by its argument."""

from __future__ import annotations

import paygentic_costs as pc

pc.configure(source="https://rq.test")


def record_cost(n: int) -> int:
    """Record the cost of work item ``n``."""
    with pc.job(f"rq-{n}", customer="cus_rq"):
        pc.record("cost.job", amount="0.0010", provider="test", operation="job")
    return n
