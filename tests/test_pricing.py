"""RateTable with a user rate file: bucket arithmetic, lookup order, dates, fx, API/compute prices, HTTP matching."""

from __future__ import annotations

import dataclasses
import enum
import textwrap
import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal, localcontext
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paygentic_costs.pricing import Price, RateTable, Unpriced, Usage

MTOK = Decimal(1_000_000)

FULL = """
[llm."acme:full-model"]
input_per_mtok = "3"
output_per_mtok = "15"
cache_read_per_mtok = "0.30"
cache_write_per_mtok = "3.75"
cache_write_1h_per_mtok = "6"
reasoning_per_mtok = "20"
input_audio_per_mtok = "40"
output_audio_per_mtok = "80"
web_search_per_request = "0.01"
per_request = "0.0005"
batch_multiplier = "0.5"

[llm."acme:plain"]
input_per_mtok = "0.15"
output_per_mtok = "0.60"
"""


def table_from(tmp_path: Path, text: str) -> RateTable:
    path = tmp_path / "rates.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return RateTable.from_file(path)


def priced(result: Price | Unpriced) -> Price:
    assert isinstance(result, Price), result
    return result


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    """Consistent normalised usage: cache and audio are parts of input, reasoning and audio parts of output."""
    cache_read = draw(st.integers(0, 50_000))
    cache_write = draw(st.integers(0, 50_000))
    cache_write_1h = draw(st.integers(0, 50_000))
    input_audio = draw(st.integers(0, 10_000))
    plain_input = draw(st.integers(0, 2_000_000))
    reasoning = draw(st.integers(0, 100_000))
    output_audio = draw(st.integers(0, 10_000))
    plain_output = draw(st.integers(0, 100_000))
    return Usage(
        input_tokens=plain_input + cache_read + cache_write + cache_write_1h + input_audio,
        output_tokens=plain_output + reasoning + output_audio,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=cache_write_1h,
        reasoning_tokens=reasoning,
        input_audio_tokens=input_audio,
        output_audio_tokens=output_audio,
        web_search_requests=draw(st.integers(0, 20)),
        requests=draw(st.none() | st.integers(1, 3)),
    )


def hand_price(u: Usage, factor: Decimal = Decimal(1)) -> Decimal:
    """The FULL entry's price of ``u``, computed the obvious way."""
    assert u.input_tokens is not None and u.output_tokens is not None
    cr, cw, cw1h = u.cache_read_tokens or 0, u.cache_write_tokens or 0, u.cache_write_1h_tokens or 0
    ia, oa, r = u.input_audio_tokens or 0, u.output_audio_tokens or 0, u.reasoning_tokens or 0
    total = (
        (u.input_tokens - cr - cw - cw1h - ia) * Decimal("3") / MTOK
        + cr * Decimal("0.30") / MTOK
        + cw * Decimal("3.75") / MTOK
        + cw1h * Decimal("6") / MTOK
        + ia * Decimal("40") / MTOK
        + (u.output_tokens - r - oa) * Decimal("15") / MTOK
        + r * Decimal("20") / MTOK
        + oa * Decimal("80") / MTOK
        + (u.web_search_requests or 0) * Decimal("0.01")
        + (1 if u.requests is None else u.requests) * Decimal("0.0005")
    )
    return total * factor


FULL_TABLE = RateTable.from_toml(FULL)


@settings(max_examples=300, deadline=None)
@given(usages())
def test_every_bucket_priced_exactly_once(u: Usage) -> None:
    price = priced(FULL_TABLE.price_llm_detailed("acme", "full-model", u))
    assert price.amount == hand_price(u)
    assert sum(price.breakdown.values(), Decimal(0)) == price.amount
    assert all(v > 0 for v in price.breakdown.values())
    assert price.currency == "USD"
    assert price.rate_id == "file:acme:full-model"


