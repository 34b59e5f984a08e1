"""Catalog prices equal genai-prices' own ``calc_price`` exactly, at a fraction of its cost."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from statistics import median

import genai_prices
import pytest
from genai_prices import data_snapshot
from genai_prices.types import ClauseEquals, ModelInfo, ModelPrice, Provider
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paygentic_costs.pricing import Price, RateTable, Unpriced, Usage

UTC = timezone.utc
TABLE = RateTable.empty()

# (provider, model as a request would name it, which optional buckets the catalog prices for it)
MODELS: list[tuple[str, str, frozenset[str]]] = [
    ("openai", "gpt-4o-mini", frozenset({"web"})),
    ("openai", "gpt-4o-mini-2024-07-18", frozenset({"web"})),
    ("openai", "gpt-4o", frozenset({"web"})),
    ("openai", "o3", frozenset({"web"})),
    ("openai", "o4-mini", frozenset()),
    ("anthropic", "claude-sonnet-4-5-20250929", frozenset({"cache_write", "1h", "web"})),
    ("anthropic", "claude-haiku-4-5", frozenset({"cache_write", "1h", "web"})),
    ("anthropic", "claude-3-5-haiku-20241022", frozenset({"cache_write", "1h", "web"})),
    ("anthropic", "claude-3-haiku-20240307", frozenset({"cache_write", "1h"})),
    ("google", "gemini-2.5-pro", frozenset({"web"})),
    ("google", "gemini-2.5-flash", frozenset({"audio", "web"})),
    ("google", "gemini-2.0-flash", frozenset({"audio", "web"})),
    ("aws", "us.anthropic.claude-sonnet-4-20250514-v1:0", frozenset({"cache_write"})),
    ("aws", "amazon.nova-pro-v1:0", frozenset()),
    ("aws", "meta.llama3-70b-instruct-v1:0", frozenset()),
    ("mistral", "mistral-large-latest", frozenset()),
    ("mistral", "mistral-small-latest", frozenset()),
    ("cohere", "command-r-plus", frozenset()),
    ("cohere", "command-a-03-2025", frozenset()),
    ("deepseek", "deepseek-chat", frozenset()),
]


@st.composite
def usage_for(draw: st.DrawFn, buckets: frozenset[str]) -> Usage:
    cache_read = draw(st.integers(0, 100_000))
    cache_write = draw(st.integers(0, 100_000)) if "cache_write" in buckets else 0
    cache_write_1h = draw(st.integers(0, 100_000)) if "1h" in buckets else 0
    audio = draw(st.integers(0, 50_000)) if "audio" in buckets else 0
    # Cross the 128k / 200k / 272k long-context tiers now and then.
    plain = draw(st.integers(0, 50_000) | st.integers(100_000, 400_000))
    reasoning = draw(st.integers(0, 50_000))
    output_plain = draw(st.integers(0, 50_000))
    return Usage(
        input_tokens=plain + cache_read + cache_write + cache_write_1h + audio,
        output_tokens=output_plain + reasoning,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=cache_write_1h,
        reasoning_tokens=reasoning,
        input_audio_tokens=audio,
        web_search_requests=draw(st.integers(0, 5)) if "web" in buckets else None,
    )


def genai_usage(u: Usage) -> genai_prices.Usage:
    """Our normalised buckets in genai-prices' names: its cache_write_tokens covers both TTLs."""
    return genai_prices.Usage(
        input_tokens=u.input_tokens or 0,
        output_tokens=u.output_tokens or 0,
        cache_read_tokens=u.cache_read_tokens or 0,
        cache_write_tokens=(u.cache_write_tokens or 0) + (u.cache_write_1h_tokens or 0),
        cache_write_1h_tokens=u.cache_write_1h_tokens or 0,
        output_reasoning_tokens=u.reasoning_tokens or 0,
        input_audio_tokens=u.input_audio_tokens or 0,
        cache_audio_read_tokens=0,  # our Usage has no cached-audio bucket: cached tokens count as text
        web_searches=u.web_search_requests or 0,
    )


