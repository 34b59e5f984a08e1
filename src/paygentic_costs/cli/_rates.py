"""``paygentic-costs rates show PROVIDER:MODEL``: what one million tokens of each bucket costs, and from where."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone

from .._config import rates_from_env
from .._errors import ConfigurationError
from .._events import decimal_to_json
from ..pricing import RateTable, Unpriced, Usage

__all__ = ["run_rates_show"]

_BUCKETS = (
    ("input", Usage(input_tokens=1_000_000)),
    ("cache read", Usage(input_tokens=1_000_000, cache_read_tokens=1_000_000)),
    ("cache write (5 min)", Usage(input_tokens=1_000_000, cache_write_tokens=1_000_000)),
    ("cache write (1 h)", Usage(input_tokens=1_000_000, cache_write_1h_tokens=1_000_000)),
    ("output", Usage(output_tokens=1_000_000)),
    ("reasoning", Usage(output_tokens=1_000_000, reasoning_tokens=1_000_000)),
)


def run_rates_show(args: argparse.Namespace) -> int:
    """Print the per-bucket prices; exit 1 when nothing prices the model."""
    provider, sep, model = args.model.partition(":")
    if not sep or not provider or not model:
        print("give PROVIDER:MODEL, e.g. openai:gpt-4o-mini", file=sys.stderr)
        return 2
    try:
        table = RateTable.load(rates_from_env(args.rates))
    except ConfigurationError as exc:
        print(f"rate file: {exc}", file=sys.stderr)
        return 2
    now = datetime.now(timezone.utc)
    print(f"{provider}:{model} on {now:%Y-%m-%d}, per million tokens ({table.currency}):")
    priced_any = False
    for label, usage in _BUCKETS:
        result = table.price_llm_detailed(provider, model, usage, at=now)
        if isinstance(result, Unpriced):
            print(f"  {label:<20} {'-':>12}  ({result.reason})")
            continue
        priced_any = True
        print(f"  {label:<20} {decimal_to_json(result.amount):>12}  {result.rate_id}")
    return 0 if priced_any else 1