@settings(max_examples=100, deadline=None)
@given(usages())
def test_batch_multiplier(u: Usage) -> None:
    price = priced(FULL_TABLE.price_llm_detailed("acme", "full-model", u, batch=True))
    assert price.amount == hand_price(u, Decimal("0.5"))
    assert price.rate_id == "file:acme:full-model;batch_multiplier=0.5"


def test_breakdown_names_buckets() -> None:
    u = Usage(
        input_tokens=1_000,
        output_tokens=500,
        cache_read_tokens=100,
        cache_write_tokens=200,
        cache_write_1h_tokens=300,
        reasoning_tokens=50,
        web_search_requests=2,
    )
    price = priced(FULL_TABLE.price_llm_detailed("acme", "full-model", u))
    assert dict(price.breakdown) == {
        "input_tokens": Decimal("0.0012"),
        "cache_read_tokens": Decimal("0.00003"),
        "cache_write_tokens": Decimal("0.00075"),
        "cache_write_1h_tokens": Decimal("0.0018"),
        "output_tokens": Decimal("0.00675"),
        "reasoning_tokens": Decimal("0.001"),
        "web_search_requests": Decimal("0.02"),
        "requests": Decimal("0.0005"),
    }


def test_missing_cache_and_reasoning_prices_fall_back() -> None:
    table = RateTable.from_toml(FULL)
    u = Usage(
        input_tokens=1_000, output_tokens=400, cache_read_tokens=300, cache_write_tokens=200, reasoning_tokens=100
    )
    price = priced(table.price_llm_detailed("acme", "plain", u))
    # Cache buckets at the input price, reasoning at the output price: the same as if they were plain tokens.
    assert price.amount == 1_000 * Decimal("0.15") / MTOK + 400 * Decimal("0.60") / MTOK
    one_hour = RateTable.from_toml('[llm."a:m"]\ninput_per_mtok = "1"\ncache_write_per_mtok = "1.25"\n')
    price = priced(one_hour.price_llm_detailed("a", "m", Usage(input_tokens=10, cache_write_1h_tokens=8)))
    assert price.amount == (2 * Decimal(1) + 8 * Decimal("1.25")) / MTOK  # 1h writes at the 5-minute price


def test_unpriceable_buckets_make_the_usage_unpriced() -> None:
    table = RateTable.from_toml(FULL)
    assert table.price_llm_detailed("acme", "plain", Usage(input_tokens=10, input_audio_tokens=5)) == Unpriced(
        "unpriced_bucket:input_audio_tokens"
    )
    assert table.price_llm("acme", "plain", Usage(input_tokens=10, input_audio_tokens=5)) is None
    assert table.price_llm_detailed("acme", "plain", Usage(output_tokens=10, output_audio_tokens=5)) == Unpriced(
        "unpriced_bucket:output_audio_tokens"
    )
    assert table.price_llm_detailed("acme", "plain", Usage(input_tokens=10, web_search_requests=1)) == Unpriced(
        "unpriced_bucket:web_search_requests"
    )
    assert table.price_llm_detailed("acme", "plain", Usage(input_tokens=10, units=Decimal(2))) == Unpriced(
        "unpriced_bucket:units"
    )
    out_only = RateTable.from_toml('[llm."a:m"]\noutput_per_mtok = "1"\n')
    assert out_only.price_llm_detailed("a", "m", Usage(input_tokens=1, output_tokens=1)) == Unpriced(
        "unpriced_bucket:input_tokens"
    )
    # Zero counts of an unpriced bucket are fine.
    assert priced(table.price_llm_detailed("acme", "plain", Usage(input_tokens=10, input_audio_tokens=0))).amount


def test_inconsistent_usage_is_not_priced() -> None:
    assert FULL_TABLE.price_llm_detailed("acme", "full-model", Usage(input_tokens=10, cache_read_tokens=11)) == (
        Unpriced("inconsistent_usage:input_tokens")
    )
    assert FULL_TABLE.price_llm_detailed("acme", "full-model", Usage(output_tokens=1, reasoning_tokens=2)) == (
        Unpriced("inconsistent_usage:output_tokens")
    )


