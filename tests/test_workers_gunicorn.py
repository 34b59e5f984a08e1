"""Gunicorn: a real ``gunicorn`` serving a WSGI app that records one cost per request, with and without
``--preload``, sync and threaded workers, with worker recycling; stopped with SIGTERM. The fake Paygentic must hold
exactly one event per request. The app adds nothing for delivery: gunicorn workers exit through ``sys.exit``, so the
exit flush runs, and the fork hooks give each worker its own delivery thread."""

from __future__ import annotations

import http.client
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gunicorn", reason="gunicorn is a test dependency (the dev extra)")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gunicorn runs on POSIX only")


import fake_paygentic as fp  # noqa: E402 - after the importorskip above
from workers import harness  # noqa: E402

REQUESTS = 60


@pytest.fixture
def fake() -> Iterator[Any]:
    # Each answer takes 200 ms, so the last requests' events are still pending when SIGTERM arrives: the workers'
    # exit flush, not luck, delivers them.
    def slow(info: Any) -> Any:
        return fp.respond(202, delay=0.2) if info.body is not None else None

    with fp.FakePaygentic(token=harness.TOKEN, script=slow) as server:
        yield server


def _start(fake_url: str, tmp_path: Path, *options: str) -> tuple[subprocess.Popen[str], int, Path]:
    log = tmp_path / "gunicorn.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "--workers", "2", "--graceful-timeout", "20",
         "--error-logfile", str(log), "--log-level", "info", *options, "wsgi_app:app"],
        cwd=harness.WORKERS, env=harness.subprocess_env(fake_url), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        match = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", text)
        if match and text.count("Booting worker") >= 2:
            return proc, int(match.group(1)), log
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"gunicorn did not start:\n{log.read_text() if log.exists() else ''}")


def _get(port: int, n: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", f"/?n={n}")
        response = conn.getresponse()
        assert response.status == 200
        return int(response.read())
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        pytest.param((), id="sync"),
        pytest.param(("--preload",), id="sync-preload"),
        pytest.param(("--preload", "--threads", "4"), id="gthread-preload"),
        pytest.param(("--preload", "--max-requests", "7"), id="sync-preload-recycled"),
    ],
)
def test_gunicorn_delivers_one_event_per_request(fake: Any, tmp_path: Path, options: tuple[str, ...]) -> None:
    proc, port, log = _start(fake.url, tmp_path, *options)
    try:
        pids = {_get(port, n) for n in range(REQUESTS)}
    finally:
        proc.send_signal(signal.SIGTERM)  # graceful stop: workers finish, exit through sys.exit, atexit flushes
        code = proc.wait(60)
    assert code == 0, log.read_text()
    if "--max-requests" in options:
        assert len(pids) > 2, "workers were recycled, each exiting with events pending"
    expected = {f"gunicorn-{n}-cost.request" for n in range(REQUESTS)}
    assert fake.keys() == expected
    assert fake.duplicates == 0
    assert "Traceback" not in log.read_text()
