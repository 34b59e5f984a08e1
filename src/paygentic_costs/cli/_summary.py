"""``paygentic-costs summary``: each cost metric's total over the last N hours, from any compatible server."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

from .._config import connection_from_env
from .._events import decimal_to_json

__all__ = ["connection", "run_summary"]


def connection(args: argparse.Namespace) -> tuple[str, str]:
    """Base URL and API key from the flags, else the environment (the key is never printed)."""
    return connection_from_env(args.base_url, args.api_key)


def run_summary(args: argparse.Namespace) -> int:
    """Print the summaries; exit 1 on an API error, 2 without an API key."""
    import httpx

    from ..client import APIError, Client

    base_url, api_key = connection(args)
    if not api_key:
        print("no API key: set PAYGENTIC_API_KEY (or pass --api-key)", file=sys.stderr)
        return 2
    end = datetime.now(timezone.utc)
    start = end - timedelta(hours=args.hours)
    group_by = [g.strip() for g in args.group_by.split(",")] if args.group_by else None
    rows: list[dict[str, Any]] = []
    try:
        with Client(api_key, base_url=base_url) as client:
            cost_ids = args.costs or [c.id for c in client.list_costs(limit=100).data]
            for cost_id in cost_ids:
                summary = client.get_cost_summary(cost_id, start, end, subject=args.customer, group_by=group_by)
                rows.append(
                    {
                        "id": summary.id,
                        "name": summary.name,
                        "currency": summary.currency,
                        "totalCost": None if summary.total_cost is None else decimal_to_json(summary.total_cost),
                        "totalQuantity": None
                        if summary.total_quantity is None
                        else decimal_to_json(summary.total_quantity),
                        "groups": [
                            {"dimensions": dict(g.dimensions), "cost": decimal_to_json(g.cost)} for g in summary.groups
                        ],
                    }
                )
    except APIError as exc:
        print(f"API error: {exc}", file=sys.stderr)
        return 1
    except httpx.TransportError as exc:
        print(f"cannot reach {base_url}: {type(exc).__name__}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"from": start.isoformat(), "to": end.isoformat(), "costs": rows}, indent=2))
        return 0
    print(
        f"Costs from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
        + (f", customer {args.customer}" if args.customer else "")
    )
    if not rows:
        print("  (no cost metrics)")
    for row in rows:
        print(f"  {row['name']:<28} {row['id']:<24} {row['totalCost'] or '-':>14} {row['currency']}")
        for group in row["groups"]:
            label = ", ".join(f"{k}={v}" for k, v in group["dimensions"].items())
            print(f"      {label:<50} {group['cost']:>14}")
    return 0
