"""RQ: a real ``rq worker --burst`` against a real Redis runs N jobs that each record one cost. Work-horses end with
``os._exit()``, so the worker needs the job-end hook: ``--worker-class paygentic_costs.workers.RQWorker``. The fake
Paygentic must hold exactly N events.

Redis: ``$PAYGENTIC_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6390/0``, the one ``.ci/setup-services`` starts),
else a private ``redis-server`` from PATH. In CI a missing Redis fails the test instead of skipping it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("rq", reason="rq is a test dependency (the dev extra)")
redis = pytest.importorskip("redis", reason="redis (the client) is a test dependency (the dev extra)")
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="RQ's default worker forks a work-horse per job")


import fake_paygentic as fp  # noqa: E402 - after the importorskip above
from workers import harness  # noqa: E402

JOBS = 8
DEFAULT_REDIS_URL = "redis://127.0.0.1:6390/0"


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("PAYGENTIC_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    if _answers(url):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        reason = f"no Redis at {url} and no redis-server on PATH (run .ci/setup-services)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder), "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while not _answers(url):
            assert server.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def fake() -> Iterator[Any]:
    # 300 ms per answer: when a job returns, its event is still on the wire; the horse's os._exit() would lose it.
    def slow(info: Any) -> Any:
        return fp.respond(202, delay=0.3) if info.body is not None else None

    with fp.FakePaygentic(token=harness.TOKEN, script=slow) as server:
        yield server


@pytest.mark.slow
def test_rq_work_horses_deliver_one_event_per_job(fake: Any, redis_url: str) -> None:
    from rq import Queue

    name = f"paygentic-{uuid.uuid4().hex[:8]}"
    connection = redis.Redis.from_url(redis_url)
    queue = Queue(name, connection=connection)
    jobs = [queue.enqueue("rq_jobs.record_cost", n) for n in range(JOBS)]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", redis_url,
             "--worker-class", "paygentic_costs.workers.RQWorker", name],
            cwd=harness.WORKERS, env=harness.subprocess_env(fake.url), capture_output=True, text=True, timeout=180,
        )
        assert result.returncode == 0, result.stderr
        assert all(job.get_status(refresh=True) == "finished" for job in jobs), result.stderr
        # The worker has exited: whatever the fake holds now is all that will ever arrive.
        assert fake.keys() == {f"rq-{n}-cost.job" for n in range(JOBS)}
        assert fake.duplicates == 0
        assert "Traceback" not in result.stderr
    finally:
        queue.delete(delete_jobs=True)
        connection.close()