def reference(
    provider: str, model: str, u: Usage, at: datetime, context: dict[str, str] | None = None
) -> genai_prices.types.PriceCalculation:
    return genai_prices.calc_price(
        genai_usage(u), model, provider_id=provider, genai_request_timestamp=at, price_context=context
    )


@pytest.mark.parametrize(("provider", "model", "buckets"), MODELS, ids=[f"{p}:{m}" for p, m, _ in MODELS])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_equals_calc_price(provider: str, model: str, buckets: frozenset[str], data: st.DataObject) -> None:
    u = data.draw(usage_for(buckets))
    at = data.draw(st.datetimes(datetime(2024, 1, 1), datetime(2027, 1, 1), timezones=st.just(UTC)))
    ours = TABLE.price_llm_detailed(provider, model, u, at=at)
    assert isinstance(ours, Price), ours
    expected = reference(provider, model, u, at)
    assert ours.amount == expected.total_price
    assert sum(ours.breakdown.values(), Decimal(0)) == ours.amount
    assert ours.rate_id.startswith(f"genai-prices:{expected.provider.id}:{expected.model.id}")


VARIANTS = [
    ("openai", "gpt-4o", "flex", False),
    ("openai", "gpt-4o", "priority", False),
    ("openai", "o3", "flex", False),
    ("openai", "o3", "priority", False),
    ("openai", "o3", None, True),
    ("openai", "gpt-4o-mini", None, True),
    ("anthropic", "claude-haiku-4-5", None, True),
    ("anthropic", "claude-sonnet-4-5", None, True),
    ("google", "gemini-2.5-pro", None, True),
    ("openai", "gpt-4o", "flex", True),
]


