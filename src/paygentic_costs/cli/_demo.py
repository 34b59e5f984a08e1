"""``paygentic-costs demo``: the whole product on this machine, with no account and no network.

A local Paygentic-compatible server and a simulated LLM provider start on loopback; cost metrics are created through
the management client; a multi-customer workload runs through the real OpenAI and Anthropic SDKs (auto-instrumented),
``@track`` and ``meter``; a night of batch jobs from a job log is recorded with its historical timestamps; everything
is flushed and then read back from the server's cost summaries and report.
"""

from __future__ import annotations

import importlib.util
import random
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

import paygentic_costs as pc

from ._simulator import SimulatedProvider

__all__ = ["run_demo"]

CUSTOMERS = {"cus_acme": 3, "cus_globex": 2, "cus_initech": 1}  # relative workload
API_KEY = "sk_demo_local"
METRICS = (
    ("AI inference", "cost.ai.inference", {"provider": "$.provider", "model": "$.model", "operation": "$.operation"}),
    ("Data enrichment", "cost.enrichment", {"provider": "$.provider", "operation": "$.operation"}),
    ("Compute", "cost.compute", {"provider": "$.provider", "operation": "$.operation"}),
)
DEMO_RATES = {
    "currency": "USD",
    "api": {"clearbit:enrich": {"per_call": "0.10"}, "textract:analyze": {"per_unit": "0.015"}},
    "compute": {"aws:gpu-inference": {"per_hour": "3.06"}},
}


def _say(message: str) -> None:
    print(message, flush=True)


@pc.track("cost.enrichment", provider="clearbit", operation="enrich")  # priced by the demo rate table: $0.10/call
def enrich(domain: str) -> dict[str, str]:
    return {"domain": domain}


def _llm_calls(provider_url: str) -> list[Any]:
    """One callable per SDK call shape; each makes a real SDK request to the simulated provider."""
    calls: list[Any] = []
    prompt: Any = [{"role": "user", "content": "Summarise this contract. " * 40}]
    if importlib.util.find_spec("openai") and importlib.util.find_spec("paygentic_costs_openai"):
        import openai

        client = openai.OpenAI(api_key="sk-simulated", base_url=provider_url + "/v1", max_retries=0)
        calls.append(lambda: client.chat.completions.create(model="gpt-4o-mini", messages=prompt))

        def openai_stream() -> None:
            for _ in client.chat.completions.create(model="gpt-4o", messages=prompt, stream=True):
                pass

        calls.append(openai_stream)
    if importlib.util.find_spec("anthropic") and importlib.util.find_spec("paygentic_costs_anthropic"):
        import anthropic

        claude = anthropic.Anthropic(api_key="sk-ant-simulated", base_url=provider_url, max_retries=0)
        calls.append(lambda: claude.messages.create(model="claude-sonnet-4-5", max_tokens=512, messages=prompt))

        def anthropic_stream() -> None:
            with claude.messages.stream(model="claude-haiku-4-5", max_tokens=512, messages=prompt) as stream:
                for _ in stream.text_stream:
                    pass

        calls.append(anthropic_stream)
    return calls


def _workload(provider_url: str, jobs_per_customer: int) -> int:
    calls = _llm_calls(provider_url)
    if not calls:
        _say("  (openai/anthropic integrations not installed: LLM costs are recorded by hand from usage instead)")
    total_jobs = jobs_per_customer * sum(CUSTOMERS.values())
    done = 0
    for customer, weight in CUSTOMERS.items():
        for n in range(jobs_per_customer * weight):
            with pc.job(f"demo-{customer}-doc-{n}", customer=customer, pipeline="contracts"):
                for call in calls:
                    call()
                if not calls:
                    pc.record(
                        "cost.ai.inference",
                        usage=pc.Usage(input_tokens=3000, output_tokens=400),
                        provider="openai",
                        model="gpt-4o-mini",
                        operation="chat.completions",
                    )
                enrich(f"{customer}.example")
                with pc.meter("cost.compute", provider="aws", operation="gpu-inference"):
                    time.sleep(0.002)
            done += 1
            print(f"\r  jobs {done}/{total_jobs}", end="\n" if done == total_jobs else "", flush=True)
    return total_jobs


def _backfill_night(now: datetime) -> int:
    """Last night's OCR batch, recorded from its job log with the times the pages were processed."""
    rng = random.Random(7)
    count = 0
    for hours_ago in range(12, 0, -1):
        for customer, weight in CUSTOMERS.items():
            pages = rng.randint(5, 40) * weight
            when = now - timedelta(hours=hours_ago, minutes=rng.randint(0, 59))
            with pc.job(f"demo-ocr-{customer}-{hours_ago}", customer=customer, pipeline="ocr-batch"):
                pc.record(
                    "cost.enrichment",
                    usage=pc.Usage(units=Decimal(pages)),
                    provider="textract",
                    operation="analyze",
                    timestamp=when,
                )
            count += 1
    return count


