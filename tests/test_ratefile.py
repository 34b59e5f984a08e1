"""Rate-file parsing: the architecture.md §5 shape, price histories, and clear errors for bad files."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from paygentic_costs._errors import ConfigurationError
from paygentic_costs.pricing import ApiRate, RateTable, Usage

ARCHITECTURE_EXAMPLE = """
currency = "USD"
[llm."openai:gpt-4o-mini"]          # provider:model; also matches dated snapshots (gpt-4o-mini-2024-07-18)
input_per_mtok = "0.15"             # per million tokens
output_per_mtok = "0.60"
cache_read_per_mtok = "0.075"
[api."clearbit:enrich"]             # provider:operation
per_call = "0.10"
match = "https://company.clearbit.com/v2/companies/find"
method = "GET"
[api."twilio:sms"]
match = "https://api.twilio.com/2010-04-01/Accounts/*/Messages.json"
per_unit = "0.0079"
units = "$.num_segments"
[api."aws:textract.AnalyzeDocument"]
per_unit = "0.015"
[compute."aws:gpu-inference"]
per_hour = "3.06"
[fx]
USD = "0.92"
"""


def write(tmp_path: Path, text: str, name: str = "rates.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_architecture_example_loads(tmp_path: Path) -> None:
    table = RateTable.from_file(write(tmp_path, ARCHITECTURE_EXAMPLE))
    assert table.currency == "USD"
    assert table.has_llm("openai", "gpt-4o-mini")
    price = table.price_llm("openai", "gpt-4o-mini", Usage(input_tokens=1_000_000, output_tokens=1_000_000))
    assert price is not None
    assert price.amount == Decimal("0.75")
    assert price.rate_id == "file:openai:gpt-4o-mini"
    sms = table.match_http("POST", "https://api.twilio.com/2010-04-01/Accounts/AC123/Messages.json")
    assert sms == ApiRate("twilio", "sms", "cost.api", "$.num_segments", None, sms.match if sms else None)
    assert table.price_api("aws", "textract.AnalyzeDocument", units=3) is not None
    assert table.price_compute("aws", "gpu-inference", seconds=3600) is not None


def test_load_accepts_every_documented_input(tmp_path: Path) -> None:
    path = write(tmp_path, ARCHITECTURE_EXAMPLE)
    assert RateTable.load(None).currency == "USD"
    assert RateTable.load(str(path)).has_llm("openai", "gpt-4o-mini")
    assert RateTable.load(path).has_llm("openai", "gpt-4o-mini")
    table = RateTable.from_toml(ARCHITECTURE_EXAMPLE)
    assert RateTable.load(table) is table
    mapping = {"currency": "EUR", "llm": {"openai:x-model": {"input_per_mtok": "1"}}, "fx": {"USD": "0.9"}}
    assert RateTable.load(mapping).currency == "EUR"
    with pytest.raises(ConfigurationError, match="expected a path, a mapping or a RateTable"):
        RateTable.load(42)  # type: ignore[arg-type]


def test_empty_table_is_usd_catalog_only() -> None:
    table = RateTable.empty()
    assert table.currency == "USD"
    assert table.match_http("GET", "https://example.com/") is None
    assert table.price_api("clearbit", "enrich") is None
    assert table.price_compute("aws", "gpu", seconds=1) is None


def test_price_history_as_array_of_tables(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[llm."openai:gpt-4o"]]
        input_per_mtok = "2.50"
        output_per_mtok = "10"
        [[llm."openai:gpt-4o"]]
        effective_from = 2026-01-01
        input_per_mtok = "2"
        output_per_mtok = "8"
        """,
    )
    assert RateTable.from_file(path).has_llm("openai", "gpt-4o")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[llm."openai:m"]\ninput_per_mtok = "1"\nsurprise = "1"\n', "unknown field 'surprise'"),
        ('[llm."openai:m"]\ninput_per_mtok = "abc"\n', "input_per_mtok: 'abc' is not a decimal number"),
        ('[llm."openai:m"]\ninput_per_mtok = "-1"\n', "input_per_mtok: negative price '-1'"),
        ('[llm."openai:m"]\ninput_per_mtok = 0.15\n', "write prices as strings"),
        ('[llm."openai:m"]\ninput_per_mtok = "NaN"\n', "not a finite number"),
        ('[llm."openai:m"]\ninput_per_mtok = true\n', "expected a decimal string"),
        ('[llm."openai:m"]\ninput_per_mtok = "1"\neffective_from = "soon"\n', "effective_from: bad date 'soon'"),
        ('[llm."openai:m"]\ninput_per_mtok = "1"\neffective_from = 2026-01-01T10:00:00Z\n', "not a time"),
        ('[llm."openai:m"]\neffective_from = 2026-01-01\n', "no price given"),
        ('[llm."gpt-4o"]\ninput_per_mtok = "1"\n', 'the key must be "provider:name"'),
        ('[api."x:y"]\nper_call = "1"\nmatch = "ftp://x/y"\n', "match: bad pattern 'ftp://x/y'"),
        ('[api."x:y"]\nper_call = "1"\nmatch = "https://x/y?a=1"\n', "query string"),
        ('[api."x:y"]\nper_call = "1"\nmatch = "https://x/**"\n', "'**' is not supported"),
        ('[api."x:y"]\nmatch = "https://x/y"\n', "give per_call or per_unit"),
        ('[api."x:y"]\nper_unit = "1"\nunits = "num_segments"\n', 'units: expected "$.json.path" or "header:NAME"'),
        ('[api."x:y"]\nper_call = "1"\nmethod = "GET /"\n', "method: expected an HTTP method"),
        ('[compute."x:y"]\nper_hour = "1"\nper_second = "1"\n', "give exactly one of per_hour or per_second"),
        ('[compute."x:y"]\n', "give exactly one of per_hour or per_second"),
        ('[fx]\nEUR = "1.1"\n', "only USD"),
        ('[fx]\nUSD = "0"\n', "must be greater than zero"),
        ('currency = "euro"\n', "currency: expected a 3-letter ISO code"),
        ('prices = "x"\n', "unknown top-level key 'prices'"),
        ('llm = "x"\n', "[llm] expected a table"),
        ('llm = { "openai:m" = "1" }\n', "expected a table or a non-empty array of tables"),
        (
            '[[llm."openai:m"]]\ninput_per_mtok = "1"\n[[llm."openai:m"]]\ninput_per_mtok = "2"\n',
            "two prices with the same effective_from (no effective_from)",
        ),
        (
            '[[api."x:y"]]\nper_call = "1"\nmatch = "https://a/b"\n'
            '[[api."x:y"]]\nper_call = "2"\nmatch = "https://a/c"\neffective_from = 2026-01-01\n',
            "match: differs between entries of the price history",
        ),
        ('[llm."openai:M"]\ninput_per_mtok = "1"\n[llm."openai:m"]\ninput_per_mtok = "2"\n', "same provider:model"),
    ],
)
def test_bad_files_name_file_table_and_problem(tmp_path: Path, body: str, expected: str) -> None:
    path = write(tmp_path, body, "bad-rates.toml")
    with pytest.raises(ConfigurationError) as info:
        RateTable.from_file(path)
    message = str(info.value)
    assert message.startswith(str(path) + ": ")
    assert expected in message
    if body.startswith("["):
        table_key = body.split("]")[0].lstrip("[")
        assert f"[{table_key}]" in message


