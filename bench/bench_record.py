"""record() cost on the caller's thread: median and p99, against a no-op baseline measured in the same run.

Run: python bench/bench_record.py   (prints a markdown table; see bench/RESULTS.md for the latest numbers)

Each round times N calls of each variant one by one with perf_counter_ns, interleaving the variants so machine noise
hits them alike; the reported "added" figure is the median over rounds of (variant median - baseline median).
"""

from __future__ import annotations

import contextvars
import os
import platform
import socket
import statistics
import time
from decimal import Decimal
from importlib.metadata import version

import paygentic_costs as pc
from paygentic_costs.export import InMemoryExporter

ROUNDS, CALLS = 10, 5_000


def noop(event_type: str, **kwargs: object) -> None:
    return None


def variants() -> dict[str, object]:
    usage = pc.Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=1024)
    return {
        "baseline (no-op call, same arguments)": lambda: noop(
            "cost.enrichment", amount=Decimal("0.0010"), provider="clearbit", operation="enrich"
        ),
        "record(amount=...)": lambda: pc.record(
            "cost.enrichment", amount=Decimal("0.0010"), provider="clearbit", operation="enrich"
        ),
        "record(usage=..., model=...) priced by the catalog": lambda: pc.record(
            "cost.ai.inference", usage=usage, provider="openai", model="gpt-4o-mini-2024-07-18"
        ),
    }


def black_hole() -> socket.socket:
    """A loopback port that accepts TCP and never answers (delivery.md T01's black-holed endpoint)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    return listener


def run(label: str) -> None:
    timings: dict[str, list[tuple[float, float]]] = {}
    with pc.job("bench-job", customer="cus_bench"):
        fns = variants()
        for fn in fns.values():  # warm-up: first-use pricing resolution, caches
            for _ in range(200):
                fn()  # type: ignore[operator]
        for _ in range(ROUNDS):
            for name, fn in fns.items():
                samples = []
                for _ in range(CALLS):
                    t0 = time.perf_counter_ns()
                    fn()  # type: ignore[operator]
                    samples.append(time.perf_counter_ns() - t0)
                samples.sort()
                timings.setdefault(name, []).append((statistics.median(samples), samples[int(len(samples) * 0.99)]))
    base = timings.pop("baseline (no-op call, same arguments)")
    print(f"\n{label}\n")
    print("| variant | median | p99 | added over baseline (median of per-round differences) |")
    print("|---|---:|---:|---:|")
    print(
        f"| baseline | {statistics.median(m for m, _ in base) / 1000:.2f} µs | "
        f"{statistics.median(p for _, p in base) / 1000:.2f} µs | — |"
    )
    for name, rounds in timings.items():
        added = statistics.median(m - b for (m, _), (b, _) in zip(rounds, base, strict=True))
        print(
            f"| {name} | {statistics.median(m for m, _ in rounds) / 1000:.2f} µs | "
            f"{statistics.median(p for _, p in rounds) / 1000:.2f} µs | {added / 1000:.2f} µs |"
        )
    stats = pc.stats()
    assert sum(stats["dropped"].values()) == 0, stats


def calibration() -> float:
    """A contextvar set/get/reset pair: 0.12 µs on the reference machines (reference/bench-notes.md)."""
    var: contextvars.ContextVar[int] = contextvars.ContextVar("calibration")
    samples = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter_ns()
        for _ in range(CALLS):
            token = var.set(1)
            var.get()
            var.reset(token)
        samples.append((time.perf_counter_ns() - t0) / CALLS)
    return statistics.median(samples) / 1000


def main() -> None:
    pair = calibration()
    print(
        f"Calibration: a contextvar set/get/reset pair takes {pair:.2f} µs here (0.12 µs on the reference "
        f"machines of bench-notes.md), so this machine runs ~{pair / 0.12:.1f}x slower right now; load "
        f"average {os.getloadavg()[0]:.1f}."
    )
    print(
        f"record() on {os.cpu_count()} x {platform.machine()}, Python {platform.python_version()}, "
        f"paygentic-costs {version('paygentic-costs')}, genai-prices {version('genai-prices')}, "
        f"{ROUNDS} rounds x {CALLS} calls per variant"
    )
    listener = black_hole()
    port = listener.getsockname()[1]
    pc.configure(
        api_key="sk_bench",
        base_url=f"http://127.0.0.1:{port}",
        max_queue_size=1_000_000,
        source="bench",
        shutdown_timeout=0,
    )
    run("Endpoint black-holed (delivery.md T01: the worker is blocked on the network, as under real latency)")
    pc.shutdown(timeout=0)
    pc.configure(exporter=InMemoryExporter(), max_queue_size=1_000_000, source="bench")
    run("In-memory exporter (the worker is idle between events, so every record() wakes it: the worst case)")
    pc.shutdown()


if __name__ == "__main__":
    main()
