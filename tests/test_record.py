"""record / track / meter: validation, exact money, unattributed and unpriced policies."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import paygentic_costs as pc
from paygentic_costs.export import InMemoryExporter
from paygentic_costs.testing import capture

RATES = """
currency = "USD"
[llm."openai:gpt-4o-mini"]
input_per_mtok = "0.15"
output_per_mtok = "0.60"
cache_read_per_mtok = "0.075"

[api."clearbit:enrich"]
per_call = "0.10"

[api."twilio:sms"]
per_unit = "0.0079"

[compute."aws:gpu-inference"]
per_hour = "3.06"
"""


@pytest.fixture
def rates(tmp_path: Path) -> Path:
    path = tmp_path / "rates.toml"
    path.write_text(RATES)
    return path


@pytest.fixture(autouse=True)
def _configured(rates: Path) -> None:
    pc.configure(exporter=InMemoryExporter(), source="https://api.myapp.com", rates=rates)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("abc", "not a number"),
        ("-1", "negative"),
        ("NaN", "finite"),
        ("Infinity", "finite"),
        (True, "bool"),
        ([1], "Decimal, int, float"),
    ],
)
def test_invalid_amounts_raise_a_clear_error(bad: object, message: str) -> None:
    with pc.customer("c"), pytest.raises(pc.InvalidCostError, match=message):
        pc.record("cost.x", amount=bad)  # type: ignore[arg-type]


def test_other_invalid_arguments() -> None:
    with pc.customer("c"):
        with pytest.raises(pc.InvalidCostError, match=r"amount=\.\.\. or usage"):
            pc.record("cost.x")
        with pytest.raises(pc.InvalidCostError, match="event type"):
            pc.record("", amount=1)
        with pytest.raises(pc.InvalidCostError, match="dimension 'blob'"):
            pc.record("cost.x", amount=1, blob=object())
        with pytest.raises(pc.InvalidCostError, match="set by the library"):
            pc.record("cost.x", amount=1, currency="EUR")


@settings(max_examples=200, deadline=None)
@given(st.decimals(min_value=0, max_value=Decimal("1e12"), allow_nan=False, allow_infinity=False, places=12))
def test_amount_digits_are_exact_on_the_wire(amount: Decimal) -> None:
    with capture() as costs, pc.customer("c"):
        pc.record("cost.x", amount=amount)
    body = costs.events[0].to_json()
    sent = json.loads(body, parse_float=Decimal, parse_int=Decimal)["data"]["amount"]
    assert sent == amount
    number = body.split(b'"amount":')[1].split(b",")[0]
    assert re.fullmatch(rb"[0-9]+(\.[0-9]+)?", number), number  # plain digits, no exponent, no float rounding


def test_wire_format_matches_the_api(rates: Path) -> None:
    with capture() as costs, pc.job("job_xyz789", customer="cus_abc123"):
        pc.record(
            "cost.ai.inference",
            amount=Decimal("0.0042"),
            provider="anthropic",
            operation="extraction",
            region="us-east-1",
        )
    body = json.loads(costs.events[0].to_json(), parse_float=Decimal)
    assert body == {
        "type": "cost.ai.inference",
        "source": "https://api.myapp.com",
        "subject": "cus_abc123",
        "timestamp": body["timestamp"],
        "idempotencyKey": "job_xyz789-cost.ai.inference",
        "data": {
            "amount": Decimal("0.0042"),
            "currency": "USD",
            "provider": "anthropic",
            "operation": "extraction",
            "region": "us-east-1",
        },
    }
    assert body["timestamp"].endswith("Z")


def test_usage_is_priced_from_the_rate_file_with_buckets_and_provenance() -> None:
    usage = pc.Usage(input_tokens=1_000_000, output_tokens=500_000, cache_read_tokens=200_000)
    with capture() as costs, pc.customer("c"):
        pc.record("cost.ai.inference", usage=usage, provider="openai", model="gpt-4o-mini-2024-07-18")
    data = costs.events[0].data
    # 800k uncached input at 0.15 + 200k cached at 0.075 + 500k output at 0.60
    assert data["amount"] == Decimal("0.12") + Decimal("0.015") + Decimal("0.30")
    assert data["input_tokens"] == 1_000_000 and data["cache_read_tokens"] == 200_000
    assert data["model"] == "gpt-4o-mini-2024-07-18" and "gpt-4o-mini" in data["rate"]


def test_unattributed_costs_are_not_sent_but_counted_and_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    with capture() as costs, caplog.at_level(logging.WARNING, "paygentic_costs"):
        assert pc.record("cost.x", amount=1) is None
        assert pc.record("cost.x", amount=1) is None
    assert costs.events == []
    assert pc.stats()["unattributed"] == 2
    assert sum("no customer" in r.getMessage() for r in caplog.records) == 1


def test_strict_mode_raises_for_unattributed_costs(rates: Path) -> None:
    pc.configure(exporter=InMemoryExporter(), strict=True, rates=rates)
    with pytest.raises(pc.UnattributedCostError, match="no customer"):
        pc.record("cost.x", amount=1)


def test_unknown_models_are_held_not_priced_at_zero_then_repriced(tmp_path: Path) -> None:
    usage = pc.Usage(input_tokens=1000, output_tokens=10)
    with capture() as costs, pc.job("J", customer="c"):
        assert pc.record("cost.ai.inference", usage=usage, provider="acme", model="acme-large-1") is None
    assert costs.events == [] and pc.stats()["unpriced"] == 1
    assert pc.reprice() == 0  # still no rate

    new_rates = tmp_path / "more.toml"
    new_rates.write_text(RATES + '\n[llm."acme:acme-large-1"]\ninput_per_mtok = "1"\noutput_per_mtok = "2"\n')
    pc.configure(exporter=InMemoryExporter(), rates=new_rates)
    with capture() as costs:
        assert pc.reprice() == 1
    event = costs.events[0]
    assert event.amount == Decimal("0.00102") and event.idempotency_key == "J-cost.ai.inference"
    assert event.subject == "c"
    with capture() as again:
        assert pc.reprice() == 0  # sent once, never twice
    assert again.events == []


def test_track_records_one_event_per_successful_call() -> None:
    @pc.track("cost.enrichment", provider="clearbit", operation="enrich", per_call="0.10", tier="gold")
    def enrich(domain: str) -> dict[str, str]:
        if domain == "bad":
            raise KeyError(domain)
        return {"domain": domain}

    with capture() as costs, pc.job("J", customer="c"):
        assert enrich("acme.com") == {"domain": "acme.com"}
        with pytest.raises(KeyError):
            enrich("bad")
        enrich("b.com")
    assert [e.amount for e in costs.events] == [Decimal("0.10"), Decimal("0.10")]
    assert costs.events[0].data["tier"] == "gold" and costs.events[0].data["operation"] == "enrich"


def test_track_prices_from_the_rate_file_and_units_from_the_result() -> None:
    @pc.track("cost.enrichment", provider="clearbit", operation="enrich")
    def enrich() -> None:
        return None

    @pc.track("cost.sms", provider="twilio", operation="sms", units=lambda r: r["num_segments"])
    async def send() -> dict[str, int]:
        return {"num_segments": 3}

    with capture() as costs, pc.customer("c"):
        enrich()
        asyncio.run(send())
    assert [e.amount for e in costs.events] == [Decimal("0.10"), Decimal("0.0237")]


def test_meter_prices_duration_exactly() -> None:
    with capture() as costs, pc.customer("c"):
        with pc.meter("cost.compute", provider="aws", operation="gpu-inference", per_hour="3.06"):
            time.sleep(0.01)
        with pc.meter("cost.compute", provider="aws", operation="gpu-inference"):  # rate file
            time.sleep(0.01)
    for event in costs.events:
        seconds = event.data["seconds"]
        assert seconds >= Decimal("0.01")
        assert event.amount == Decimal("3.06") * seconds / Decimal(3600)


def test_meter_records_even_when_the_block_raises() -> None:
    with (
        capture() as costs,
        pc.customer("c"),
        pytest.raises(RuntimeError),
        pc.meter("cost.compute", per_second="0.001"),
    ):
        raise RuntimeError("user error")
    assert len(costs.events) == 1


def test_track_and_meter_reject_bad_prices_at_decoration_time() -> None:
    with pytest.raises(pc.InvalidCostError, match="per_call"):
        pc.track("cost.x", per_call="-0.1")
    with pytest.raises(pc.InvalidCostError, match="per_unit needs units"):
        pc.track("cost.x", per_unit="0.1")
    with pytest.raises(pc.InvalidCostError, match="needs per_hour"):
        pc.meter("cost.x")


def test_api_key_never_appears_in_reprs_or_errors() -> None:
    secret = "sk_live_SUPERSECRET123"
    pc.configure(api_key=secret, base_url="http://127.0.0.1:9", exporter=InMemoryExporter())
    from paygentic_costs import _runtime

    runtime = _runtime.get_runtime()
    assert secret not in repr(runtime) and secret not in repr(runtime.settings)
    with pytest.raises(pc.ConfigurationError) as info:
        pc.configure(api_key=secret, base_url="ftp://nowhere")
    assert secret not in str(info.value)
