"""Local server behaviour the API documents: auth and isolation, validation, dedup, soft delete, exact money."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import pytest

from paygentic_costs.server import LocalServer


class Clock:
    """A settable clock for the 24 h idempotency window."""

    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def server(clock: Clock) -> Iterator[LocalServer]:
    with LocalServer(clock=clock) as running:
        yield running


@pytest.fixture
def token() -> str:
    return f"sk_{uuid.uuid4().hex}"


@pytest.fixture
def http(server: LocalServer, token: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        yield client


def body(response: httpx.Response) -> Any:
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return json.loads(response.text, parse_float=Decimal)


def cost(http: httpx.Client, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type": "metered",
        "name": "Inference",
        "unitCost": 1,
        "currency": "USD",
        "productId": "prod_1",
        "aggregation": "SUM",
        "eventType": "cost.ai.inference",
        "valueProperty": "$.amount",
        "groupBy": {"provider": "$.provider"},
    }
    fields.update(overrides)
    response = http.post("/v0/costs", json=fields)
    assert response.status_code == 201, response.text
    return dict(body(response))


def event(http: httpx.Client, raw: str) -> httpx.Response:
    return http.post("/v0/events", content=raw.encode(), headers={"content-type": "application/json"})


def summary(http: httpx.Client, cost_id: str, **params: str) -> dict[str, Any]:
    params.setdefault("from", "2025-01-01T00:00:00Z")
    params.setdefault("to", "2026-01-01T00:00:00Z")
    response = http.get(f"/v0/costs/{cost_id}/summary", params=params)
    assert response.status_code == 200, response.text
    return dict(body(response))


def test_every_request_needs_a_bearer_token(server: LocalServer) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        for method, path in [("GET", "/v0/costs"), ("POST", "/v0/events"), ("GET", "/v0/costs/report")]:
            response = anonymous.request(method, path)
            assert response.status_code == 401
            assert isinstance(body(response)["message"], str)


def test_each_token_is_its_own_organisation(server: LocalServer, http: httpx.Client) -> None:
    mine = cost(http)
    with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer someone-else"}) as other:
        assert other.get(f"/v0/costs/{mine['id']}").status_code == 404
        assert mine["id"] not in [c["id"] for c in other.get("/v0/costs").json()["data"]]
        assert other.delete(f"/v0/costs/{mine['id']}").status_code == 404
    assert http.get(f"/v0/costs/{mine['id']}").status_code == 200


def test_sum_of_a_tenth_ten_thousand_times_is_exactly_one_thousand(server: LocalServer, token: str) -> None:
    # 10,000 HTTP requests would dominate the suite; the store's ingest is the same code the route calls.
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as http:
        made = cost(http, unitCost=3e-05)
        event(http, '{"type":"cost.ai.inference","source":"t","subject":"c","data":{"amount":0.1}}')
        org = http.get("/_local/events").json()["data"][0]["namespace"]
    store = server.app.state.store
    for _ in range(9_999):
        store.ingest(
            org,
            type="cost.ai.inference",
            source="t",
            subject="c",
            external_subject=None,
            ts_us=1_740_830_400_000_000,
            idempotency_key=None,
            external_id=None,
            namespace=org,
            data={"amount": Decimal("0.1")},
            now_us=1_740_830_400_000_000,
        )
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as http:
        response = http.get(
            f"/v0/costs/{made['id']}/summary", params={"from": "2025-01-01T00:00:00", "to": "2100-01-01T00:00:00Z"}
        )
    assert '"totalQuantity":1000.0,' in response.text
    assert body(response)["totalCost"] == Decimal("0.03")


def test_ingest_answers_202_with_the_event_and_echoes_the_key(http: httpx.Client) -> None:
    response = event(
        http,
        '{"type":"llm.cost","source":"my-app","subject":"cus_abc123","data":{"tokens":1500,"amount":1e-07},'
        '"timestamp":"2025-03-01T12:30:00.500000+02:00","idempotencyKey":"evt-0001"}',
    )
    assert response.status_code == 202
    got = body(response)
    assert got["object"] == "event" and got["idempotencyKey"] == "evt-0001" and got["subject"] == "cus_abc123"
    assert got["timestamp"] == "2025-03-01T10:30:00.500000Z"
    assert None not in got.values()
    external = body(event(http, '{"type":"llm.cost","source":"a","externalSubject":"user-42","data":{}}'))
    assert "subject" not in external and external["idempotencyKey"]  # a key is generated and kept


def test_idempotency_key_dedups_for_24_hours_per_organisation(
    server: LocalServer, http: httpx.Client, clock: Clock
) -> None:
    made = cost(http, eventType="dedup")
    raw = (
        '{"type":"dedup","source":"a","subject":"c","data":{"amount":5},'
        '"timestamp":"2025-03-01T00:00:00Z","idempotencyKey":"job-1"}'
    )
    first = body(event(http, raw))
    clock.now += timedelta(hours=23, minutes=59)
    assert body(event(http, raw.replace('"amount":5', '"amount":7')))["id"] == first["id"]
    assert summary(http, made["id"])["totalQuantity"] == 5
    with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer other-org"}) as other:
        assert other.post("/v0/events", content=raw).json()["id"] != first["id"]  # keys are per organisation
    clock.now += timedelta(minutes=2)  # past 24 h: the key counts again
    event(http, raw)
    assert summary(http, made["id"])["totalQuantity"] == 10
    deliveries = [e["deliveries"] for e in http.get("/_local/events").json()["data"] if e["type"] == "dedup"]
    assert deliveries == [2, 1]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ('{"type":"x","source":"a","data":{}}', "subject"),
        ('{"type":"x","source":"a","subject":"c","data":[1]}', "data"),
        ('{"type":"x\\n","source":"a","subject":"c","data":{}}', "type"),
        ('{"type":"x","source":"a","subject":"c","data":{},"timestamp":"yesterday"}', "timestamp"),
        ('{"type":"x","source":"a","subject":"c","data":{},"externalId":"a b"}', "externalId"),
        ('{"type":"x","source":"a","subject":"c","data":{"amount":NaN}}', "body"),
        ("not json", "body"),
        ("[]", "body"),
    ],
)
def test_invalid_events_get_the_apis_400(http: httpx.Client, payload: str, field: str) -> None:
    response = event(http, payload)
    assert response.status_code == 400
    got = body(response)
    assert isinstance(got["message"], str)
    assert field in [e["field"] for e in got["errors"]]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"unitCost": -1}, "unitCost"),
        ({"valueProperty": "amount"}, "valueProperty"),
        ({"valueProperty": None}, "valueProperty"),
        ({"aggregation": "P95"}, "aggregation"),
        ({"groupBy": {"region": "region"}}, "groupBy.region"),
        ({"currency": "dollars"}, "currency"),
        ({"type": "flat"}, "type"),
        ({"eventType": "a\u0007b"}, "eventType"),
    ],
)
def test_invalid_costs_get_the_apis_400(http: httpx.Client, overrides: dict[str, Any], field: str) -> None:
    fields = {"type": "metered", "name": "n", "unitCost": 1, "currency": "USD", "productId": "p"}
    fields |= {"aggregation": "SUM", "eventType": "e", "valueProperty": "$.amount"}
    fields |= overrides
    response = http.post("/v0/costs", json={k: v for k, v in fields.items() if v is not None})
    assert response.status_code == 400, response.text
    assert any(e["field"].startswith(field.split(".")[0]) for e in body(response)["errors"])


def test_cost_round_trip_keeps_unit_cost_digits_as_a_string(http: httpx.Client) -> None:
    made = cost(http, unitCost=1e-07)
    assert made["unitCost"] == "0.0000001"
    assert made["merchantId"].startswith("org_") and made["deletedAt"] is None
    assert made["createdAt"].endswith("Z")


def test_update_semantics_absent_keeps_null_clears(http: httpx.Client) -> None:
    made = cost(http, unit="token")
    unchanged = body(http.patch(f"/v0/costs/{made['id']}", json={}))
    assert unchanged["unit"] == "token" and unchanged["name"] == made["name"]
    renamed = body(http.patch(f"/v0/costs/{made['id']}", content=b'{"name":"New","unitCost":0.5}'))
    assert (renamed["name"], renamed["unitCost"]) == ("New", "0.5")
    cleared = body(
        http.patch(
            f"/v0/costs/{made['id']}",
            json={"unit": None, "aggregation": None, "eventType": None, "valueProperty": None, "groupBy": None},
        )
    )
    assert [cleared[k] for k in ("unit", "aggregation", "eventType", "valueProperty", "groupBy")] == [None] * 5
    assert summary(http, made["id"])["totalCost"] is None  # nothing left to compute usage with
    assert http.patch(f"/v0/costs/{made['id']}", json={"name": None}).status_code == 400
    assert http.patch(f"/v0/costs/{made['id']}", json={"aggregation": "MAX"}).status_code == 400  # needs a path


def test_soft_delete_hides_the_cost_but_keeps_history(http: httpx.Client) -> None:
    made = cost(http, eventType="history")
    event(http, '{"type":"history","source":"a","subject":"c","data":{"amount":2},"timestamp":"2025-02-01T00:00:00Z"}')
    deleted = http.delete(f"/v0/costs/{made['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert http.get(f"/v0/costs/{made['id']}").status_code == 404
    assert http.patch(f"/v0/costs/{made['id']}", json={}).status_code == 404
    assert http.delete(f"/v0/costs/{made['id']}").status_code == 404
    assert made["id"] not in [c["id"] for c in http.get("/v0/costs", params={"limit": 100}).json()["data"]]
    again = cost(http, eventType="history")  # the events were kept: a new cost sees them
    assert summary(http, again["id"])["totalQuantity"] == 2


def test_list_pagination_and_product_filter(http: httpx.Client) -> None:
    ids = [cost(http, productId="prod_a" if i % 2 else "prod_b", name=f"c{i}")["id"] for i in range(5)]
    page = body(http.get("/v0/costs", params={"limit": 2, "offset": 1}))
    assert page["object"] == "list" and page["pagination"] == {"limit": 2, "offset": 1, "total": 5}
    assert [c["id"] for c in page["data"]] == ids[1:3]
    only_a = body(http.get("/v0/costs", params={"productId": "prod_a", "limit": 10, "offset": 0}))
    assert [c["id"] for c in only_a["data"]] == [ids[1], ids[3]]
    assert http.get("/v0/costs", params={"limit": "many"}).status_code == 400


def test_summary_validation(http: httpx.Client) -> None:
    made = cost(http)
    url = f"/v0/costs/{made['id']}/summary"
    period = {"from": "2025-01-02T00:00:00Z", "to": "2025-01-01T00:00:00Z"}
    assert http.get(url, params=period).status_code == 400  # from must be before to
    assert http.get(url, params={"from": "2025-01-01T00:00:00Z"}).status_code == 400
    ok = {"from": "2025-01-01T00:00:00Z", "to": "2025-02-01T00:00:00Z"}
    assert http.get(url, params={**ok, "groupBy": "nope"}).status_code == 400
    assert http.get(url, params={**ok, "filterGroupBy": '{"nope":"x"}'}).status_code == 400
    assert http.get(url, params={**ok, "filterGroupBy": "{bad"}).status_code == 400
    assert http.get(url, params={**ok, "window": "WEEK"}).status_code == 400
    assert http.get(url, params={**ok, "subject": "", "groupBy": ""}).status_code == 200  # empty = absent
    assert http.get("/v0/costs/missing/summary", params=ok).status_code == 404


def test_filter_values_with_spaces_survive_form_encoding(http: httpx.Client) -> None:
    made = cost(http, eventType="spaces")
    event(http, '{"type":"spaces","source":"a","subject":"c","data":{"amount":3,"provider":"gpt 4"}}')
    event(http, '{"type":"spaces","source":"a","subject":"c","data":{"amount":4,"provider":"other"}}')
    url = f"/v0/costs/{made['id']}/summary?from=2025-01-01T00%3A00%3A00Z&to=2100-01-01T00%3A00%3A00Z"
    got = body(http.get(url + "&filterGroupBy=%7B%22provider%22%3A+%22gpt+4%22%7D"))
    assert got["totalQuantity"] == 3


def test_report_top_n_other_dimension_and_prior_period(http: httpx.Client) -> None:
    made = cost(http, eventType="rep")
    for provider, amount, day in [("a", 5, 10), ("b", 3, 10), ("c", 1, 11), ("d", 1, 11), ("a", 2, 1)]:
        event(
            http,
            f'{{"type":"rep","source":"s","subject":"cus_{provider}","data":{{"amount":{amount},'
            f'"provider":"{provider}"}},"timestamp":"2025-01-{day:02d}T00:00:00Z"}}',
        )
    params = [("from", "2025-01-08T00:00:00Z"), ("to", "2025-01-15T00:00:00Z"), ("groupBy", "provider")]
    params += [("costId", made["id"]), ("topN", "2"), ("comparePriorPeriod", "true"), ("windowSize", "DAY")]
    got = body(http.get("/v0/costs/report", params=params))
    assert [(g["key"], g["totalCost"], g["isOther"]) for g in got["groups"]] == [
        ("a", 5, False),
        ("b", 3, False),
        ("__other__", 2, True),
    ]
    assert got["groups"][0]["priorPeriod"] == {"cost": 2, "changePercent": 150}
    assert got["groups"][1]["priorPeriod"] == {"cost": 0, "changePercent": None}
    assert got["totalCost"] == 10 and got["availableDimensions"] == ["provider"]
    assert got["groups"][0]["percentOfTotal"] == 50
    assert got["timeSeries"] == [
        {"windowStart": "2025-01-10T00:00:00Z", "windowEnd": "2025-01-11T00:00:00Z", "groups": {"a": 5, "b": 3}},
        {"windowStart": "2025-01-11T00:00:00Z", "windowEnd": "2025-01-12T00:00:00Z", "groups": {"__other__": 2}},
    ]
    # A dimension needs exactly one cost; an unknown cost id is a 400.
    bad = [("from", "2025-01-08T00:00:00Z"), ("to", "2025-01-15T00:00:00Z"), ("groupBy", "provider")]
    assert http.get("/v0/costs/report", params=bad).status_code == 400
    assert http.get("/v0/costs/report", params=[*bad[:2], ("groupBy", "cost"), ("costId", "nope")]).status_code == 400


def test_report_empty_groups_and_cost_range(http: httpx.Client) -> None:
    first = cost(http, eventType="used", name="used")
    cost(http, eventType="idle", name="idle")
    event(http, '{"type":"used","source":"s","subject":"c","data":{"amount":1},"timestamp":"2024-06-01T00:00:00Z"}')
    params = {"from": "2025-01-01T00:00:00Z", "to": "2025-02-01T00:00:00Z", "groupBy": "cost"}
    empty = body(http.get("/v0/costs/report", params=params))
    assert empty["totalCost"] == 0 and empty["costRange"] == {
        "from": "2024-06-01T00:00:00Z",
        "to": "2024-06-01T00:00:00Z",
    }
    assert len(empty["groups"]) == 2 and empty["groupCount"] == 2
    excluded = body(http.get("/v0/costs/report", params={**params, "excludeEmpty": "true"}))
    assert excluded["groups"] == [] and excluded["emptyGroupCount"] == 2 and excluded["pagination"]["total"] == 0
    later = body(http.get("/v0/costs/report", params={**params, "from": "2024-01-01T00:00:00Z"}))
    assert later["groups"][0]["key"] == first["id"] and "costRange" not in later