def _bar(value: Decimal, peak: Decimal, width: int = 40) -> str:
    if peak <= 0:
        return ""
    cells = int((value / peak) * width * 8)
    return "█" * (cells // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[cells % 8]


def _report(base_url: str, now: datetime) -> None:
    from ..client import Client

    start, end = now - timedelta(hours=13), now + timedelta(minutes=1)
    with Client(API_KEY, base_url=base_url) as client:
        costs = client.list_costs(limit=100).data
        by_customer = client.get_cost_report(start, end, group_by="customer", top_n=20)
        _say(f"\nCost per customer, last 13 h ({by_customer.currency}):")
        for group in by_customer.groups:
            _say(f"  {group.label:<14} {group.total_cost:>12.6f}  {group.percent_of_total:>5.1f} %")
        _say(f"  {'total':<14} {by_customer.total_cost:>12.6f}")

        _say("\nBreakdown by provider / operation:")
        rows: dict[str, dict[str, Decimal]] = defaultdict(dict)
        for cost in costs:
            for customer in CUSTOMERS:
                summary = client.get_cost_summary(
                    cost.id, start, end, subject=customer, group_by=["provider", "operation"]
                )
                for part in summary.groups:
                    label = f"{part.dimensions.get('provider')}/{part.dimensions.get('operation')}"
                    rows[customer][label] = rows[customer].get(label, Decimal(0)) + part.cost
        for customer, labels in rows.items():
            _say(f"  {customer}")
            for label, amount in sorted(labels.items(), key=lambda kv: -kv[1]):
                _say(f"    {label:<32} {amount:>12.6f}")

        hourly = client.get_cost_report(start, end, group_by="customer", window_size="HOUR", top_n=20)
        _say("\nCost per hour (all customers):")
        totals = [(w.window_start, sum(w.groups.values(), Decimal(0))) for w in hourly.time_series]
        peak = max((t for _, t in totals), default=Decimal(0))
        for window_start, total in totals:
            _say(f"  {window_start:%H:00} {_bar(total, peak):<41} {total:.4f}")


def _ledger(base_url: str) -> tuple[int, int]:
    response = httpx.get(
        f"{base_url}/_local/events",
        params={"limit": 100_000},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    events = response.json()["data"]
    keys = {e["idempotencyKey"] for e in events}
    return len(events), len(keys)


def run_demo(*, jobs_per_customer: int = 4, keep_serving: bool = False) -> int:
    """Run the demo; returns the exit code (0 when every recorded event reached the server exactly once)."""
    from ..client import Client
    from ..server import LocalServer

    workdir = Path(tempfile.mkdtemp(prefix="paygentic-costs-demo-"))
    _say("paygentic-costs demo — nothing leaves this machine\n")
    with LocalServer(str(workdir / "paygentic-local.db")) as server, SimulatedProvider() as provider:
        _say(f"• local Paygentic server    {server.url}")
        _say(f"• simulated LLM provider    {provider.url}")
        pc.configure(
            api_key=API_KEY,
            base_url=server.url,
            source="https://demo.myapp.example",
            rates=DEMO_RATES,
            state_dir=workdir / "state",
        )
        active = pc.instrument()
        _say(f"• instrumented              {', '.join(active) or 'nothing (no integrations installed)'}")
        with Client(API_KEY, base_url=server.url) as client:
            for name, event_type, group_by in METRICS:
                client.create_cost(
                    name,
                    event_type=event_type,
                    aggregation="SUM",
                    value_property="$.amount",
                    unit_cost=1,
                    currency="USD",
                    product_id="prod_demo",
                    group_by=group_by,
                )
        _say(f"• cost metrics created      {', '.join(m[1] for m in METRICS)}\n")
        now = datetime.now(timezone.utc)
        _say("Running the workload:")
        jobs = _workload(provider.url, jobs_per_customer)
        backfilled = _backfill_night(now)
        _say(f"  + {backfilled} overnight OCR batches recorded from the job log")
        delivered = pc.flush(timeout=30)
        stats = pc.stats()
        _say(
            f"\nDelivered: {stats['acknowledged']} of {stats['recorded']} events "
            f"(dropped {sum(stats['dropped'].values())}, set aside {stats['set_aside']}, "
            f"unattributed {stats['unattributed']}, unpriced {stats['unpriced']})"
        )
        received, distinct = _ledger(server.url)
        _say(f"Server ledger: {received} events, {distinct} distinct idempotency keys, from {jobs} jobs")
        _report(server.url, now)
        pc.uninstrument()
        pc.shutdown()
        ok = delivered and received == distinct == stats["recorded"]
        _say("\n" + ("✓ every cost reached Paygentic exactly once" if ok else "✗ delivery incomplete"))
        if keep_serving:
            _say(f"\nServer still running at {server.url} (API key {API_KEY!r}); Ctrl-C to stop.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return 0 if ok else 1