def test_float_price_error_says_how_to_fix_it(tmp_path: Path) -> None:
    path = write(tmp_path, '[llm."openai:m"]\noutput_per_mtok = 0.6\n')
    with pytest.raises(ConfigurationError) as info:
        RateTable.from_file(path)
    assert str(info.value) == (
        f'{path}: [llm."openai:m"] output_per_mtok: write prices as strings, e.g. output_per_mtok = "0.6" '
        "(floats lose digits)"
    )


def test_int_prices_are_accepted(tmp_path: Path) -> None:
    table = RateTable.from_file(write(tmp_path, '[llm."openai:m"]\ninput_per_mtok = 3\noutput_per_mtok = 15\n'))
    price = table.price_llm("openai", "m", Usage(input_tokens=2, output_tokens=1))
    assert price is not None and price.amount == Decimal("0.000021")


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[llm.\n")
    with pytest.raises(ConfigurationError, match=r"rates\.toml: not valid TOML"):
        RateTable.from_file(path)
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigurationError, match=r"nope\.toml: cannot read rate file"):
        RateTable.from_file(missing)
    with pytest.raises(ConfigurationError, match="<toml>: not valid TOML"):
        RateTable.from_toml("a = ")


def test_mapping_errors_name_the_source() -> None:
    with pytest.raises(ConfigurationError, match=r'^<mapping>: \[llm."openai:m"\] input_per_mtok: negative price'):
        RateTable.from_mapping({"llm": {"openai:m": {"input_per_mtok": "-0.1"}}})
    with pytest.raises(ConfigurationError, match=r"^settings: \[fx\]"):
        RateTable.from_mapping({"fx": {"GBP": "1"}}, source="settings")


def test_mapping_accepts_iso_date_strings() -> None:
    table = RateTable.from_mapping(
        {"llm": {"openai:m": [{"input_per_mtok": "1"}, {"input_per_mtok": "2", "effective_from": "2026-01-01"}]}}
    )
    assert table.has_llm("openai", "m")