def test_empty_usage_costs_zero_only_when_a_rate_exists() -> None:
    price = priced(FULL_TABLE.price_llm_detailed("acme", "plain", Usage()))
    assert price.amount == 0
    assert FULL_TABLE.price_llm_detailed("acme", "unknown-model", Usage()) == Unpriced("unknown_model")


SNAPSHOTS = """
[llm."openai:gpt-4o"]
input_per_mtok = "2"
[llm."openai:gpt-4o-mini"]
input_per_mtok = "0.1"
[llm."anthropic:claude-sonnet-4-5"]
input_per_mtok = "2.5"
[llm."aws:anthropic.claude-3-5-sonnet"]
input_per_mtok = "2.75"
"""


def test_snapshot_prefix_matching() -> None:
    table = RateTable.from_toml(SNAPSHOTS)
    u = Usage(input_tokens=1_000_000)
    cases = {
        ("openai", "gpt-4o-mini-2024-07-18"): ("file:openai:gpt-4o-mini", "0.1"),
        ("openai", "gpt-4o-2024-08-06"): ("file:openai:gpt-4o", "2"),
        ("openai", "GPT-4o-Mini"): ("file:openai:gpt-4o-mini", "0.1"),
        ("anthropic", "claude-sonnet-4-5-20250929"): ("file:anthropic:claude-sonnet-4-5", "2.5"),
        ("anthropic", "claude-sonnet-4-5@20250929"): ("file:anthropic:claude-sonnet-4-5", "2.5"),
        ("aws", "anthropic.claude-3-5-sonnet-20240620-v1:0"): ("file:aws:anthropic.claude-3-5-sonnet", "2.75"),
    }
    for (provider, model), (rate_id, amount) in cases.items():
        price = priced(table.price_llm_detailed(provider, model, u))
        assert (price.rate_id, price.amount) == (rate_id, Decimal(amount)), model


def test_non_date_suffixes_do_not_match_a_file_prefix() -> None:
    table = RateTable.from_toml(SNAPSHOTS)
    u = Usage(input_tokens=1_000_000)
    # Not a snapshot of the file's gpt-4o-mini: the catalog (or nothing) prices these.
    for model in ("gpt-4o-mini-search-preview", "gpt-4o-minis", "gpt-4o-mini-2024"):
        result = table.price_llm_detailed("openai", model, u)
        assert not (isinstance(result, Price) and result.rate_id.startswith("file:")), model


def test_user_file_beats_catalog() -> None:
    table = RateTable.from_toml('[llm."openai:gpt-4o"]\ninput_per_mtok = "1"\noutput_per_mtok = "2"\n')
    u = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert priced(table.price_llm_detailed("openai", "gpt-4o", u)).amount == 3
    catalog = priced(RateTable.empty().price_llm_detailed("openai", "gpt-4o", u))
    assert catalog.rate_id.startswith("genai-prices:openai:gpt-4o")
    assert catalog.amount != 3


def test_unknown_model_and_provider() -> None:
    table = RateTable.empty()
    u = Usage(input_tokens=10)
    assert table.price_llm_detailed("openai", "definitely-not-a-model", u) == Unpriced("unknown_model")
    assert table.price_llm_detailed("no-such-provider", "gpt-4o", u) == Unpriced("unknown_model")
    assert table.price_llm("openai", "definitely-not-a-model", u) is None
    assert not table.has_llm("openai", "definitely-not-a-model")
    assert table.has_llm("openai", "gpt-4o")


HISTORY = """
[[llm."acme:dated"]]
effective_from = 2025-01-01
input_per_mtok = "1"
[[llm."acme:dated"]]
effective_from = 2026-01-01
input_per_mtok = "2"
[[llm."acme:dated"]]
effective_from = 2026-07-01
input_per_mtok = "3"
"""


