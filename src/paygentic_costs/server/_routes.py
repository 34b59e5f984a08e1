"""The API's routes. ``/v0/costs/report`` is registered before ``/v0/costs/{id}`` so it is not taken for an id."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from paygentic_costs._events import decimal_to_json
from paygentic_costs.client._json import dumps, loads

from ._aggregate import (
    NEEDS_VALUE,
    ReportInput,
    build_report,
    change_percent,
    matches,
    percent,
    summarize,
)
from ._app import JSONBody, Org
from ._schemas import (
    ApiProblem,
    CostCreate,
    CostUpdate,
    EventIn,
    field_problem,
    format_time,
    parse_body,
    parse_time,
)
from ._store import CostRecord, EventRecord, Store

__all__ = ["build_router"]

_FILTER_MAX_BYTES = 4096
_FILTER_MAX_KEYS = 5


def _body_doc(model: type[Any]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _forbidden(what: str) -> ApiProblem:
    return ApiProblem(403, f"{what} belongs to another organisation than this API key", error="forbidden")


def _not_found(cost_id: str) -> ApiProblem:
    return ApiProblem(404, f"Cost {cost_id!r} not found", error="not_found")


def cost_json(cost: CostRecord) -> dict[str, Any]:
    """A ``Cost`` as the API returns it (``unitCost`` as a decimal string)."""
    return {
        "id": cost.id,
        "object": "cost",
        "type": "metered",
        "name": cost.name,
        "currency": cost.currency,
        "unitCost": decimal_to_json(cost.unit_cost),
        "unit": cost.unit,
        "aggregation": cost.aggregation,
        "eventType": cost.event_type,
        "valueProperty": cost.value_property,
        "groupBy": cost.group_by,
        "productId": cost.product_id,
        "merchantId": cost.org,
        "createdAt": format_time(cost.created_us),
        "updatedAt": format_time(cost.updated_us),
        "deletedAt": None,
    }


def event_json(event: EventRecord, org: str) -> dict[str, Any]:
    """An ``EventResponse``: no ``null`` values; ``subject`` only when the event named a customer id."""
    body: dict[str, Any] = {"id": event.id, "object": "event", "type": event.type, "source": event.source}
    if event.subject is not None:
        body["subject"] = event.subject
    if event.external_subject is not None:
        body["externalSubject"] = event.external_subject
    body.update(namespace=event.namespace or org, timestamp=format_time(event.ts_us))
    body["idempotencyKey"] = event.idempotency_key
    if event.external_id is not None:
        body["externalId"] = event.external_id
    return body


def _check_rules(aggregation: str | None, value_property: str | None) -> None:
    if aggregation in NEEDS_VALUE and value_property is None:
        raise field_problem("valueProperty", f"is required for {aggregation} aggregation")


def _window(from_: str, to: str) -> tuple[int, int]:
    start, end = parse_time("from", from_), parse_time("to", to)
    if start >= end:
        raise field_problem("from", "must be before 'to'")
    return start, end


def _filters(raw: str | None, known: set[str]) -> dict[str, str]:
    if not raw:
        return {}
    if len(raw.encode("utf-8")) > _FILTER_MAX_BYTES:
        raise field_problem("filterGroupBy", f"must be at most {_FILTER_MAX_BYTES} bytes")
    try:
        parsed = loads(raw)
    except ValueError:
        raise field_problem("filterGroupBy", "must be a JSON object") from None
    if not isinstance(parsed, dict):
        raise field_problem("filterGroupBy", "must be a JSON object")
    if len(parsed) > _FILTER_MAX_KEYS:
        raise field_problem("filterGroupBy", f"must have at most {_FILTER_MAX_KEYS} keys")
    filters: dict[str, str] = {}
    for key, value in parsed.items():
        if key not in known:
            raise field_problem("filterGroupBy", f"key {key!r} is not a groupBy dimension of the cost")
        if isinstance(value, (dict, list)) or value is None:
            raise field_problem("filterGroupBy", f"value of {key!r} must be a string")
        # Numbers and booleans compare by their JSON text, as dimension values do.
        filters[key] = value if isinstance(value, str) else dumps(value)
    return filters


def build_router(store: Store, now_us: Callable[[], int]) -> APIRouter:
    """The API routes over ``store``, stamping times with ``now_us``."""
    router = APIRouter()

    @router.post("/v0/events", status_code=202, openapi_extra=_body_doc(EventIn), tags=["events"])
    async def ingest_event(request: Request, org: Org) -> Response:
        """Ingest a cost or meter event (de-duplicated by ``idempotencyKey`` for 24 h)."""
        event = parse_body(await request.body(), EventIn)
        subject, external = event.subject or None, event.external_subject or None
        if subject is None and external is None:
            raise field_problem("subject", "subject or externalSubject is required")
        if event.namespace and event.namespace != org:
            raise _forbidden("namespace")
        received = now_us()
        record, _duplicate = store.ingest(
            org,
            type=event.type,
            source=event.source,
            subject=subject,
            external_subject=external,
            ts_us=parse_time("timestamp", event.timestamp) if event.timestamp else received,
            idempotency_key=event.idempotency_key,
            external_id=event.external_id,
            namespace=org,
            data=event.data,
            now_us=received,
        )
        return JSONBody(event_json(record, org), status_code=202)

    @router.post("/v0/costs", status_code=201, openapi_extra=_body_doc(CostCreate), tags=["costs"])
    async def create_cost(request: Request, org: Org) -> Response:
        """Create a metered cost."""
        body = parse_body(await request.body(), CostCreate)
        if body.merchant_id and body.merchant_id != org:
            raise _forbidden("merchantId")
        _check_rules(body.aggregation, body.value_property)
        fields = body.model_dump(exclude={"type", "merchant_id"})
        return JSONBody(cost_json(store.create_cost(org, fields, now_us())), status_code=201)

    @router.get("/v0/costs", tags=["costs"])
    async def list_costs(
        org: Org,
        merchant_id: Annotated[str | None, Query(alias="merchantId")] = None,
        product_id: Annotated[str | None, Query(alias="productId")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 10,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Response:
        """List active costs, oldest first."""
        if merchant_id and merchant_id != org:
            raise _forbidden("merchantId")
        costs, total = store.list_costs(org, product_id=product_id or None, limit=limit, offset=offset)
        page = {"limit": limit, "offset": offset, "total": total}
        return JSONBody({"object": "list", "data": [cost_json(c) for c in costs], "pagination": page})

    @router.get("/v0/costs/report", tags=["costs"])
    async def cost_report(
        org: Org,
        from_: Annotated[str, Query(alias="from")],
        to: Annotated[str, Query()],
        group_by: Annotated[str, Query(alias="groupBy")],
        merchant_id: Annotated[str | None, Query(alias="merchantId")] = None,
        cost_id: Annotated[list[str] | None, Query(alias="costId")] = None,
        subject: Annotated[str | None, Query()] = None,
        filter_group_by: Annotated[str | None, Query(alias="filterGroupBy")] = None,
        top_n: Annotated[int, Query(alias="topN", ge=1, le=1000)] = 9,
        compare_prior_period: Annotated[bool, Query(alias="comparePriorPeriod")] = False,
        exclude_empty: Annotated[bool, Query(alias="excludeEmpty")] = False,
        window_size: Annotated[Literal["HOUR", "DAY", "MONTH"] | None, Query(alias="windowSize")] = None,
        sort: Annotated[Literal["totalCost", "totalQuantity"], Query()] = "totalCost",
        sort_dir: Annotated[Literal["asc", "desc"], Query(alias="sortDir")] = "desc",
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 25,
        currency: Annotated[str | None, Query()] = None,
    ) -> Response:
        """Cost across costs, customers or one cost's dimension, top N plus Other."""
        start, end = _window(from_, to)
        if merchant_id and merchant_id != org:
            raise _forbidden("merchantId")
        if not group_by:
            raise field_problem("groupBy", "is required")
        costs = _report_costs(store, org, [c for c in cost_id or [] if c])
        if group_by not in ("cost", "customer"):
            if len(costs) != 1 or not cost_id:
                raise field_problem("groupBy", "a dimension needs exactly one costId")
            if group_by not in (costs[0].group_by or {}):
                raise field_problem("groupBy", f"{group_by!r} is not a groupBy dimension of the cost")
        chosen = currency or (costs[0].currency if costs else "USD")
        in_scope = [c for c in costs if c.currency == chosen]
        warnings = []
        if len(in_scope) < len(costs):
            warnings.append(f"{len(costs) - len(in_scope)} cost(s) not in {chosen} were left out")
        known = {name for c in in_scope for name in (c.group_by or {})}
        filters = _filters(filter_group_by, known)
        span = end - start
        inputs = []
        for cost in in_scope:
            if not set(filters) <= set(cost.group_by or {}):
                continue  # the filter names a dimension this cost does not have: none of its events can match
            rows = _matched(store, org, cost, start, end, subject or None, filters)
            prior = (
                _matched(store, org, cost, start - span, start, subject or None, filters)
                if compare_prior_period
                else None
            )
            inputs.append(ReportInput(cost, rows, prior))
        result = build_report(
            inputs,
            group_by=group_by,
            window_size=window_size,
            top_n=top_n,
            sort=sort,
            descending=sort_dir == "desc",
            exclude_empty=exclude_empty,
        )
        groups = []
        for group in result.groups[offset : offset + limit]:
            item: dict[str, Any] = {
                "key": group.key,
                "label": group.label,
                "totalCost": group.total_cost,
                "totalQuantity": group.total_quantity,
                "percentOfTotal": percent(group.total_cost, result.total_cost),
                "isOther": group.is_other,
            }
            if group.unit is not None:
                item["unit"] = group.unit
            if compare_prior_period:
                item["priorPeriod"] = {
                    "cost": group.prior_cost,
                    "changePercent": change_percent(group.total_cost, group.prior_cost),
                }
            groups.append(item)
        body: dict[str, Any] = {
            "object": "cost_report",
            "currency": chosen,
            "period": {"from": format_time(start), "to": format_time(end)},
            "groupBy": group_by,
            "totalCost": result.total_cost,
            "totalQuantity": result.total_quantity,
            "groups": groups,
            "timeSeries": [
                {"windowStart": format_time(a), "windowEnd": format_time(b), "groups": cells}
                for a, b, cells in result.windows
            ],
            "availableDimensions": sorted(in_scope[0].group_by or {}) if len(in_scope) == 1 else [],
            "pagination": {"total": len(result.groups), "limit": limit, "offset": offset},
            "warnings": warnings,
            "groupCount": result.group_count,
            "emptyGroupCount": result.empty_group_count,
        }
        if result.total_cost.is_zero():
            extent = store.extent(org, sorted({c.event_type for c in in_scope if c.event_type}))
            body["costRange"] = (
                None if extent is None else {"from": format_time(extent[0]), "to": format_time(extent[1])}
            )
        return JSONBody(body)

    @router.get("/v0/costs/{id}", tags=["costs"])
    async def get_cost(id: str, org: Org) -> Response:
        """Get an active cost."""
        return JSONBody(cost_json(_active(store, org, id)))

    @router.patch("/v0/costs/{id}", openapi_extra=_body_doc(CostUpdate), tags=["costs"])
    async def update_cost(id: str, request: Request, org: Org) -> Response:
        """Update a cost: absent fields stay, ``null`` clears a nullable field."""
        cost = _active(store, org, id)
        body = parse_body(await request.body(), CostUpdate)
        changes = {name: getattr(body, name) for name in body.model_fields_set}
        for required in ("name", "unit_cost", "currency"):
            if required in changes and changes[required] is None:
                raise field_problem(CostUpdate.model_fields[required].alias or required, "must not be null")
        updated = dataclasses.replace(cost, **changes, updated_us=now_us())
        _check_rules(updated.aggregation, updated.value_property)
        store.save_cost(updated)
        return JSONBody(cost_json(updated))

    @router.delete("/v0/costs/{id}", status_code=204, tags=["costs"])
    async def delete_cost(id: str, org: Org) -> Response:
        """Soft-delete a cost: it disappears from the API, its row and the events stay."""
        cost = _active(store, org, id)
        store.save_cost(dataclasses.replace(cost, deleted_us=now_us()))
        return Response(status_code=204)

    @router.get("/v0/costs/{id}/summary", tags=["costs"])
    async def cost_summary(
        id: str,
        org: Org,
        from_: Annotated[str, Query(alias="from")],
        to: Annotated[str, Query()],
        subject: Annotated[str | None, Query()] = None,
        group_by: Annotated[str | None, Query(alias="groupBy")] = None,
        window: Annotated[Literal["MINUTE", "HOUR", "DAY"] | None, Query()] = None,
        filter_group_by: Annotated[str | None, Query(alias="filterGroupBy")] = None,
    ) -> Response:
        """Quantity and cost of one cost over ``from <= t < to``, by group and time window."""
        cost = _active(store, org, id)
        start, end = _window(from_, to)
        dimensions = set(cost.group_by or {})
        names = [n.strip() for n in (group_by or "").split(",") if n.strip()] or None
        for name in names or ():
            if name not in dimensions:
                raise field_problem("groupBy", f"{name!r} is not a groupBy dimension of the cost")
        filters = _filters(filter_group_by, dimensions)
        metric = cost if cost.event_type is not None else dataclasses.replace(cost, aggregation=None)
        rows = _matched(store, org, cost, start, end, subject or None, filters) if metric.aggregation else []
        body: dict[str, Any] = {"object": "cost", "id": cost.id, "name": cost.name, "type": "metered"}
        body["currency"] = cost.currency
        if cost.event_type is not None:
            body["eventType"] = cost.event_type
        if cost.unit is not None:
            body["unit"] = cost.unit
        computed = summarize(metric, rows, group_by=names, window=window)
        for item in computed.get("timeSeries", ()):
            item["windowStart"], item["windowEnd"] = format_time(item["windowStart"]), format_time(item["windowEnd"])
        body.update(computed)
        return JSONBody(body)

    @router.get("/_local/events", include_in_schema=False)
    async def local_events(
        org: Org, limit: Annotated[int, Query(ge=1, le=100_000)] = 1000, offset: Annotated[int, Query(ge=0)] = 0
    ) -> Response:
        """Not part of the Paygentic API: the organisation's stored events in arrival order, with arrival info."""
        events, total = store.events(org, limit=limit, offset=offset)
        data = []
        for event in events:
            item = event_json(event, org)
            item.update(data=loads(event.data), receivedAt=format_time(event.received_us), deliveries=event.deliveries)
            data.append(item)
        return JSONBody(
            {"object": "list", "data": data, "pagination": {"limit": limit, "offset": offset, "total": total}}
        )

    return router


def _active(store: Store, org: str, cost_id: str) -> CostRecord:
    cost = store.get_cost(org, cost_id)
    if cost is None:
        raise _not_found(cost_id)
    return cost


def _report_costs(store: Store, org: str, cost_ids: list[str]) -> list[CostRecord]:
    costs, _total = store.list_costs(org, product_id=None, limit=-1, offset=0)
    if not cost_ids:
        return costs
    by_id = {c.id: c for c in costs}
    unknown = [c for c in cost_ids if c not in by_id]
    if unknown:
        raise field_problem("costId", f"unknown cost(s): {', '.join(unknown)}")
    return [by_id[c] for c in dict.fromkeys(cost_ids)]


def _matched(
    store: Store, org: str, cost: CostRecord, start: int, end: int, customer: str | None, filters: dict[str, str]
) -> list[Any]:
    if cost.event_type is None:
        return []
    rows = store.rows(
        org,
        cost.event_type,
        from_us=start,
        to_us=end,
        customer=customer,
        value_property=cost.value_property,
        group_by=cost.group_by,
    )
    return [row for row in rows if matches(row, filters)] if filters else rows
