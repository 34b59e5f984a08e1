"""Outages with the spool on (delivery.md T05, T19) and the memory bound with it off (T25), scaled for CI."""

from __future__ import annotations

import functools
import gc
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fake_paygentic as fp
import pytest

from paygentic_costs.export import DeliveryPipeline, PaygenticExporter
from paygentic_costs.export._spool import SpoolStore

TOKEN = "sk_test_outage"


@pytest.fixture
def fake() -> Iterator[Any]:
    with fp.FakePaygentic(token=TOKEN) as server:
        yield server


def _spool(directory: Path) -> Any:
    return functools.partial(SpoolStore, directory, commit_interval=0.02, adopt_interval=0.5, reopen_interval=0.5)


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


@pytest.mark.slow
def test_t05_outage_ride_through_with_the_spool(fake: Any, tmp_path: Path) -> None:
    """5 000 events recorded during a 4 s outage (scaled from 60 s): gentle probing while down, then everything
    acknowledged promptly once the endpoint is back; RSS growth within max_queue_size x 2 KB."""
    down = threading.Event()
    down.set()
    fake.script = lambda info: fp.RESET_BEFORE_BODY if down.is_set() else None
    # Production-shaped backoff scaled 1:2 (base 0.25 s, cap 1 s) so probes are countable.
    pipeline = DeliveryPipeline(PaygenticExporter(TOKEN, base_url=fake.url), store=_spool(tmp_path / "spool"),
                                backoff_base=0.25, backoff_cap=1.0, backoff_floor=0.1, max_queue_size=10_000)
    gc.collect()
    rss_before = _rss()
    outage_started = time.monotonic()
    for i in range(5000):
        assert pipeline.submit(fp.make_event(f"t05-{i}"))
        if i % 250 == 0:
            time.sleep(0.15)  # spread over the outage
    cpu_before, wall_before = time.process_time(), time.monotonic()
    time.sleep(max(0.0, outage_started + 4.0 - time.monotonic()))
    cpu_idle = (time.process_time() - cpu_before) / max(time.monotonic() - wall_before, 1e-3)
    outage = time.monotonic() - outage_started
    during = len(fake.arrivals_snapshot())
    stats = pipeline.stats()
    fp.assert_identity(stats)
    assert stats["spooled"] == 5000 and stats["acknowledged"] == 0
    assert stats["circuit_state"] == "open"
    # ≤ 1 probe per backoff interval: with the 1 s cap, about one request a second once the breaker opened
    # (plus the failures that opened it). The reference bound is ≤ 2 req/s on average.
    assert during <= 2 * outage + 10, f"{during} requests in a {outage:.1f} s outage"
    assert cpu_idle < 0.25  # the whole test process (server threads included) while nothing is recorded
    gc.collect()
    assert _rss() - rss_before <= 10_000 * 2048
    down.clear()
    recovered_at = time.monotonic()
    assert pipeline.flush(timeout=30)
    drained = time.monotonic() - recovered_at
    assert fake.keys() == {f"t05-{i}" for i in range(5000)}
    print(f"\nT05: {during} requests during a {outage:.1f} s outage, drained 5000 in {drained:.1f} s after recovery")
    pipeline.shutdown(timeout=1)
    fp.assert_identity(pipeline.stats())