def test_date_effective_switching(tmp_path: Path) -> None:
    table = table_from(tmp_path, HISTORY)
    u = Usage(input_tokens=1_000_000)
    utc = timezone.utc

    def at(when: datetime) -> Price | Unpriced:
        return table.price_llm_detailed("acme", "dated", u, at=when)

    assert at(datetime(2024, 12, 31, 23, 59, 59, tzinfo=utc)) == Unpriced("no_effective_rate")
    assert priced(at(datetime(2025, 1, 1, tzinfo=utc))).amount == 1
    assert priced(at(datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=utc))).amount == 1
    switched = priced(at(datetime(2026, 1, 1, tzinfo=utc)))
    assert (switched.amount, switched.rate_id) == (Decimal(2), "file:acme:dated@2026-01-01")
    assert priced(at(datetime(2026, 6, 30, 12))).amount == 2  # naive = UTC
    assert priced(at(datetime(2030, 1, 1, tzinfo=utc))).amount == 3
    # Dates are UTC days: 2025-12-31 20:00 in New York is already 2026-01-01 in UTC.
    new_york = timezone(timedelta(hours=-5))
    assert priced(at(datetime(2025, 12, 31, 20, 0, tzinfo=new_york))).amount == 2
    assert priced(at(datetime(2025, 12, 31, 18, 59, tzinfo=new_york))).amount == 1
    # No `at`: now, which is after every date here.
    assert priced(table.price_llm_detailed("acme", "dated", u)).amount == 3


def test_not_yet_effective_file_entry_falls_through_to_catalog() -> None:
    table = RateTable.from_toml('[llm."openai:gpt-4o"]\neffective_from = 2099-01-01\ninput_per_mtok = "1"\n')
    u = Usage(input_tokens=1_000_000)
    now = priced(table.price_llm_detailed("openai", "gpt-4o", u))
    assert now.rate_id.startswith("genai-prices:")
    future = priced(table.price_llm_detailed("openai", "gpt-4o", u, at=datetime(2099, 1, 2)))
    assert (future.amount, future.rate_id) == (Decimal(1), "file:openai:gpt-4o@2099-01-01")


def test_fx_converts_catalog_prices_only() -> None:
    eur = RateTable.from_toml('currency = "EUR"\n[fx]\nUSD = "0.92"\n[llm."acme:m"]\ninput_per_mtok = "1"\n')
    usd = RateTable.empty()
    u = Usage(input_tokens=123_456, output_tokens=7_890, cache_read_tokens=1_000)
    in_usd = priced(usd.price_llm_detailed("openai", "gpt-4o", u))
    in_eur = priced(eur.price_llm_detailed("openai", "gpt-4o", u))
    assert in_eur.currency == "EUR" and eur.currency == "EUR"
    assert in_eur.amount == in_usd.amount * Decimal("0.92")
    assert in_eur.rate_id == in_usd.rate_id + ";fx=USD:0.92"
    assert {k: v * Decimal("0.92") for k, v in in_usd.breakdown.items()} == dict(in_eur.breakdown)
    file_price = priced(eur.price_llm_detailed("acme", "m", Usage(input_tokens=1_000_000)))
    assert (file_price.amount, file_price.currency) == (Decimal(1), "EUR")


def test_no_fx_rate_leaves_catalog_prices_unpriced() -> None:
    table = RateTable.from_toml('currency = "EUR"\n')
    assert table.price_llm_detailed("openai", "gpt-4o", Usage(input_tokens=1)) == Unpriced("no_fx_rate")
    assert table.price_llm_detailed("openai", "gpt-4o", Usage(input_tokens=1), service_tier="flex") == Unpriced(
        "no_fx_rate"
    )
    assert table.has_llm("openai", "gpt-4o")