@pytest.mark.parametrize(("provider", "model", "tier", "batch"), VARIANTS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_service_tier_and_batch_variants_equal_calc_price(
    provider: str, model: str, tier: str | None, batch: bool, data: st.DataObject
) -> None:
    u = data.draw(usage_for(frozenset()))
    at = data.draw(st.datetimes(datetime(2025, 1, 1), datetime(2027, 1, 1), timezones=st.just(UTC)))
    context = {}
    if tier is not None:
        context["service_tier"] = tier
    if batch:
        context["processing"] = "batch"
    ours = TABLE.price_llm_detailed(provider, model, u, at=at, service_tier=tier, batch=batch)
    assert isinstance(ours, Price), ours
    assert ours.amount == reference(provider, model, u, at, context).total_price


def test_variant_shows_in_rate_id_and_changes_the_price() -> None:
    u = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    at = datetime(2026, 11, 1, tzinfo=UTC)
    standard = TABLE.price_llm_detailed("openai", "o3", u, at=at)
    flex = TABLE.price_llm_detailed("openai", "o3", u, at=at, service_tier="flex")
    batch = TABLE.price_llm_detailed("openai", "o3", u, at=at, batch=True)
    assert isinstance(standard, Price) and isinstance(flex, Price) and isinstance(batch, Price)
    assert flex.amount < standard.amount and batch.amount < standard.amount
    assert flex.rate_id == standard.rate_id + ";service_tier=flex"
    assert batch.rate_id == standard.rate_id + ";processing=batch"


def test_date_effective_catalog_prices() -> None:
    # o3's price dropped on 2025-06-10; genai-prices compares UTC dates.
    u = Usage(input_tokens=1_000_000)
    before = TABLE.price_llm_detailed("openai", "o3", u, at=datetime(2025, 6, 9, 23, 59, tzinfo=UTC))
    after = TABLE.price_llm_detailed("openai", "o3", u, at=datetime(2025, 6, 10, tzinfo=UTC))
    assert isinstance(before, Price) and isinstance(after, Price)
    assert (before.amount, before.rate_id) == (Decimal(10), "genai-prices:openai:o3")
    assert (after.amount, after.rate_id) == (Decimal(2), "genai-prices:openai:o3@2025-06-10")


def test_time_of_day_prices() -> None:
    u = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    for hour in (0, 1, 12, 16, 17, 23):
        at = datetime(2026, 3, 1, hour, 45, tzinfo=UTC)
        ours = TABLE.price_llm_detailed("deepseek", "deepseek-chat", u, at=at)
        assert isinstance(ours, Price)
        assert ours.amount == reference("deepseek", "deepseek-chat", u, at).total_price


def test_anthropic_one_hour_writes_without_catalog_price_use_twice_the_input_price() -> None:
    # The Bedrock copy of Claude Sonnet 4 has no 1-hour write price in the catalog.
    u = Usage(input_tokens=1_500, output_tokens=100, cache_write_1h_tokens=1_000, cache_read_tokens=200)
    model = "us.anthropic.claude-sonnet-4-20250514-v1:0"
    ours = TABLE.price_llm_detailed("aws", model, u)
    assert isinstance(ours, Price)
    without_1h = Usage(input_tokens=500, output_tokens=100, cache_read_tokens=200)
    base = reference("aws", model, without_1h, datetime.now(UTC))
    input_price = base.model_price.input_mtok
    assert isinstance(input_price, Decimal)
    assert ours.amount == base.total_price + 1_000 * 2 * input_price / 1_000_000
    assert ours.breakdown["cache_write_1h_tokens"] == Decimal("0.006")


def test_missing_bucket_prices_are_unpriced_not_cheaper() -> None:
    assert TABLE.price_llm_detailed("openai", "gpt-4o", Usage(input_tokens=10, input_audio_tokens=5)) == Unpriced(
        "unpriced_bucket:input_audio_tokens"
    )
    assert TABLE.price_llm_detailed("mistral", "mistral-large-latest", Usage(web_search_requests=1)) == Unpriced(
        "unpriced_bucket:web_search_requests"
    )
    # A non-Anthropic model with no 1-hour cache price.
    assert TABLE.price_llm_detailed("openai", "gpt-4o", Usage(input_tokens=10, cache_write_1h_tokens=5)) == Unpriced(
        "unpriced_bucket:cache_write_1h_tokens"
    )


def test_catalog_model_without_prices_is_never_zero() -> None:
    # GitHub Copilot lists gpt-4o-mini with no token prices at all; genai-prices would say $0.
    u = Usage(input_tokens=1_000, output_tokens=10)
    assert reference("github-copilot", "gpt-4o-mini", u, datetime.now(UTC)).total_price == 0
    assert TABLE.price_llm_detailed("github-copilot", "gpt-4o-mini", u) == Unpriced("unpriced_bucket:input_tokens")


def test_updated_snapshot_is_picked_up() -> None:
    table = RateTable.empty()
    u = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    original = table.price_llm_detailed("openai", "gpt-4o", u)
    assert isinstance(original, Price)
    custom = data_snapshot.DataSnapshot(
        providers=[
            Provider(
                id="openai",
                name="OpenAI",
                api_pattern=r"https://api\.openai\.com",
                models=[
                    ModelInfo(
                        id="gpt-4o",
                        match=ClauseEquals(equals="gpt-4o"),
                        prices=ModelPrice(input_mtok=Decimal("1"), output_mtok=Decimal("2")),
                    )
                ],
            )
        ],
        from_auto_update=True,
    )
    data_snapshot.set_custom_snapshot(custom)
    try:
        updated = table.price_llm_detailed("openai", "gpt-4o", u)
        assert isinstance(updated, Price) and updated.amount == 3
    finally:
        data_snapshot.set_custom_snapshot(None)
    assert table.price_llm_detailed("openai", "gpt-4o", u) == original


def _median_ns(fn: Callable[[], object], n: int) -> float:
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return median(samples)


def test_cached_pricing_is_much_faster_than_calc_price() -> None:
    table = RateTable.empty()
    u = Usage(input_tokens=1_200, output_tokens=300, cache_read_tokens=200)
    gu = genai_usage(u)
    for _ in range(200):
        table.price_llm("openai", "gpt-4o", u)
        genai_prices.calc_price(gu, "gpt-4o", provider_id="openai")
    ours = _median_ns(lambda: table.price_llm("openai", "gpt-4o", u), 3_000)
    theirs = _median_ns(lambda: genai_prices.calc_price(gu, "gpt-4o", provider_id="openai"), 300)
    # Typically 20-40x; a loose bound keeps the test stable on a busy machine.
    assert ours * 8 < theirs, (ours, theirs)
