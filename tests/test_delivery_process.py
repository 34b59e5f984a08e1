"""Process-level delivery: interpreter exit (T09, T23), fork (T13, T15). Real subprocesses and real forks."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fake_paygentic as fp
import pytest

from paygentic_costs.export import DeliveryPipeline, PaygenticExporter

TOKEN = "sk_test_process"
SRC = str(Path(__file__).resolve().parents[1] / "src")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.fixture
def fake() -> Iterator[Any]:
    with fp.FakePaygentic(token=TOKEN) as server:
        yield server


def _script(url: str, shutdown_timeout: float, *, refuse_threads: bool = False) -> str:
    return textwrap.dedent(f"""
        import threading
        from datetime import datetime, timezone
        from decimal import Decimal

        from paygentic_costs import CostEvent
        from paygentic_costs.export import DeliveryPipeline, PaygenticExporter

        def refuse(self):
            raise RuntimeError("threads are not available here")

        def main():
            if {refuse_threads!r}:
                threading.Thread.start = refuse  # like a process where no new thread may start
            pipeline = DeliveryPipeline(PaygenticExporter({TOKEN!r}, base_url={url!r}),
                                        shutdown_timeout={shutdown_timeout!r})
            now = datetime.now(timezone.utc)
            for i in range(100):
                pipeline.submit(CostEvent(type="cost.ai.inference", source="t09", idempotency_key=f"t09-{{i}}",
                                          timestamp=now, data={{"amount": Decimal("0.01"), "currency": "USD"}},
                                          subject="cus_1"))
            print("submitted", flush=True)

        if __name__ == "__main__":
            main()
    """)


def _run(tmp_path: Path, source: str) -> subprocess.Popen[str]:
    path = tmp_path / "app.py"
    path.write_text(source)
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


@pytest.mark.slow
def test_t09_events_are_delivered_when_main_returns(fake: Any, tmp_path: Path) -> None:
    proc = _run(tmp_path, _script(fake.url, 5.0))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert fake.keys() == {f"t09-{i}" for i in range(100)}


@pytest.mark.slow
def test_t09_black_holed_exit_is_bounded(fake: Any, tmp_path: Path) -> None:
    fake.script = lambda info: fp.BLACK_HOLE
    shutdown_timeout = 1.0
    proc = _run(tmp_path, _script(fake.url, shutdown_timeout))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "submitted"
    started = time.monotonic()
    _, err = proc.communicate(timeout=30)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0
    assert elapsed <= shutdown_timeout + 1.0, f"exit took {elapsed:.2f} s"
    assert "Traceback" not in err
    assert fake.arrivals_snapshot()  # it did try


@pytest.mark.slow
def test_t23_exit_drains_on_the_exiting_thread_when_threads_are_refused(fake: Any, tmp_path: Path) -> None:
    """No worker thread could start; the atexit handler delivers on the main thread and starts none."""
    proc = _run(tmp_path, _script(fake.url, 5.0, refuse_threads=True))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert fake.keys() == {f"t09-{i}" for i in range(100)}


# ---------------------------------------------------------------------------------------------- fork


def _child_records_and_flushes(pipeline: DeliveryPipeline, results: Any) -> None:
    for i in range(20):
        pipeline.submit(fp.make_event(f"child-{i}"))
    ok = pipeline.flush(timeout=10)
    stats = pipeline.stats()
    results.put((ok, stats["recorded"], stats["acknowledged"]))


@pytest.mark.parametrize("how", ["os.fork", "multiprocessing"])
def test_t13_fork_child_sends_only_its_own_events(fake: Any, how: str) -> None:
    pipeline = DeliveryPipeline(PaygenticExporter(TOKEN, base_url=fake.url), **fp.FAST)
    try:
        for i in range(5):
            pipeline.submit(fp.make_event(f"parent-{i}"))
        assert pipeline.flush(timeout=10)  # a keep-alive connection is open when we fork
        for i in range(5, 10):
            pipeline.submit(fp.make_event(f"parent-{i}"))  # possibly still queued when we fork
        if how == "os.fork":
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child
                code = 1
                try:
                    os.close(read_end)
                    for i in range(20):
                        pipeline.submit(fp.make_event(f"child-{i}"))
                    ok = pipeline.flush(timeout=10)
                    stats = pipeline.stats()
                    os.write(write_end, repr((ok, stats["recorded"], stats["acknowledged"])).encode())
                    code = 0
                finally:
                    os._exit(code)
            os.close(write_end)
            _, status = os.waitpid(pid, 0)
            with os.fdopen(read_end) as pipe:
                result = pipe.read()
            assert os.waitstatus_to_exitcode(status) == 0
            assert result == repr((True, 20, 20))
        else:
            context = multiprocessing.get_context("fork")
            results = context.Queue()
            process = context.Process(target=_child_records_and_flushes, args=(pipeline, results))
            process.start()
            assert results.get(timeout=20) == (True, 20, 20)
            process.join(20)
            assert process.exitcode == 0
        assert pipeline.flush(timeout=10)
        assert pipeline.stats()["recorded"] == 10 and pipeline.stats()["acknowledged"] == 10
        fp.assert_identity(pipeline.stats())
    finally:
        pipeline.shutdown(timeout=1)

    arrivals = fake.arrivals_snapshot()
    assert fake.keys() == {f"parent-{i}" for i in range(10)} | {f"child-{i}" for i in range(20)}
    child_ports = {a.port for a in arrivals if a.key and a.key.startswith("child-")}
    parent_ports = {a.port for a in arrivals if a.key and a.key.startswith("parent-")}
    assert child_ports and not child_ports & parent_ports  # the child opened its own connection(s)
    assert all(a.key.startswith("child-") for a in arrivals if a.port in child_ports and a.key)


def _our_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("paygentic_costs")}


def test_t15_lazy_start_survives_preload_fork(fake: Any) -> None:
    before = threading.active_count()
    ours_before = _our_threads()
    pipeline = DeliveryPipeline(PaygenticExporter(TOKEN, base_url=fake.url), **fp.FAST)
    assert threading.active_count() == before  # constructing starts nothing
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            threads = threading.active_count()
            pipeline.submit(fp.make_event("t15-child"))
            started = threading.active_count() == threads + 1 and any(
                t.name == "paygentic_costs-export" for t in threading.enumerate()
            )
            ok = pipeline.flush(timeout=10)
            os.write(write_end, repr((started, ok)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        assert pipe.read() == repr((True, True))
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent never recorded, so it never started a thread of ours. (A global thread count would also see the fake
    # server's handler thread for the child's keep-alive connection, which lives in this process.)
    assert _our_threads() <= ours_before
    assert fake.keys() == {"t15-child"}
    fp.assert_identity(pipeline.stats())
    assert pipeline.stats()["recorded"] == 0
    pipeline.shutdown(timeout=0)
