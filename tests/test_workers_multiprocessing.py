"""multiprocessing pools, ``fork`` and ``spawn``: N tasks that each record one cost give exactly N events, whether the
pool is closed and joined (with ``maxtasksperchild`` recycling) or ended by ``terminate()`` (what ``with Pool()``
does). The pool adds one argument: ``initializer=paygentic_costs.workers.init_worker_process``."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import fake_paygentic as fp
import pytest
from workers import harness

import paygentic_costs as pc
import paygentic_costs.workers

TASKS = 24


@pytest.fixture
def fake() -> Iterator[Any]:
    # 300 ms per answer: when a worker exits, its last events are still on the wire.
    def slow(info: Any) -> Any:
        return fp.respond(202, delay=0.3) if info.body is not None else None

    with fp.FakePaygentic(token=harness.TOKEN, script=slow) as server:
        yield server


@pytest.fixture
def mp_tasks(fake: Any, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The task module, importable by ``spawn`` children; they configure from the environment on first record."""
    monkeypatch.syspath_prepend(str(harness.WORKERS))
    monkeypatch.setenv("PAYGENTIC_API_KEY", harness.TOKEN)
    monkeypatch.setenv("PAYGENTIC_BASE_URL", fake.url)
    pc.configure(source="https://multiprocessing.test")  # what fork children inherit
    import mp_tasks

    return mp_tasks


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("ending", ["close-join", "terminate"])
def test_pool_delivers_one_event_per_task(fake: Any, mp_tasks: ModuleType, method: str, ending: str) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method on this platform")
    context = multiprocessing.get_context(method)
    # Recycling (close-join) makes workers exit with events pending throughout the run, not only at the end.
    recycle = 4 if ending == "close-join" else None
    pool = context.Pool(2, initializer=paygentic_costs.workers.init_worker_process, maxtasksperchild=recycle)
    if ending == "terminate":
        with pool:
            pids = set(pool.map(mp_tasks.record_cost, range(TASKS), chunksize=1))
        # `with Pool()` called terminate(): the workers got SIGTERM with their last events on the wire.
    else:
        pids = set(pool.map(mp_tasks.record_cost, range(TASKS), chunksize=1))
        pool.close()
        pool.join()
        assert len(pids) > 2, "workers were recycled"
    pool.join()
    assert os.getpid() not in pids
    assert fake.keys() == {f"mp-{n}-cost.task" for n in range(TASKS)}
    assert fake.duplicates == 0


@pytest.mark.slow
def test_a_sigterm_during_the_exit_finalizers_does_not_cut_delivery(fake: Any, mp_tasks: ModuleType) -> None:
    # Pool.terminate() sends the exit sentinels and SIGTERM at once, so a worker can be signalled while multiprocessing
    # runs its exit finalizers, before ours has ignored SIGTERM; raising SystemExit there skipped ours and lost events.
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork start method on this platform")
    process = multiprocessing.get_context("fork").Process(target=mp_tasks.exit_with_sigterm_during_shutdown, args=(6,))
    process.start()
    process.join(30)
    assert process.exitcode == 0
    assert fake.keys() == {f"mp-{n}-cost.task" for n in range(6)}
    assert fake.duplicates == 0
