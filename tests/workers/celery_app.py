"""A Celery app for the prefork tests, on kombu's broker-less ``filesystem://`` transport (a folder from the
``CELERY_FS_DIR`` environment variable). Each task records one cost and then leaves a marker file, so the test knows
the task ran without looking at the events."""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery

import paygentic_costs as pc
import paygentic_costs.workers

pc.configure(source="https://celery.test")
paygentic_costs.workers.connect_celery()  # the one line: pool processes deliver before they exit

_root = Path(os.environ["CELERY_FS_DIR"])
_queue = _root / "queue"
_done = _root / "done"
for folder in (_queue, _done):
    folder.mkdir(parents=True, exist_ok=True)

app = Celery("celery_app", broker="filesystem://")
app.conf.update(
    broker_transport_options={"data_folder_in": str(_queue), "data_folder_out": str(_queue),
                              "control_folder": str(_root / "control"), "polling_interval": 0.05},
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    worker_enable_remote_control=False,  # the filesystem transport has no broadcast (pidbox) exchange
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)


@app.task(name="record_cost")
def record_cost(n: int) -> int:
    """Record the cost of work item ``n``; leave ``done/<n>``."""
    with pc.job(f"celery-{n}", customer="cus_celery"):
        pc.record("cost.task", amount="0.0010", provider="test", operation="task")
    (_done / str(n)).write_text(str(os.getpid()))
    return n


if __name__ == "__main__":
    # `python celery_app.py N`: enqueue N tasks (the producer side).
    import sys

    for n in range(int(sys.argv[1])):
        record_cost.delay(n)
