"""Celery prefork: a real ``celery worker`` (broker-less ``filesystem://`` transport) runs N tasks that each record
one cost, with and without ``max_tasks_per_child``; the worker is stopped with SIGTERM (warm shutdown). The fake
Paygentic must hold exactly N events. The app adds one line, ``paygentic_costs.workers.connect_celery()``: pool
children end with ``os._exit()``, so only the ``worker_process_shutdown`` hook delivers their last events."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import paygentic_costs as pc
import paygentic_costs.workers

pytest.importorskip("celery", reason="celery is a test dependency (the dev extra)")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the prefork pool needs fork")


import fake_paygentic as fp  # noqa: E402 - after the importorskip above
from workers import harness  # noqa: E402

TASKS = 20


@pytest.fixture
def fake() -> Iterator[Any]:
    # 1.5 s per answer: a child's last events are still pending when it exits (recycled, or at shutdown), longer than
    # the 1 s a billiard child lingers before os._exit().
    def slow(info: Any) -> Any:
        return fp.respond(202, delay=1.5) if info.body is not None else None

    with fp.FakePaygentic(token=harness.TOKEN, script=slow) as server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [pytest.param((), id="prefork"), pytest.param(("--max-tasks-per-child", "3"), id="prefork-recycled")],
)
def test_celery_prefork_delivers_one_event_per_task(fake: Any, tmp_path: Path, options: tuple[str, ...]) -> None:
    env = harness.subprocess_env(fake.url, CELERY_FS_DIR=str(tmp_path / "broker"))
    subprocess.run([sys.executable, "celery_app.py", str(TASKS)], cwd=harness.WORKERS, env=env, check=True,
                   timeout=120, capture_output=True)
    log = tmp_path / "celery.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", "prefork", "--concurrency", "2",
             "--without-mingle", "--without-gossip", "--without-heartbeat", "--loglevel", "INFO", *options],
            cwd=harness.WORKERS, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    done = tmp_path / "broker" / "done"
    try:
        deadline = time.monotonic() + 120
        while len(list(done.iterdir())) < TASKS and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.1)
        assert len(list(done.iterdir())) == TASKS, log.read_text()
    finally:
        worker.send_signal(signal.SIGTERM)  # warm shutdown: the pool children exit, then the main process
        code = worker.wait(60)
    text = log.read_text()
    assert code == 0, text
    if options:
        children = {marker.read_text() for marker in done.iterdir()}
        assert len(children) > 2, "children were recycled, each exiting with events pending"
    assert fake.keys() == {f"celery-{n}-cost.task" for n in range(TASKS)}
    assert fake.duplicates == 0
    assert "Traceback" not in text


def test_flush_each_task_flushes_when_a_task_ends(fake: Any) -> None:
    """``connect_celery(flush_each_task=True)``: the ``task_postrun`` signal waits until the task's events are acked."""
    from celery import signals

    pc.configure(api_key=harness.TOKEN, base_url=fake.url, source="https://celery.test")
    paygentic_costs.workers.connect_celery(flush_each_task=True, timeout=10)
    try:
        pc.record("cost.task", amount="0.0010", customer="cus_celery", operation_id="postrun")
        signals.task_postrun.send(sender=None, task_id="postrun", task=None, args=(), kwargs={}, retval=None)
        # The fake answers after 1.5 s: the key is stored only because the signal handler waited for it.
        assert "postrun-cost.task" in fake.ledger
    finally:
        paygentic_costs.workers.connect_celery()  # back to the default: no per-task flush