def test_amounts_are_exact_whatever_the_callers_decimal_context() -> None:
    u = Usage(input_tokens=1_234_567, output_tokens=891_011, cache_read_tokens=1_111)
    expected = priced(FULL_TABLE.price_llm_detailed("acme", "full-model", u)).amount
    with localcontext() as ctx:
        ctx.prec = 3
        assert priced(FULL_TABLE.price_llm_detailed("acme", "full-model", u)).amount == expected
        api = RateTable.from_toml('[api."a:b"]\nper_unit = "0.0079"\n').price_api("a", "b", units=123_457)
        assert api is not None and api.amount == Decimal("975.3103")


API = """
[api."clearbit:enrich"]
per_call = "0.10"
match = "https://company.clearbit.com/v2/companies/find"
method = "GET"
event_type = "cost.enrichment"

[api."twilio:sms"]
match = "https://api.twilio.com/2010-04-01/Accounts/*/Messages.json"
per_unit = "0.0079"
units = "$.num_segments"

[api."twilio:any"]
match = "https://api.twilio.com/2010-04-01/Accounts/*/*"
per_call = "0.001"

[api."acme:hybrid"]
per_call = "0.5"
per_unit = "0.25"
units = "header:X-Units"

[[api."acme:dated"]]
per_call = "1"
[[api."acme:dated"]]
effective_from = 2026-01-01
per_call = "2"

[compute."aws:gpu-inference"]
per_hour = "3.06"

[compute."modal:cpu"]
per_second = "0.0000131"
"""


def test_price_api_per_call_and_per_unit() -> None:
    table = RateTable.from_toml(API)
    call = table.price_api("clearbit", "enrich")
    assert call is not None
    assert (call.amount, call.rate_id, dict(call.breakdown)) == (
        Decimal("0.10"),
        "file:api:clearbit:enrich",
        {"per_call": Decimal("0.10")},
    )
    sms = table.price_api("twilio", "sms", units=3)
    assert sms is not None and sms.amount == Decimal("0.0237")
    assert table.price_api("twilio", "sms", units=Decimal("2.5")).amount == Decimal("0.01975")  # type: ignore[union-attr]
    assert table.price_api("twilio", "sms") is None  # per unit without a count: cannot price
    assert table.price_api("twilio", "sms", units=-1) is None
    hybrid = table.price_api("acme", "hybrid", units=4)
    assert hybrid is not None and hybrid.amount == Decimal("1.5")
    assert table.price_api("acme", "nothing") is None


def test_price_api_dates() -> None:
    table = RateTable.from_toml(API)
    assert table.price_api("acme", "dated", at=datetime(2025, 6, 1)).amount == 1  # type: ignore[union-attr]
    later = table.price_api("acme", "dated", at=datetime(2026, 6, 1))
    assert later is not None and (later.amount, later.rate_id) == (Decimal(2), "file:api:acme:dated@2026-01-01")


def test_price_compute_exact() -> None:
    table = RateTable.from_toml(API)
    gpu = table.price_compute("aws", "gpu-inference", seconds=Decimal("1.5"))
    assert gpu is not None
    assert gpu.amount == Decimal("0.001275")  # 3.06 * 1.5 / 3600, exactly
    assert gpu.rate_id == "file:compute:aws:gpu-inference"
    assert table.price_compute("aws", "gpu-inference", seconds=3600).amount == Decimal("3.06")  # type: ignore[union-attr]
    cpu = table.price_compute("modal", "cpu", seconds=100)
    assert cpu is not None and cpu.amount == Decimal("0.00131")
    assert table.price_compute("aws", "gpu-inference", seconds=Decimal("-1")) is None
    assert table.price_compute("aws", "nope", seconds=1) is None


