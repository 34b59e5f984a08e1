"""The local server's summary and report against a plain-Python reference, over generated events (real HTTP)."""

from __future__ import annotations

import json
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Context, Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paygentic_costs.server import LocalServer

BASE = datetime(2025, 1, 1, tzinfo=timezone.utc)
AGGREGATIONS = ["SUM", "COUNT", "AVG", "MIN", "MAX", "UNIQUE_COUNT", "LATEST"]
WIDTH = {"MINUTE": timedelta(minutes=1), "HOUR": timedelta(hours=1), "DAY": timedelta(days=1)}
DIMS = {"model": "$.model", "region": "$.meta.region"}
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


@pytest.fixture(scope="module")
def http(server: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def number(value: Any) -> Decimal:
    return Decimal(str(value)) if not isinstance(value, Decimal) else value


# -- the reference: what the API documents, written as plainly as possible ----------------------------------------


def ref_quantity(aggregation: str, events: list[dict[str, Any]]) -> Decimal:
    ordered = sorted(events, key=lambda e: e["at"])  # stable: arrival order breaks ties
    values = [e["data"].get("amount") for e in ordered]
    if aggregation == "COUNT":
        return Decimal(len(ordered))
    if aggregation == "UNIQUE_COUNT":
        return Decimal(len({Decimal(v).normalize() if not isinstance(v, str) else v for v in values if v is not None}))
    numbers = [Decimal(v) for v in values if v is not None and not isinstance(v, str)]
    if not numbers:
        return Decimal(0)
    return {
        "SUM": lambda: sum(numbers, Decimal(0)),
        "AVG": lambda: Context(prec=34).divide(sum(numbers, Decimal(0)), Decimal(len(numbers))),
        "MIN": lambda: min(numbers),
        "MAX": lambda: max(numbers),
        "LATEST": lambda: numbers[-1],
    }[aggregation]()


def times(a: Decimal, b: Decimal) -> Decimal:
    return Context(prec=200).multiply(a, b)  # cost = quantity x unitCost, never rounded


def dim(event: dict[str, Any], name: str) -> str:
    if name == "model":
        return event["data"].get("model", "")
    return event["data"].get("meta", {}).get("region", "")


def ref_select(
    events: list[dict[str, Any]], start: datetime, end: datetime, subject: str | None, filters: dict[str, str]
) -> list[dict[str, Any]]:
    seen: set[str] = set()
    kept = []
    for event in events:  # first delivery of a key wins; later ones are duplicates
        if event["key"] in seen:
            continue
        seen.add(event["key"])
        if not (start <= event["at"] < end):
            continue
        if subject is not None and event["customer"] != subject:
            continue
        if any(dim(event, k) != v for k, v in filters.items()):
            continue
        kept.append(event)
    return kept


def floor(moment: datetime, window: str) -> datetime:
    width = WIDTH[window]
    return BASE + ((moment - BASE) // width) * width


# -- strategies ----------------------------------------------------------------------------------------------------

amounts = st.one_of(
    st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False),
    st.integers(min_value=0, max_value=50),
    st.sampled_from(["n/a", None]),
)


@st.composite
def event_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    events = []
    for _ in range(draw(st.integers(min_value=0, max_value=10))):
        data: dict[str, Any] = {}
        amount = draw(amounts)
        if amount is not None:
            data["amount"] = amount
        model = draw(st.sampled_from(["gpt", "claude", None]))
        if model is not None:
            data["model"] = model
        region = draw(st.sampled_from(["us", "eu", None]))
        if region is not None:
            data["meta"] = {"region": region}
        customer = draw(st.sampled_from(["cus_a", "cus_b", "ext_c"]))
        minutes = draw(st.integers(min_value=0, max_value=3 * 24 * 60))
        seconds = draw(st.sampled_from([0, 0, 1, 59]))
        events.append(
            {
                "at": BASE + timedelta(minutes=minutes, seconds=seconds),
                "customer": customer,
                "key": f"k{draw(st.integers(min_value=0, max_value=40))}",
                "data": data,
            }
        )
    return events


def ingest(http: httpx.Client, token: str, events: list[dict[str, Any]], event_type: str) -> None:
    for event in events:
        body = event_body(event, event_type)
        response = http.post("/v0/events", content=body, headers=auth(token))
        assert response.status_code == 202, response.text


def event_body(event: dict[str, Any], event_type: str) -> bytes:
    body: dict[str, Any] = {"type": event_type, "source": "tests", "timestamp": stamp(event["at"])}
    body["externalSubject" if event["customer"].startswith("ext_") else "subject"] = event["customer"]
    body["idempotencyKey"] = event["key"]
    data = dict(event["data"])
    raw_amount = data.pop("amount", None) if not isinstance(data.get("amount"), str) else None
    text = json.dumps({**body, "data": data})
    if raw_amount is not None:  # splice the number in as written: Decimal digits must reach the server unchanged
        text = text[:-2] + (", " if data else "") + f'"amount": {raw_amount}' + "}}"
    return text.encode()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_cost(http: httpx.Client, token: str, aggregation: str, unit_cost: str, event_type: str) -> str:
    body = (
        f'{{"type":"metered","name":"c","unitCost":{unit_cost},"currency":"USD","productId":"p",'
        f'"aggregation":"{aggregation}","eventType":"{event_type}","valueProperty":"$.amount",'
        f'"groupBy":{json.dumps(DIMS)}}}'
    )
    response = http.post("/v0/costs", content=body.encode(), headers=auth(token))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def parse(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return json.loads(response.text, parse_float=Decimal)


# -- summary -------------------------------------------------------------------------------------------------------

queries = st.fixed_dictionaries(
    {
        "group_by": st.sampled_from([[], ["model"], ["region"], ["model", "region"]]),
        "window": st.sampled_from([None, "MINUTE", "HOUR", "DAY"]),
        "filters": st.sampled_from([{}, {"model": "gpt"}, {"region": "eu", "model": "claude"}, {"model": ""}]),
        "subject": st.sampled_from([None, "cus_a", "ext_c"]),
        "bounds": st.tuples(st.integers(0, 3 * 24 * 60), st.integers(1, 3 * 24 * 60)),
        "edge": st.tuples(st.integers(0, 200), st.integers(0, 200)),
    }
)


def check_summary(
    http: httpx.Client,
    token: str,
    cost_id: str,
    aggregation: str,
    unit_cost: str,
    events: list[dict[str, Any]],
    query: dict[str, Any],
) -> None:
    group_by, window, filters, subject = query["group_by"], query["window"], query["filters"], query["subject"]
    start = BASE + timedelta(minutes=query["bounds"][0])
    end = start + timedelta(minutes=query["bounds"][1])
    if events and query["edge"][0] % 2 == 0:
        # Bounds exactly on event timestamps: `from` is inclusive, `to` exclusive.
        first, second = (events[i % len(events)]["at"] for i in query["edge"])
        start, end = min(first, second), max(first, second)
        if start == end:
            end = start + timedelta(seconds=1)
    params: dict[str, str] = {"from": stamp(start), "to": stamp(end)}
    if group_by:
        params["groupBy"] = ",".join(group_by)
    if window:
        params["window"] = window
    if filters:
        params["filterGroupBy"] = json.dumps(filters)
    if subject:
        params["subject"] = subject
    got = parse(http.get(f"/v0/costs/{cost_id}/summary", params=params, headers=auth(token)))

    chosen = ref_select(events, start, end, subject, filters)
    price = Decimal(unit_cost)
    total = ref_quantity(aggregation, chosen)
    assert got["totalQuantity"] == total
    assert got["totalCost"] == times(total, price)
    if group_by:
        expected: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for event in chosen:
            expected[tuple(dim(event, name) for name in group_by)].append(event)
        groups = {tuple(g["dimensions"][n] for n in group_by): (g["quantity"], g["cost"]) for g in got["groups"]}
        assert groups == {
            k: (ref_quantity(aggregation, v), times(ref_quantity(aggregation, v), price)) for k, v in expected.items()
        }
    else:
        assert "groups" not in got
    if window:
        by_window: dict[datetime, list[dict[str, Any]]] = defaultdict(list)
        for event in chosen:
            by_window[floor(event["at"], window)].append(event)
        series = {s["windowStart"]: (s["windowEnd"], s["quantity"], s["cost"]) for s in got["timeSeries"]}
        assert series == {
            stamp(k): (
                stamp(k + WIDTH[window]),
                ref_quantity(aggregation, v),
                times(ref_quantity(aggregation, v), price),
            )
            for k, v in by_window.items()
        }
    else:
        assert "timeSeries" not in got


@SETTINGS
@given(
    events=event_lists(),
    aggregation=st.sampled_from(AGGREGATIONS),
    unit_cost=st.sampled_from(["1", "0.5", "3e-05", "2"]),
    query=queries,
)
def test_summary_over_generated_events(
    http: httpx.Client, events: list[dict[str, Any]], aggregation: str, unit_cost: str, query: dict[str, Any]
) -> None:
    token = f"sk_{uuid.uuid4().hex}"
    cost_id = create_cost(http, token, aggregation, unit_cost, "cost.test")
    ingest(http, token, events, "cost.test")
    ingest(http, token, [{**events[0], "key": "other-type"}] if events else [], "cost.other")  # another type: ignored
    check_summary(http, token, cost_id, aggregation, unit_cost, events, query)


@pytest.fixture(scope="module")
def corpus(http: httpx.Client) -> tuple[str, list[dict[str, Any]], dict[str, str]]:
    """One organisation with 70 generated events (duplicate keys included) and one cost per aggregation."""
    events = _seeded_events(random.Random(20250101), 70)
    token = f"sk_{uuid.uuid4().hex}"
    costs = {aggregation: create_cost(http, token, aggregation, "0.5", "cost.corpus") for aggregation in AGGREGATIONS}
    ingest(http, token, events, "cost.corpus")
    return token, events, costs


def _seeded_events(rng: random.Random, count: int) -> list[dict[str, Any]]:
    events = []
    for _ in range(count):
        data: dict[str, Any] = {}
        amount = rng.choice([Decimal(rng.randint(0, 10**6)) / 10 ** rng.randint(0, 6), rng.randint(0, 9), "n/a", None])
        if amount is not None:
            data["amount"] = amount
        if rng.random() < 0.8:
            data["model"] = rng.choice(["gpt", "claude"])
        if rng.random() < 0.8:
            data["meta"] = {"region": rng.choice(["us", "eu"])}
        moment = BASE + timedelta(minutes=rng.randint(0, 3 * 24 * 60), seconds=rng.choice([0, 1, 59]))
        key = f"k{rng.randint(0, 60)}"
        events.append({"at": moment, "customer": rng.choice(["cus_a", "cus_b", "ext_c"]), "key": key, "data": data})
    return events


@settings(max_examples=45, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(aggregation=st.sampled_from(AGGREGATIONS), query=queries)
def test_summary_queries_over_one_corpus(
    http: httpx.Client,
    corpus: tuple[str, list[dict[str, Any]], dict[str, str]],
    aggregation: str,
    query: dict[str, Any],
) -> None:
    token, events, costs = corpus
    check_summary(http, token, costs[aggregation], aggregation, "0.5", events, query)


# -- report --------------------------------------------------------------------------------------------------------


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=event_lists(),
    other_events=event_lists(),
    group_by=st.sampled_from(["cost", "customer", "model"]),
    top_n=st.integers(min_value=1, max_value=3),
    sort=st.sampled_from(["totalCost", "totalQuantity"]),
    sort_dir=st.sampled_from(["asc", "desc"]),
)
def test_report_matches_reference(
    http: httpx.Client,
    events: list[dict[str, Any]],
    other_events: list[dict[str, Any]],
    group_by: str,
    top_n: int,
    sort: str,
    sort_dir: str,
) -> None:
    token = f"sk_{uuid.uuid4().hex}"
    first = create_cost(http, token, "SUM", "2", "cost.one")
    second = create_cost(http, token, "COUNT", "0.25", "cost.two")
    ingest(http, token, events, "cost.one")
    ingest(http, token, [{**e, "key": "two-" + e["key"]} for e in other_events], "cost.two")
    start, end = BASE, BASE + timedelta(days=2)
    params: list[tuple[str, str]] = [("from", stamp(start)), ("to", stamp(end)), ("groupBy", group_by)]
    params += [("topN", str(top_n)), ("sort", sort), ("sortDir", sort_dir), ("windowSize", "DAY")]
    if group_by == "model":
        params.append(("costId", first))
    got = parse(http.get("/v0/costs/report", params=params, headers=auth(token)))

    one = ref_select(events, start, end, None, {})
    two = ref_select([{**e, "key": "two-" + e["key"]} for e in other_events], start, end, None, {})
    totals: dict[str, list[Decimal]] = {}
    parts = [(first, "SUM", Decimal(2), one)] + (
        [] if group_by == "model" else [(second, "COUNT", Decimal("0.25"), two)]
    )
    for cost_id, aggregation, price, chosen in parts:
        keyed: dict[str, list[dict[str, Any]]] = defaultdict(list)
        if group_by == "cost":
            keyed[cost_id] = chosen
        for event in chosen if group_by != "cost" else ():
            keyed[event["customer"] if group_by == "customer" else dim(event, "model")].append(event)
        for key, chosen_events in keyed.items():
            amount = ref_quantity(aggregation, chosen_events)
            cell = totals.setdefault(key, [Decimal(0), Decimal(0)])
            cell[0] += times(amount, price)
            cell[1] += amount
    ordered = sorted(totals.items(), key=lambda kv: kv[0])
    ordered.sort(key=lambda kv: kv[1][0 if sort == "totalCost" else 1], reverse=sort_dir == "desc")
    top, rest = ordered[:top_n], ordered[top_n:]
    expected = [(k, v[0], v[1], False) for k, v in top]
    if rest:
        expected.append(
            ("__other__", sum((v[0] for _, v in rest), Decimal(0)), sum((v[1] for _, v in rest), Decimal(0)), True)
        )
    assert [(g["key"], g["totalCost"], g["totalQuantity"], g["isOther"]) for g in got["groups"]] == expected
    assert got["totalCost"] == sum((v[0] for v in totals.values()), Decimal(0))
    assert got["pagination"]["total"] == len(expected)
    for window in got["timeSeries"]:
        assert set(window["groups"]) <= {k for k, *_ in expected}
    assert sum((sum(w["groups"].values(), Decimal(0)) for w in got["timeSeries"]), Decimal(0)) == got["totalCost"]
