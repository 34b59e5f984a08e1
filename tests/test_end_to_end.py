"""The public API over real HTTP against the local server: exit flush, fork, threads, exact sums."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

import paygentic_costs as pc
from paygentic_costs.server import LocalServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    with LocalServer(str(tmp_path / "e2e.db")) as running:
        yield running


def _ledger(server: LocalServer, key: str) -> list[dict[str, object]]:
    response = httpx.get(
        f"{server.url}/_local/events", params={"limit": 100_000}, headers={"Authorization": f"Bearer {key}"}
    )
    return list(response.json()["data"])


def _python(code: str, server: LocalServer, key: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PAYGENTIC_API_KEY": key,
        "PAYGENTIC_BASE_URL": server.url,
        "PAYGENTIC_COSTS_STATE_DIR": str(tmp_path / "child-state"),
    }
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, env=env
    )


def test_events_recorded_before_exit_are_delivered_without_an_explicit_flush(
    server: LocalServer, tmp_path: Path
) -> None:
    out = _python(
        """
        import paygentic_costs as pc
        with pc.job("exit-job", customer="cus_exit"):
            for i in range(100):
                pc.record("cost.x", amount="0.01")
        """,
        server,
        "sk_exit",
        tmp_path,
    )
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    events = _ledger(server, "sk_exit")
    assert len({e["idempotencyKey"] for e in events}) == 100
    assert sum(Decimal(str(e["data"]["amount"])) for e in events) == Decimal("1.00")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_forked_child_never_resends_the_parents_events(server: LocalServer, tmp_path: Path) -> None:
    out = _python(
        """
        import os, paygentic_costs as pc
        with pc.job("parent", customer="cus_p"):
            for _ in range(10):
                pc.record("cost.x", amount=1)
        pid = os.fork()
        if pid == 0:
            with pc.job("child", customer="cus_c"):
                for _ in range(20):
                    pc.record("cost.x", amount=1)
            os._exit(0 if pc.flush(10) else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert pc.flush(10)
        """,
        server,
        "sk_fork",
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    keys = [e["idempotencyKey"] for e in _ledger(server, "sk_fork")]
    assert len(keys) == len(set(keys)) == 30
    assert sum(k.startswith("parent-") for k in keys) == 10 and sum(k.startswith("child-") for k in keys) == 20


def test_many_threads_deliver_each_event_exactly_once_with_an_exact_sum(server: LocalServer) -> None:
    import threading

    pc.configure(api_key="sk_threads", base_url=server.url, source="e2e")
    amounts = [Decimal(i) / Decimal(1000) for i in range(1, 201)]

    def worker(chunk: list[Decimal]) -> None:
        for amount in chunk:
            pc.record("cost.x", amount=amount)

    with pc.job("threads", customer="cus_t"):
        threads = [threading.Thread(target=pc.wrap(worker), args=(amounts[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert pc.flush(30)
    stats = pc.stats()
    assert stats["acknowledged"] == stats["recorded"] == 200
    events = _ledger(server, "sk_threads")
    assert len({e["idempotencyKey"] for e in events}) == 200
    assert sum(Decimal(str(e["data"]["amount"])) for e in events) == sum(amounts)
