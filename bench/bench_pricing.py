"""Per-call pricing cost after warm-up: ``RateTable.price_llm`` vs genai-prices ``calc_price``, same run.

Usage: ``python bench/bench_pricing.py [--rounds 10] [--calls 20000]``. Prints a markdown table.

Following reference/bench-notes.md: rounds interleave the configurations so machine drift hits all of them alike;
each call is timed on its own with ``time.perf_counter_ns``; we report the median and p99 over all calls and the
median of the per-round paired ratios (calc_price / ours), which holds better than absolute numbers on shared CPUs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import genai_prices

from paygentic_costs.pricing import RateTable, Usage

CASES: list[tuple[str, str, str, Usage]] = [
    (
        "openai:gpt-4o-mini (cache read)",
        "openai",
        "gpt-4o-mini-2024-07-18",
        Usage(input_tokens=1_200, output_tokens=300, cache_read_tokens=1_024),
    ),
    (
        "openai:o3 (reasoning, dated price)",
        "openai",
        "o3",
        Usage(input_tokens=2_000, output_tokens=1_500, reasoning_tokens=1_000),
    ),
    (
        "anthropic:claude-sonnet-4-5 (cache r/w, tiers)",
        "anthropic",
        "claude-sonnet-4-5-20250929",
        Usage(input_tokens=5_000, output_tokens=400, cache_read_tokens=3_000, cache_write_tokens=1_000),
    ),
]


def genai_usage(u: Usage) -> genai_prices.Usage:
    return genai_prices.Usage(
        input_tokens=u.input_tokens or 0,
        output_tokens=u.output_tokens or 0,
        cache_read_tokens=u.cache_read_tokens or 0,
        cache_write_tokens=(u.cache_write_tokens or 0) + (u.cache_write_1h_tokens or 0),
        output_reasoning_tokens=u.reasoning_tokens or 0,
    )


def sample(fn: Callable[[], object], calls: int) -> list[int]:
    clock = time.perf_counter_ns
    out = [0] * calls
    for i in range(calls):
        start = clock()
        fn()
        out[i] = clock() - start
    return out


def pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=20_000, help="calls of ours per round (calc_price gets 1/20)")
    args = parser.parse_args()

    table = RateTable.empty()
    ours: dict[str, list[int]] = {name: [] for name, *_ in CASES}
    theirs: dict[str, list[int]] = {name: [] for name, *_ in CASES}
    ratios: dict[str, list[float]] = {name: [] for name, *_ in CASES}
    for name, provider, model, usage in CASES:
        gu = genai_usage(usage)
        price = table.price_llm(provider, model, usage)
        expected = genai_prices.calc_price(gu, model, provider_id=provider).total_price
        assert price is not None and price.amount == expected, (name, price, expected)
        for _ in range(2_000):  # warm-up: resolution, plan compilation, caches
            table.price_llm(provider, model, usage)
        for _ in range(100):
            genai_prices.calc_price(gu, model, provider_id=provider)

    for _ in range(args.rounds):
        for name, provider, model, usage in CASES:
            gu = genai_usage(usage)
            a = sample(partial(table.price_llm, provider, model, usage), args.calls)
            b = sample(partial(genai_prices.calc_price, gu, model, provider_id=provider), args.calls // 20)
            ours[name] += a
            theirs[name] += b
            ratios[name].append(statistics.median(b) / statistics.median(a))

    print(
        f"Machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}; Python {platform.python_version()}; "
        f"genai-prices {genai_prices.__version__}; {args.rounds} rounds x {args.calls} calls (calc_price: "
        f"{args.calls // 20} per round)\n"
    )
    print("| model (usage) | ours median | ours p99 | calc_price median | calc_price p99 | speed-up (paired) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, *_ in CASES:
        print(
            f"| {name} | {statistics.median(ours[name]) / 1000:.2f} µs | {pct(ours[name], 0.99) / 1000:.2f} µs "
            f"| {statistics.median(theirs[name]) / 1000:.1f} µs | {pct(theirs[name], 0.99) / 1000:.1f} µs "
            f"| {statistics.median(ratios[name]):.0f}x |"
        )


if __name__ == "__main__":
    main()
