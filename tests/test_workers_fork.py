"""Fork under load (T14): one thread records in a tight loop while the main thread forks; each child records one event
and calls ``flush(timeout=5)``. Every child must exit 0 (its flush succeeded: no deadlock on a lock the recording
thread held at the fork) and every child event must be acknowledged.

The spec forks 200 times; CI forks ``PAYGENTIC_T14_FORKS`` times (default 40) to keep the suite short."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import fake_paygentic as fp
import pytest
from workers import harness

import paygentic_costs as pc
from paygentic_costs import _guard

FORKS = int(os.environ.get("PAYGENTIC_T14_FORKS", "40"))
MAX_ALIVE = 8  # children alive at once: the parent keeps forking under load, the machine is not swamped
CHILD_FLUSH_TIMEOUT = 5.0  # the spec's child flush; a child exits 1 if it did not finish in time
CHILD_EXIT_LIMIT = 30.0  # generous: a deadlocked child never exits; a slow machine is not a failure

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.fixture
def fake() -> Iterator[Any]:
    """The fake in its own process: the parent's spinning recorder must not starve the server's threads."""
    with fp.FakePaygenticProcess(token=harness.TOKEN) as server:
        yield server


def _child(index: int) -> None:
    """Runs in the forked child; never returns."""
    code = 2
    try:
        errors: list[BaseException] = []
        _guard.set_error_sink(errors.append)
        event = pc.record("cost.test", amount="0.0010", customer="cus_fork", operation_id=f"t14-child-{index}")
        ok = event is not None and pc.flush(timeout=CHILD_FLUSH_TIMEOUT)
        code = 0 if ok and not errors else (3 if errors else 1)
    finally:
        os._exit(code)


def _reap(children: dict[int, float], results: dict[int, tuple[int, float]], *, block: bool) -> None:
    """Collect exited children into ``results`` (pid -> (exit status, seconds from fork to exit))."""
    while children:
        for pid, forked in list(children.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                results[pid] = (os.waitstatus_to_exitcode(status), time.monotonic() - forked)
                del children[pid]
            elif time.monotonic() - forked > CHILD_EXIT_LIMIT:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                results[pid] = (-signal.SIGKILL, time.monotonic() - forked)
                del children[pid]
        if not block and len(children) < MAX_ALIVE:
            return
        time.sleep(0.005)


@pytest.mark.slow
def test_t14_fork_while_another_thread_records(fake: Any) -> None:
    pc.configure(api_key=harness.TOKEN, base_url=fake.url, source="https://fork.test")
    stop = threading.Event()
    recorded = [0]

    def spin() -> None:
        i = 0
        while not stop.is_set():
            pc.record("cost.test", amount="0.0010", customer="cus_fork", operation_id=f"t14-parent-{i}")
            i += 1
        recorded[0] = i

    spinner = threading.Thread(target=spin, name="t14-recorder")
    spinner.start()
    children: dict[int, float] = {}
    results: dict[int, tuple[int, float]] = {}
    try:
        time.sleep(0.05)  # the recorder is running, the parent's delivery thread is busy
        for index in range(FORKS):
            _reap(children, results, block=False)
            forked = time.monotonic()
            pid = os.fork()
            if pid == 0:
                _child(index)
            children[pid] = forked
    finally:
        stop.set()
        spinner.join(30)
        _reap(children, results, block=True)

    slowest = max(seconds for _, seconds in results.values())
    codes = sorted(code for code, _ in results.values())
    print(f"\nT14: {FORKS} forks while {recorded[0]} events were recorded; slowest child exited after "
          f"{slowest:.2f} s (spec: 5 s)")
    assert codes == [0] * FORKS, f"child exit codes (1: flush timed out, 3: internal error, -9: hung): {codes}"
    ledger = fake.ledger()
    child_keys = {key for key in ledger["ledger"] if key.startswith("t14-child-")}
    assert child_keys == {f"t14-child-{index}-cost.test" for index in range(FORKS)}
    # No event arrived twice: a child re-sending events it inherited from the parent's queue would show here.
    assert ledger["duplicates"] == 0
    fp.assert_identity(pc.stats())
