"""Exporter benchmarks: CPU per delivered event, and the cost of ``DeliveryPipeline.submit()``.

    python bench/bench_exporter.py [--events 3000] [--rounds 3] [--submits 20000]

1. CPU per delivered event: a ``DeliveryPipeline`` + ``PaygenticExporter`` delivers N events to the fake Paygentic
   server (tests/fake_paygentic.py) running in its OWN process, so ``time.process_time()`` of this process is the
   client's CPU only. Event bodies are serialised before timing (the recorder serialises at record time). The same
   run with httpx's default transport (httpcore + anyio) is shown for comparison. Median over rounds.
2. ``submit()`` latency: each call timed with ``perf_counter_ns``, against a no-op function call timed the same way,
   in two situations: the worker busy delivering every event at once to an ``InMemoryExporter`` (it competes with
   the caller for the GIL and the queue lock), and the worker waiting on a stalled endpoint (delivery.md T01).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import httpx

from paygentic_costs import CostEvent
from paygentic_costs.export import DeliveryPipeline, InMemoryExporter, Outcome, PaygenticExporter

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "tests" / "fake_paygentic.py"


def _events(prefix: str, n: int) -> list[CostEvent]:
    now = datetime.now(timezone.utc)
    events = [
        CostEvent(type="cost.ai.inference", source="bench", idempotency_key=f"{prefix}-{i}", timestamp=now,
                  data={"amount": Decimal("0.000125"), "currency": "USD", "provider": "openai",
                        "model": "gpt-4o-mini", "input_tokens": 1000, "output_tokens": 500},
                  subject="cus_bench")
        for i in range(n)
    ]
    for event in events:
        event.to_json()
    return events


def _deliver(url: str, events: list[CostEvent], transport: httpx.AsyncBaseTransport | None) -> tuple[float, float]:
    """(CPU seconds, wall seconds) to deliver ``events``; asserts they were all acknowledged."""
    pipeline = DeliveryPipeline(PaygenticExporter("sk_bench", base_url=url, transport=transport))
    pipeline.submit(events[0])  # warm-up: thread, loop and connections exist before timing
    assert pipeline.flush(timeout=30)
    cpu, wall = time.process_time(), time.perf_counter()
    for event in events[1:]:
        pipeline.submit(event)
    assert pipeline.flush(timeout=120)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stats = pipeline.stats()
    assert stats["acknowledged"] == len(events), stats
    pipeline.shutdown()
    return cpu, wall


def bench_delivery(n: int, rounds: int) -> None:
    server = subprocess.Popen([sys.executable, str(FAKE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert server.stdout is not None and server.stdin is not None
    url = server.stdout.readline().strip()
    try:
        results: dict[str, list[tuple[float, float]]] = {"ours": [], "httpx default": []}
        for r in range(rounds):
            results["ours"].append(_deliver(url, _events(f"ours-{r}", n + 1), None))
            default = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=8, max_keepalive_connections=8))
            results["httpx default"].append(_deliver(url, _events(f"httpx-{r}", n + 1), default))
        print(f"\n## delivery: {n} events per round, {rounds} rounds, server in its own process")
        print("| transport | client CPU per event (median) | per round | events/s (median) |")
        print("|---|---:|---|---:|")
        for name, runs in results.items():
            per_event = [cpu / n * 1e6 for cpu, _ in runs]
            rate = statistics.median(n / wall for _, wall in runs)
            rounds_text = ", ".join(f"{x:.0f}" for x in per_event)
            print(f"| {name} | {statistics.median(per_event):.0f} µs | {rounds_text} | {rate:.0f} |")
    finally:
        server.stdin.close()
        server.wait(10)


class _Stalled:
    """An exporter whose requests never finish until shutdown: the worker waits, as on a hung endpoint."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    def export(self, events: Sequence[CostEvent], timeout: float) -> Sequence[Outcome]:
        self._stop.wait(timeout)
        return [Outcome("retry", reason="timeout")] * len(events)

    def shutdown(self) -> None:
        self._stop.set()


def bench_submit(n: int, rounds: int) -> None:
    def noop(event: CostEvent) -> bool:
        return True

    samples: dict[str, list[int]] = {"no-op function (baseline)": [], "submit, worker delivering": [],
                                     "submit, worker waiting on the network": []}
    clock = time.perf_counter_ns
    for r in range(rounds):
        events = _events(f"submit-{r}", n)
        busy = DeliveryPipeline(InMemoryExporter(), max_queue_size=n + 1)
        waiting = DeliveryPipeline(_Stalled(), max_queue_size=n + 1, export_timeout=60)
        busy.submit(events[0])
        waiting.submit(events[0])
        for name, target in zip(samples, (noop, busy.submit, waiting.submit), strict=True):
            sink = samples[name]
            for event in events[1:]:
                start = clock()
                target(event)
                sink.append(clock() - start)
        assert busy.flush(timeout=60)
        busy.shutdown()
        waiting.shutdown(timeout=0)

    def pct(values: list[int], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] / 1000

    print(f"\n## submit(): {n - 1} calls x {rounds} rounds per row")
    print("| call | median | p99 | max |")
    print("|---|---:|---:|---:|")
    for name, values in samples.items():
        print(f"| {name} | {pct(values, 0.5):.2f} µs | {pct(values, 0.99):.2f} µs | {max(values) / 1000:.0f} µs |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--submits", type=int, default=20_000)
    args = parser.parse_args()
    logging.getLogger("paygentic_costs").setLevel(logging.ERROR)  # the stalled pipeline's shutdown warning
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    print(f"machine: nproc {os.cpu_count()}, CPU {cpu!r}, Python {platform.python_version()}, httpx "
          f"{httpx.__version__}, load average {os.getloadavg()[0]:.1f}")
    bench_delivery(args.events, args.rounds)
    bench_submit(args.submits, 5)


if __name__ == "__main__":
    main()
