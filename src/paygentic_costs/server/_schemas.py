"""Request shapes, their validation, and the API's error bodies.

Bodies are parsed from the raw bytes with ``Decimal`` numbers (``unitCost`` and event amounts stay exact), then
validated with these models in Python mode; the models also document the bodies in the OpenAPI schema.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timezone
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from paygentic_costs.client._json import loads

__all__ = [
    "AGGREGATIONS",
    "ApiProblem",
    "CostCreate",
    "CostUpdate",
    "EventIn",
    "field_problem",
    "format_time",
    "parse_body",
    "parse_time",
    "validation_problem",
]

AGGREGATIONS = ("SUM", "COUNT", "AVG", "MIN", "MAX", "UNIQUE_COUNT", "LATEST")
Aggregation = Literal["SUM", "COUNT", "AVG", "MIN", "MAX", "UNIQUE_COUNT", "LATEST"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):?(\d{2}))?$"
)


class ApiProblem(Exception):
    """An error answer in the API's shape: ``{"message", "error", ...}`` or a validation error with ``errors``."""

    def __init__(
        self, status: int, message: str, *, error: str | None = None, errors: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error = error
        self.errors = errors

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        body: dict[str, Any] = {"message": self.message}
        if self.errors is not None:
            body["error"] = "validation_error"
            body["errors"] = self.errors
        elif self.error is not None:
            body["error"] = self.error
        return body


def validation_problem(errors: list[dict[str, str]]) -> ApiProblem:
    """A 400 carrying field errors (parsed by the SDK as ``ValidationErrorData``)."""
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3])
    return ApiProblem(400, f"Validation failed: {summary}", errors=errors)


def field_problem(field: str, message: str) -> ApiProblem:
    """A 400 for one bad field."""
    return validation_problem([{"field": field, "message": message}])


def parse_time(field: str, value: str) -> int:
    """Parse an RFC 3339 timestamp (``Z``, ``±hh:mm`` or naive = UTC) to integer microseconds since the epoch."""
    match = _TIME.match(value.strip())
    if match is None:
        raise field_problem(field, "must be an ISO 8601 date-time")
    year, month, day, hour, minute, second, frac, _z, sign, off_h, off_m = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=timezone.utc)
    except ValueError as exc:
        raise field_problem(field, f"is not a valid date-time ({exc})") from None
    micros = int((frac or "0").ljust(6, "0")[:6])
    offset = 0
    if sign:
        if int(off_h) > 23 or int(off_m) > 59:
            raise field_problem(field, "has an invalid UTC offset")
        offset = (int(off_h) * 3600 + int(off_m) * 60) * (1 if sign == "+" else -1)
    epoch = int(moment.timestamp()) - offset
    return epoch * 1_000_000 + micros


def format_time(micros: int) -> str:
    """RFC 3339 UTC with a ``Z``; fractional seconds only when non-zero."""
    seconds, rest = divmod(micros, 1_000_000)
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{rest:06d}Z" if rest else f"{text}Z"


def _path_is_valid(path: str) -> bool:
    # The store evaluates these paths with SQLite's JSON functions, so SQLite is the judge of their syntax.
    with sqlite3.connect(":memory:") as conn:
        try:
            conn.execute("SELECT json_extract('{}', ?)", (path,))
        except sqlite3.Error:
            return False
    return True


def _check_path(path: str) -> str:
    if not path.startswith("$.") or len(path) < 3:
        raise ValueError("must be a JSONPath starting with '$.'")
    if not _path_is_valid(path):
        raise ValueError("is not a valid JSONPath")
    return path


def _check_group_by(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    for name, path in value.items():
        if not name or "," in name or _CONTROL.search(name):
            raise ValueError(f"dimension name {name!r} must be non-empty, without commas or control characters")
        try:
            _check_path(path)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return value


def _check_event_type(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _check_currency(value: str) -> str:
    if not _CURRENCY.match(value):
        raise ValueError("must be an ISO 4217 code (three upper-case letters)")
    return value


def _check_external_id(value: str) -> str:
    if not _EXTERNAL_ID.match(value):
        raise ValueError("may hold only letters, digits, '-' and '_'")
    return value


Currency = Annotated[str, AfterValidator(_check_currency)]
EventType = Annotated[str, Field(min_length=1), AfterValidator(_check_event_type)]
JsonPath = Annotated[str, AfterValidator(_check_path)]
GroupBy = Annotated[dict[str, str], AfterValidator(_check_group_by)]
Money = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
NonEmpty = Annotated[str, Field(min_length=1)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


_BodyT = TypeVar("_BodyT", bound=_Body)


class CostCreate(_Body):
    """``POST /v0/costs`` body."""

    type: Literal["metered"]
    name: NonEmpty
    unit_cost: Money = Field(alias="unitCost")
    currency: Currency
    product_id: NonEmpty = Field(alias="productId")
    aggregation: Aggregation
    event_type: EventType = Field(alias="eventType")
    unit: str | None = None
    value_property: JsonPath | None = Field(default=None, alias="valueProperty")
    group_by: GroupBy | None = Field(default=None, alias="groupBy")
    merchant_id: str | None = Field(default=None, alias="merchantId")


class CostUpdate(_Body):
    """``PATCH /v0/costs/{id}`` body: absent = unchanged, ``null`` on a nullable field = clear."""

    name: NonEmpty | None = None
    unit_cost: Money | None = Field(default=None, alias="unitCost")
    currency: Currency | None = None
    unit: str | None = None
    aggregation: Aggregation | None = None
    event_type: EventType | None = Field(default=None, alias="eventType")
    value_property: JsonPath | None = Field(default=None, alias="valueProperty")
    group_by: GroupBy | None = Field(default=None, alias="groupBy")


class EventIn(_Body):
    """``POST /v0/events`` body. ``data`` keeps its ``Decimal`` numbers."""

    type: EventType
    source: NonEmpty
    data: dict[str, Any]
    subject: str | None = None
    external_subject: str | None = Field(default=None, alias="externalSubject")
    namespace: str | None = None
    timestamp: str | None = None
    idempotency_key: NonEmpty | None = Field(default=None, alias="idempotencyKey")
    external_id: Annotated[str, AfterValidator(_check_external_id)] | None = Field(default=None, alias="externalId")


def parse_body(raw: bytes, model: type[_BodyT]) -> _BodyT:
    """Parse raw JSON bytes (numbers as ``Decimal``) and validate them against ``model``.

    Raises:
        ApiProblem: 400 with the API's validation-error body.
    """
    try:
        payload = loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise validation_problem([{"field": "body", "message": "must be a JSON object"}]) from None
    if not isinstance(payload, dict):
        raise validation_problem([{"field": "body", "message": "must be a JSON object"}])
    try:
        return model.model_validate(payload)
    except PydanticValidationError as exc:
        raise validation_problem(pydantic_errors(exc.errors(include_url=False))) from None


def pydantic_errors(errors: Any) -> list[dict[str, str]]:
    """Translate pydantic/FastAPI error dicts to the API's ``[{field, message}]``."""
    out: list[dict[str, str]] = []
    for err in errors:
        loc = [str(part) for part in err.get("loc", ()) if part not in ("body", "query", "path", "header")]
        message = str(err.get("msg", "is invalid"))
        out.append({"field": ".".join(loc) or "body", "message": message.removeprefix("Value error, ")})
    return out
