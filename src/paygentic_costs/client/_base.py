"""What the sync and async clients share: request building, auth headers, and responses → models or typed errors."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Generic, TypeVar

import httpx

from ._errors import APIError, AuthError, FieldError, NotFound, RateLimited, ValidationError
from ._json import dumps, loads

__all__ = ["DEFAULT_BASE_URL", "UNSET", "Unset", "When", "_BaseClient", "_Call"]

DEFAULT_BASE_URL = "https://api.paygentic.io"
HttpClientT = TypeVar("HttpClientT", httpx.Client, httpx.AsyncClient)
When = datetime | str


class Unset:
    """Marker for "leave this field as it is" in :meth:`Client.update_cost` (``None`` means clear)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    path: str
    params: list[tuple[str, str]]
    body: bytes | None = None


def _when(value: When) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)  # the API reads naive times as UTC; say so explicitly
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _number(value: Decimal | int | str) -> Decimal:
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if not number.is_finite():
        raise ValueError(f"unit_cost must be a finite number, not {value!r}")
    return number


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


class _BaseClient(Generic[HttpClientT]):
    def __init__(self, api_key: str, *, base_url: str, http_client: HttpClientT, owns_client: bool) -> None:
        if not api_key or not isinstance(api_key, str):
            raise ValueError("api_key must be a non-empty string")
        # Kept private and out of every repr; sent per request rather than stored on a shared, injected client.
        self.__auth = api_key if api_key.lower().startswith("bearer ") else f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self._http: HttpClientT = http_client
        self._owns_client = owns_client

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def _request(self, call: _Call) -> httpx.Request:
        headers = {"Accept": "application/json", "Authorization": self.__auth}
        if call.body is not None:
            headers["Content-Type"] = "application/json"
        request: httpx.Request = self._http.build_request(
            call.method,
            self.base_url + call.path,
            params=tuple(call.params),
            content=call.body,
            headers=headers,
        )
        return request

    # -- requests -----------------------------------------------------------------------------------------

    @staticmethod
    def _create_cost(
        name: str,
        *,
        event_type: str,
        aggregation: str,
        unit_cost: Decimal | int | str,
        currency: str,
        product_id: str,
        value_property: str | None,
        unit: str | None,
        group_by: Mapping[str, str] | None,
        merchant_id: str | None,
    ) -> _Call:
        body: dict[str, Any] = {
            "type": "metered",
            "name": name,
            "unitCost": _number(unit_cost),
            "currency": currency,
            "productId": product_id,
            "aggregation": aggregation,
            "eventType": event_type,
        }
        optional = {"unit": unit, "valueProperty": value_property, "groupBy": group_by, "merchantId": merchant_id}
        body.update({k: dict(v) if isinstance(v, Mapping) else v for k, v in optional.items() if v is not None})
        return _Call("POST", "/v0/costs", [], dumps(body).encode("utf-8"))

    @staticmethod
    def _list_costs(product_id: str | None, limit: int, offset: int, merchant_id: str | None) -> _Call:
        params = [("limit", str(limit)), ("offset", str(offset))]
        params += [(k, v) for k, v in (("productId", product_id), ("merchantId", merchant_id)) if v is not None]
        return _Call("GET", "/v0/costs", params)

    @staticmethod
    def _update_cost(cost_id: str, fields: Mapping[str, Any]) -> _Call:
        body = {k: v for k, v in fields.items() if not isinstance(v, Unset)}
        for required in ("name", "unitCost", "currency"):
            if required in body and body[required] is None:
                raise ValueError(f"{required} cannot be cleared")
        if body.get("unitCost") is not None:
            body["unitCost"] = _number(body["unitCost"])
        if isinstance(body.get("groupBy"), Mapping):
            body["groupBy"] = dict(body["groupBy"])
        return _Call("PATCH", f"/v0/costs/{cost_id}", [], dumps(body).encode("utf-8"))

    @staticmethod
    def _summary(
        cost_id: str,
        start: When,
        end: When,
        subject: str | None,
        group_by: Sequence[str] | str | None,
        window: str | None,
        filter_group_by: Mapping[str, str] | None,
    ) -> _Call:
        params = [("from", _when(start)), ("to", _when(end))]
        if subject is not None:
            params.append(("subject", subject))
        if group_by:
            params.append(("groupBy", group_by if isinstance(group_by, str) else ",".join(group_by)))
        if window is not None:
            params.append(("window", window))
        if filter_group_by:
            params.append(("filterGroupBy", dumps(dict(filter_group_by))))
        return _Call("GET", f"/v0/costs/{cost_id}/summary", params)

    @staticmethod
    def _report(
        start: When,
        end: When,
        *,
        group_by: str,
        cost_ids: Sequence[str] | None,
        subject: str | None,
        filter_group_by: Mapping[str, str] | None,
        top_n: int,
        compare_prior_period: bool,
        exclude_empty: bool,
        window_size: str | None,
        sort: str,
        sort_dir: str,
        offset: int,
        limit: int,
        currency: str | None,
        merchant_id: str | None,
    ) -> _Call:
        params = [("from", _when(start)), ("to", _when(end)), ("groupBy", group_by)]
        params += [("costId", c) for c in cost_ids or ()]
        optional = {
            "merchantId": merchant_id,
            "subject": subject,
            "filterGroupBy": dumps(dict(filter_group_by)) if filter_group_by else None,
            "windowSize": window_size,
            "currency": currency,
        }
        params += [(k, v) for k, v in optional.items() if v is not None]
        params += [
            ("topN", str(top_n)),
            ("comparePriorPeriod", "true" if compare_prior_period else "false"),
            ("excludeEmpty", "true" if exclude_empty else "false"),
            ("sort", sort),
            ("sortDir", sort_dir),
            ("offset", str(offset)),
            ("limit", str(limit)),
        ]
        return _Call("GET", "/v0/costs/report", params)

    # -- responses ----------------------------------------------------------------------------------------

    @staticmethod
    def _parse(response: httpx.Response) -> Any:
        if response.is_success:
            return loads(response.content) if response.content else None
        try:
            body: Any = loads(response.content)
        except ValueError:
            body = None
        info = body if isinstance(body, dict) else {}
        message = str(info.get("message") or response.text[:200] or response.reason_phrase)
        code = info.get("code") or info.get("error")
        code = code if isinstance(code, str) else None
        status = response.status_code
        if status in (400, 422):
            raw_errors = info.get("errors")
            errors = tuple(
                FieldError((str(e.get("field", "")), str(e.get("message", ""))))
                for e in (raw_errors if isinstance(raw_errors, list) else [])
                if isinstance(e, dict)
            )
            raise ValidationError(status, message, code=code, body=body, errors=errors)
        if status in (401, 403):
            raise AuthError(status, message, code=code, body=body)
        if status == 404:
            raise NotFound(status, message, code=code, body=body)
        retry_after = _retry_after(response.headers.get("Retry-After"))
        if status == 429 or (status == 503 and retry_after is not None):
            raise RateLimited(status, message, code=code, body=body, retry_after=retry_after)
        raise APIError(status, message, code=code, body=body)
