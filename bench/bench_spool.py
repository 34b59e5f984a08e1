"""Spool benchmarks: ``submit()`` latency with the spool on vs off, drain after an outage, memory with the spool off.

    python bench/bench_spool.py [--short] [--submits 50000] [--outage 60] [--events 5000] [--records 1000000]

1. ``submit()`` p50/p99/max with the spool off, on (group commit) and on with ``durability="sync"``, in the same
   run, against a stalled endpoint (delivery.md T01 conditions; the serialisation the recorder does at record time
   is inside the timed call when the spool is on, since ``submit()`` then serialises).
2. Delivery after an outage: ``--events`` are recorded during an ``--outage``-second outage of the fake Paygentic
   server (its own process; connections refused by a closed port while down), then the endpoint comes back;
   reports the probes sent while down and the time to acknowledge everything after recovery.
3. RSS growth under ``--records`` records with the endpoint down and the spool off (T25), in a fresh interpreter.

``--short`` runs a 10 s outage, 20 000 submits and 200 000 records.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from paygentic_costs import CostEvent
from paygentic_costs.export import DeliveryPipeline, Outcome, PaygenticExporter
from paygentic_costs.export._spool import SpoolStore

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "tests" / "fake_paygentic.py"


def _event(key: str) -> CostEvent:
    return CostEvent(type="cost.ai.inference", source="bench", idempotency_key=key,
                     timestamp=datetime.now(timezone.utc),
                     data={"amount": Decimal("0.000125"), "currency": "USD", "provider": "openai",
                           "model": "gpt-4o-mini", "input_tokens": 1000, "output_tokens": 500},
                     subject="cus_bench")


class _Stalled:
    """An endpoint that never answers within the attempt budget."""

    def export(self, events: Sequence[CostEvent], timeout: float) -> Sequence[Outcome]:
        time.sleep(min(timeout, 0.5))
        return [Outcome("retry", reason="timeout")] * len(events)

    def shutdown(self) -> None:
        pass


def _latency(label: str, n: int, store: Any, durability: str = "batch") -> dict[str, Any]:
    pipeline = DeliveryPipeline(_Stalled(), store=store, durability=durability, max_queue_size=n + 10)
    pipeline.submit(_event(f"{label}-warm"))
    time.sleep(0.2)
    samples = []
    for i in range(n):
        event = _event(f"{label}-{i}")
        started = time.perf_counter_ns()
        pipeline.submit(event)
        samples.append(time.perf_counter_ns() - started)
    pipeline.shutdown(timeout=0.5)
    samples.sort()
    return {"label": label, "p50": samples[n // 2] / 1000, "p99": samples[int(n * 0.99)] / 1000,
            "max": samples[-1] / 1000, "n": n}


def _load_fake() -> Any:
    spec = importlib.util.spec_from_file_location("paygentic_costs_bench_fake", FAKE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _outage(outage: float, events: int) -> dict[str, Any]:
    """Record ``events`` while the endpoint resets every connection for ``outage`` s, then let it answer."""
    fp = _load_fake()
    directory = Path(tempfile.mkdtemp(prefix="bench-spool-"))
    down = [True]
    with fp.FakePaygentic(token="sk_bench") as server:
        server.script = lambda info: fp.RESET_BEFORE_BODY if down[0] else None
        try:
            pipeline = DeliveryPipeline(PaygenticExporter("sk_bench", base_url=server.url),
                                        store=functools.partial(SpoolStore, directory))
            started = time.monotonic()
            cpu = time.process_time()
            for i in range(events):
                pipeline.submit(_event(f"outage-{i}"))
                time.sleep(outage * 0.5 / events)  # recorded over the first half of the outage
            time.sleep(max(0.0, started + outage - time.monotonic()))
            cpu_share = (time.process_time() - cpu) / (time.monotonic() - started)
            probes = len(server.arrivals_snapshot())
            down_stats = pipeline.stats()
            down[0] = False
            recovered = time.monotonic()
            assert pipeline.flush(timeout=300)
            drained = time.monotonic() - recovered
            first_ack = min(a.at for a in server.arrivals_snapshot() if a.processed) - recovered
            pipeline.shutdown(timeout=1)
            assert len(server.keys()) == events
            return {"outage": outage, "events": events, "probes": probes, "drained_s": drained,
                    "first_ack_s": first_ack, "rate": events / max(drained - first_ack, 1e-6),
                    "spooled_down": down_stats["spooled"], "cpu_share": cpu_share}
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def _memory(records: int, queue: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests"))
    spec = importlib.util.spec_from_file_location("paygentic_costs_tests_outage", ROOT / "tests" / "test_outage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result: dict[str, Any] = module.run_t25(queue, records)
    return result


def _machine() -> str:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"nproc {os.cpu_count()}, CPU {cpu!r}, Python {platform.python_version()}, SQLite "
            f"{sqlite3.sqlite_version}, load average {load:.1f} at the start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--submits", type=int, default=50_000)
    parser.add_argument("--outage", type=float, default=60.0)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    if args.short:
        args.submits, args.outage, args.records = 20_000, 10.0, 200_000
    print(_machine())
    tmp = Path(tempfile.mkdtemp(prefix="bench-spool-lat-"))
    try:
        from paygentic_costs.export._store import MemoryStore

        rows = [
            _latency("spool off", args.submits, MemoryStore),
            _latency("spool on (group commit)", args.submits, functools.partial(SpoolStore, tmp / "a")),
            _latency('spool on, durability="sync"', min(args.submits, 5000), functools.partial(SpoolStore, tmp / "b"),
                     durability="sync"),
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| submit() | calls | p50 | p99 | max |\n|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['label']} | {row['n']:,} | {row['p50']:.1f} µs | {row['p99']:.1f} µs | {row['max']:,.0f} µs |")
    out = _outage(args.outage, args.events)
    print(f"\noutage {out['outage']:.0f} s, {out['events']} events recorded meanwhile: {out['probes']} requests while "
          f"down ({out['probes'] / out['outage']:.2f}/s), {out['spooled_down']} spooled, process CPU "
          f"{out['cpu_share'] * 100:.1f} % (fake server in-process); after recovery: first ack at "
          f"{out['first_ack_s']:.1f} s (next probe), all acknowledged at {out['drained_s']:.1f} s "
          f"({out['rate']:.0f} events/s once probing succeeded)")
    mem = _memory(args.records, 10_000)
    bound = 10_000 * mem["event_cost"] * 2
    print(f"\nspool off, endpoint down, {args.records:,} records, max_queue_size 10,000: RSS growth "
          f"{mem['growth'] / 1e6:.1f} MB (an event costs {mem['event_cost']:.0f} B in memory, {mem['wire_size']:.0f} B "
          f"on the wire; bound 2 x 10,000 x {mem['event_cost']:.0f} B = {bound / 1e6:.1f} MB); dropped "
          f"{mem['stats']['dropped']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
