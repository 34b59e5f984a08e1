"""Management client: against the local server over real HTTP, and error mapping over httpx.MockTransport."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal

import httpx
import pytest

from paygentic_costs.client import (
    APIError,
    AsyncClient,
    AuthError,
    Client,
    NotFound,
    RateLimited,
    ValidationError,
)
from paygentic_costs.server import LocalServer

KEY = "sk_live_secret_value_123"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


def test_crud_summary_and_report_over_http(server: LocalServer) -> None:
    with Client(KEY, base_url=server.url) as client:
        made = client.create_cost(
            "Inference",
            event_type="cost.client",
            aggregation="SUM",
            value_property="$.amount",
            unit_cost=Decimal("0.00003"),
            currency="USD",
            product_id="prod_1",
            group_by={"model": "$.model"},
        )
        assert made.unit_cost == Decimal("0.00003") and made.group_by == {"model": "$.model"}
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}) as raw:
            for amount, model in [("0.1", "a"), ("0.2", "b"), ("0.3", "a")]:
                raw.post(
                    "/v0/events",
                    content=f'{{"type":"cost.client","source":"t","subject":"cus_1","data":{{"amount":{amount},'
                    f'"model":"{model}"}},"timestamp":"2025-01-01T10:00:00Z"}}',
                )
        start, end = datetime(2025, 1, 1), datetime(2025, 1, 2, tzinfo=timezone.utc)
        got = client.get_cost_summary(made.id, start, end, group_by=["model"], window="HOUR")
        assert got.total_quantity == Decimal("0.6") and got.total_cost == Decimal("0.000018")
        assert {g.dimensions["model"]: g.quantity for g in got.groups} == {"a": Decimal("0.4"), "b": Decimal("0.2")}
        assert [(w.window_start.hour, w.quantity) for w in got.time_series] == [(10, Decimal("0.6"))]
        filtered = client.get_cost_summary(made.id, start, end, filter_group_by={"model": "b"}, subject="cus_1")
        assert filtered.total_quantity == Decimal("0.2")

        report = client.get_cost_report(start, end, group_by="model", cost_ids=[made.id], top_n=1)
        assert [(g.key, g.total_quantity, g.is_other) for g in report.groups] == [
            ("a", Decimal("0.4"), False),
            ("__other__", Decimal("0.2"), True),
        ]
        assert report.available_dimensions == ("model",) and report.total_cost == Decimal("0.000018")

        updated = client.update_cost(made.id, name="Renamed", unit_cost="0.5", group_by=None)
        assert (updated.name, updated.unit_cost, updated.group_by) == ("Renamed", Decimal("0.5"), None)
        assert made.id in [c.id for c in client.list_costs(limit=100).data]
        client.delete_cost(made.id)
        with pytest.raises(NotFound) as missing:
            client.get_cost(made.id)
        assert missing.value.status_code == 404
        with pytest.raises(ValidationError) as invalid:
            client.create_cost("bad", event_type="e", aggregation="SUM", unit_cost=-1, currency="USD", product_id="p")
        assert {e.field for e in invalid.value.errors} >= {"unitCost"}


async def test_async_client_over_http(server: LocalServer) -> None:
    async with AsyncClient(KEY, base_url=server.url + "/") as client:
        made = await client.create_cost(
            "Requests", event_type="req", aggregation="COUNT", unit_cost=1, currency="EUR", product_id="p"
        )
        assert (await client.get_cost(made.id)).currency == "EUR"
        page = await client.list_costs(product_id="p", limit=100)
        assert made.id in [c.id for c in page.data]
        summary = await client.get_cost_summary(made.id, "2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z")
        assert summary.total_cost == 0
        await client.delete_cost(made.id)
        with pytest.raises(NotFound):
            await client.update_cost(made.id, unit=None)


def _answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> httpx.MockTransport:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=body, headers={"content-type": "application/json", **(headers or {})})

    transport = httpx.MockTransport(handler)
    transport.seen = seen  # type: ignore[attr-defined]
    return transport


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after"),
    [
        (429, {"Retry-After": "2.5"}, RateLimited, 2.5),
        (429, {}, RateLimited, None),
        (503, {"Retry-After": "7"}, RateLimited, 7.0),
        (503, {}, APIError, None),
        (401, {}, AuthError, None),
        (403, {}, AuthError, None),
        (404, {}, NotFound, None),
        (422, {}, ValidationError, None),
        (500, {}, APIError, None),
    ],
)
def test_error_statuses_map_to_typed_errors(
    status: int, headers: dict[str, str], error: type[APIError], retry_after: float | None
) -> None:
    transport = _answer(status, b'{"message":"nope","error":"x"}', headers)
    with Client(KEY, base_url="https://api.example", transport=transport) as client, pytest.raises(error) as raised:
        client.get_cost("cst_1")
    assert type(raised.value) is error
    assert raised.value.status_code == status and raised.value.message == "nope" and raised.value.code == "x"
    if isinstance(raised.value, RateLimited):
        assert raised.value.retry_after == retry_after


def test_requests_carry_bearer_and_exact_numbers_and_the_key_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    transport = _answer(400, b'{"message":"bad","errors":[{"field":"unitCost","message":"must be >= 0"}]}')
    caplog.set_level(logging.DEBUG)
    client = Client(KEY, base_url="https://api.example/prefix/", transport=transport)
    with pytest.raises(ValidationError) as raised:
        client.create_cost(
            "n",
            event_type="e",
            aggregation="SUM",
            unit_cost=Decimal("0.1000000000000000000001"),
            currency="USD",
            product_id="p",
            value_property="$.amount",
        )
    request = transport.seen[0]  # type: ignore[attr-defined]
    assert str(request.url) == "https://api.example/prefix/v0/costs"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert b'"unitCost":0.1000000000000000000001,' in request.content
    assert raised.value.errors[0].field == "unitCost"
    for text in (repr(client), str(raised.value), repr(raised.value), repr(raised.value.body), caplog.text):
        assert KEY not in text
    client.close()


def test_update_sends_only_what_changed_and_null_to_clear() -> None:
    cost = (
        b'{"id":"c","type":"metered","name":"n","currency":"USD","unitCost":"1","productId":"p",'
        b'"merchantId":"m","createdAt":"2025-01-01T00:00:00Z","updatedAt":"2025-01-01T00:00:00Z"}'
    )
    transport = _answer(200, cost)
    with Client(KEY, transport=transport) as client:
        assert client.base_url == "https://api.paygentic.io"
        client.update_cost("c", unit=None, name="x")
        client.update_cost("c")
        with pytest.raises(ValueError, match="name"):
            client.update_cost("c", name=None)  # type: ignore[arg-type]
    bodies = [r.content for r in transport.seen]  # type: ignore[attr-defined]
    assert bodies == [b'{"name":"x","unit":null}', b"{}"]


def test_report_query_uses_the_apis_names_and_defaults() -> None:
    report = (
        b'{"currency":"USD","period":{"from":"2025-01-01T00:00:00Z","to":"2025-02-01T00:00:00Z"},"groupBy":"cost",'
        b'"totalCost":0,"totalQuantity":0,"groups":[],"timeSeries":[],"availableDimensions":[],'
        b'"pagination":{"total":0,"limit":25,"offset":0}}'
    )
    transport = _answer(200, report)
    with Client(KEY, transport=transport) as client:
        client.get_cost_report(
            datetime(2025, 1, 1, tzinfo=timezone.utc),
            "2025-02-01T00:00:00Z",
            cost_ids=["a", "b"],
            filter_group_by={"region": "us east"},
        )
    query = transport.seen[0].url.params  # type: ignore[attr-defined]
    assert query.get_list("costId") == ["a", "b"]
    assert query["from"] == "2025-01-01T00:00:00Z" and query["filterGroupBy"] == '{"region":"us east"}'
    assert (query["topN"], query["sort"], query["sortDir"], query["limit"]) == ("9", "totalCost", "desc", "25")


def test_injected_http_client_is_used_and_left_open() -> None:
    transport = _answer(204)
    http = httpx.Client(transport=transport)
    with Client(KEY, http_client=http) as client:
        assert client.delete_cost("c") is None
    assert not http.is_closed
    http.close()
    with pytest.raises(ValueError):
        Client("")