def test_t19_rate_limit_with_the_spool_on(fake: Any, tmp_path: Path) -> None:
    """429 + Retry-After for 1.5 s: nothing is sent inside a Retry-After window, concurrency halves, all acked."""
    limited_until = time.monotonic() + 1.5

    def script(info: Any) -> Any:
        if info.body is not None and time.monotonic() < limited_until:
            return fp.respond(429, retry_after="0.5")
        return None

    fake.script = script
    pipeline = DeliveryPipeline(PaygenticExporter(TOKEN, base_url=fake.url), store=_spool(tmp_path / "spool"),
                                **fp.FAST)
    for i in range(200):
        pipeline.submit(fp.make_event(f"t19-{i}"))
    assert pipeline.flush(timeout=30)
    stats = pipeline.stats()
    assert stats["acknowledged"] == 200 and stats["dropped"] == {}
    assert stats["concurrency_limit"] < 8 or stats["requests"]["4xx"] > 0
    arrivals = fake.arrivals_snapshot()
    limited = [a for a in arrivals if a.status == 429]
    assert limited
    for answer in limited:  # no request started inside the Retry-After window of an earlier 429
        window_end = (answer.answered_at or answer.at) + 0.5
        too_early = [a for a in arrivals if (answer.answered_at or answer.at) < a.at < window_end - 0.05
                     and a.conn_id != answer.conn_id and a.at > answer.at + 0.05]
        assert not too_early, (answer, too_early[:3])
    assert fake.keys() == {f"t19-{i}" for i in range(200)}
    pipeline.shutdown(timeout=1)
    fp.assert_identity(pipeline.stats())


_T25 = """
import gc, json, sys
sys.path.insert(0, sys.argv[1])
import importlib.util
spec = importlib.util.spec_from_file_location("fake_paygentic", sys.argv[2])
fp = importlib.util.module_from_spec(spec); sys.modules["fake_paygentic"] = fp; spec.loader.exec_module(fp)
from paygentic_costs.export import DeliveryPipeline, Outcome

class Down:
    def export(self, events, timeout):
        return [Outcome("retry", reason="connect_error")] * len(events)
    def shutdown(self):
        pass

def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096

queue, records = int(sys.argv[3]), int(sys.argv[4])
pipeline = DeliveryPipeline(Down(), max_queue_size=queue, backoff_base=1.0, backoff_cap=10.0)
gc.collect(); before = rss()
for i in range(records):
    pipeline.submit(fp.make_event(f"t25-{i}"))
gc.collect(); growth = rss() - before
# What `queue` events cost in memory on their own, measured while the pipeline still holds its queue (fresh heap).
gc.collect(); base = rss()
held = [fp.make_event(f"probe-{i}") for i in range(queue)]
for event in held:
    event.to_json()
gc.collect(); event_cost = (rss() - base) / queue
stats = pipeline.stats()
print(json.dumps({"growth": growth, "event_cost": event_cost, "stats": stats,
                  "wire_size": sum(len(e.to_json()) for e in held) / queue}))
"""


def run_t25(queue: int, records: int) -> dict[str, Any]:
    """Run the T25 measurement in a fresh interpreter (RSS in a long-lived process reuses freed memory)."""
    import json
    import os
    import subprocess

    src = str(Path(__file__).resolve().parents[1] / "src")
    done = subprocess.run([sys.executable, "-c", _T25, src, str(Path(__file__).with_name("fake_paygentic.py")),
                           str(queue), str(records)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": src})
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_t25_memory_stays_bounded_with_the_spool_off() -> None:
    """200 000 records (1 000 000 in bench/bench_spool.py) with the endpoint down and no spool.

    "Event size" is what one queued event costs in memory (an event object with its serialised body), measured by
    holding ``max_queue_size`` events in a list; the pipeline may grow by at most twice that for its queue,
    however many records arrive.
    """
    queue, records = 10_000, 200_000
    result = run_t25(queue, records)
    stats = result["stats"]
    assert stats["dropped"] == {"queue_full": records - queue}
    fp.assert_identity(stats)
    bound = queue * result["event_cost"] * 2
    print(f"\nT25: RSS growth {result['growth'] / 1e6:.1f} MB for {queue} queued events of "
          f"{result['event_cost']:.0f} B in memory ({result['wire_size']:.0f} B on the wire); "
          f"bound {bound / 1e6:.1f} MB")
    assert result["event_cost"] > result["wire_size"]  # the measurement saw the events
    assert result["growth"] <= bound