def test_match_http() -> None:
    table = RateTable.from_toml(API)
    enrich = table.match_http("get", "https://COMPANY.clearbit.com/v2/companies/find?domain=x.com#frag")
    assert enrich is not None
    assert (enrich.provider, enrich.operation, enrich.event_type, enrich.method) == (
        "clearbit",
        "enrich",
        "cost.enrichment",
        "GET",
    )
    assert table.match_http("POST", "https://company.clearbit.com/v2/companies/find") is None  # method differs
    sms = table.match_http("POST", "https://api.twilio.com/2010-04-01/Accounts/AC42/Messages.json")
    assert sms is not None and (sms.operation, sms.units, sms.event_type) == ("sms", "$.num_segments", "cost.api")
    # The more general pattern catches the rest; `*` never spans a `/`.
    other = table.match_http("GET", "https://api.twilio.com/2010-04-01/Accounts/AC42/Calls.json")
    assert other is not None and other.operation == "any"
    assert table.match_http("GET", "https://api.twilio.com/2010-04-01/Accounts/AC42/x/Messages.json") is None
    assert table.match_http("GET", "https://api.twilio.com/2010-04-01/Accounts//Messages.json") is None
    assert table.match_http("GET", "https://company.clearbit.com/v2/companies/find/") is not None
    assert [r.operation for r in table.api_rates()] == ["enrich", "sms", "any"]


def test_concurrent_first_use_is_consistent() -> None:
    table = RateTable.from_toml(SNAPSHOTS + FULL)
    models = [
        ("openai", "gpt-4o-mini-2024-07-18"),
        ("openai", "gpt-4o"),
        ("openai", "o3"),
        ("anthropic", "claude-sonnet-4-5-20250929"),
        ("anthropic", "claude-haiku-4-5"),
        ("google", "gemini-2.5-pro"),
        ("acme", "full-model"),
        ("mistral", "mistral-large-latest"),
    ]
    u = Usage(input_tokens=300_000, output_tokens=2_000, cache_read_tokens=1_000)
    expected = {m: RateTable.from_toml(SNAPSHOTS + FULL).price_llm_detailed(*m, u) for m in models}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(50):
                for m in models:
                    for tier, batch in ((None, False), ("flex", False), (None, True)):
                        result = table.price_llm_detailed(*m, u, service_tier=tier, batch=batch)
                        if tier is None and not batch:
                            assert result == expected[m]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_plan_built_prices_are_ordinary_prices() -> None:
    # Plans fill Price's slots directly for speed; this pins the fields they fill.
    assert [f.name for f in dataclasses.fields(Price)] == ["amount", "currency", "rate_id", "breakdown"]
    price = priced(FULL_TABLE.price_llm_detailed("acme", "plain", Usage(input_tokens=7, output_tokens=3)))
    assert price == Price(price.amount, price.currency, price.rate_id, dict(price.breakdown))
    assert hash(price.rate_id) and repr(price).startswith("Price(amount=Decimal(")


@pytest.mark.parametrize(
    ("buckets", "field"),
    [
        ({"input_tokens": True}, "input_tokens"),
        ({"input_tokens": -1}, "input_tokens"),
        ({"output_tokens": 1.5}, "output_tokens"),
        ({"input_tokens": 5, "requests": -3}, "requests"),  # a bad count after good ones
        ({"reasoning_tokens": "7"}, "reasoning_tokens"),
    ],
)
def test_a_bad_count_is_refused_naming_its_bucket(buckets: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"Usage.{field} must be a non-negative int"):
        Usage(**buckets)  # type: ignore[arg-type]


def test_usage_keeps_set_buckets_in_field_order_and_knows_when_it_is_empty() -> None:
    class Count(enum.IntEnum):
        THREE = 3

    usage = Usage(output_tokens=0, input_tokens=Count.THREE, units=2)  # int subclasses and 0 are counts
    assert usage.as_dict() == {"input_tokens": 3, "output_tokens": 0, "units": Decimal(2)}
    assert list(usage.as_dict()) == ["input_tokens", "output_tokens", "units"]
    assert not usage.is_empty and Usage().is_empty and Usage().as_dict() == {}
