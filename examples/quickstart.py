"""Quickstart: a job, a hand-recorded cost, a tracked API call and a metered block, end to end.

Run it as is: with no PAYGENTIC_API_KEY the events are printed to stderr. With a key (or a local
`paygentic-costs serve` and PAYGENTIC_BASE_URL=http://127.0.0.1:8787) they are delivered to Paygentic.
"""

from __future__ import annotations

import time
from decimal import Decimal

import paygentic_costs as pc

# Your negotiated prices win over the bundled catalog; anything unlisted falls back to genai-prices.
RATES = {
    "currency": "USD",
    "api": {"clearbit:enrich": {"per_call": "0.10"}},
}

pc.configure(source="https://api.myapp.com", rates=RATES)


@pc.track("cost.enrichment", provider="clearbit", operation="enrich")  # one event per call, priced by the rates
def enrich(domain: str) -> dict[str, str]:
    return {"domain": domain, "employees": "50-200"}


def process_document(job_id: str, customer_id: str) -> None:
    with pc.job(job_id, customer=customer_id):
        # A cost you already know (e.g. from an invoice line or a provider's response):
        pc.record("cost.ocr", amount=Decimal("0.0150"), provider="textract", operation="analyze", pages=10)
        # LLM usage priced by the catalog (gpt-4o-mini list prices from genai-prices):
        pc.record(
            "cost.ai.inference",
            usage=pc.Usage(input_tokens=12_000, output_tokens=800, cache_read_tokens=4_000),
            provider="openai",
            model="gpt-4o-mini",
            operation="extraction",
        )
        enrich("acme.com")
        # Compute priced by duration:
        with pc.meter("cost.compute", provider="aws", operation="gpu-inference", per_hour="3.06"):
            time.sleep(0.05)


if __name__ == "__main__":
    process_document("job_xyz789", "cus_abc123")
    process_document("job_xyz790", "cus_def456")
    delivered = pc.flush(timeout=10)
    s = pc.stats()
    print(f"delivered={delivered} recorded={s['recorded']} acknowledged={s['acknowledged']} dropped={s['dropped']}")
