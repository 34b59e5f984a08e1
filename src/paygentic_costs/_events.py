"""The cost event: one frozen object per billable operation, and its exact wire form.

No third-party imports here: this module is shared by the recorder, every exporter, the spool and the tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

__all__ = ["CostEvent", "decimal_to_json", "format_timestamp"]

# Decimals are smuggled through json.dumps as marked strings, then un-quoted; the marker cannot occur in
# JSON-escaped user text because json escapes U+0000 as \u0000 and we look for that exact escape pair.
_MARK = "\x00"
_MARKED = re.compile(r'"\\u0000(-?[0-9]+(?:\.[0-9]+)?)\\u0000"')


def decimal_to_json(value: Decimal) -> str:
    """The plain-notation digits of a finite Decimal, as they go on the wire (no float, no exponent)."""
    text = format(value, "f")
    if text in ("-0", "-0.0") or (text.startswith("-") and value.is_zero()):
        text = text[1:]
    return text


def _default(obj: object) -> object:
    if isinstance(obj, Decimal):
        return _MARK + decimal_to_json(obj) + _MARK
    if isinstance(obj, datetime):
        return format_timestamp(obj)
    raise TypeError(f"value of type {type(obj).__name__} is not JSON serializable")


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with millisecond precision and a ``Z`` suffix (the form the API documents)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class CostEvent:
    """One cost event, exactly as ``POST /v0/events`` receives it.

    ``data`` always holds ``amount`` (a ``Decimal``) and ``currency``; the key and the timestamp are fixed when the
    event is recorded and never change across retries, spool replays or restarts.
    """

    type: str
    source: str
    idempotency_key: str
    timestamp: datetime
    data: Mapping[str, Any]
    subject: str | None = None
    external_subject: str | None = None
    _body: list[bytes] = field(default_factory=list, repr=False, compare=False)

    @property
    def amount(self) -> Decimal:
        """The cost, exact."""
        value = self.data["amount"]
        return value if isinstance(value, Decimal) else Decimal(str(value))

    @property
    def customer(self) -> str | None:
        """The customer the cost is attributed to (``subject``, else ``externalSubject``)."""
        return self.subject or self.external_subject

    def to_wire(self) -> dict[str, Any]:
        """The request body as a dict; ``Decimal`` values stay ``Decimal`` (use :meth:`to_json` for bytes)."""
        body: dict[str, Any] = {"type": self.type, "source": self.source}
        if self.subject is not None:
            body["subject"] = self.subject
        if self.external_subject is not None:
            body["externalSubject"] = self.external_subject
        body["timestamp"] = format_timestamp(self.timestamp)
        body["idempotencyKey"] = self.idempotency_key
        body["data"] = dict(self.data)
        return body

    def to_json(self) -> bytes:
        """Compact JSON bytes; every Decimal is a JSON number with exactly its own digits. Cached: replays are
        byte-identical."""
        if self._body:
            return self._body[0]
        text = json.dumps(self.to_wire(), default=_default, separators=(",", ":"), ensure_ascii=True)
        if "\\u0000" in text:
            text = _MARKED.sub(r"\1", text)
        encoded = text.encode("ascii")
        self._body.append(encoded)
        return encoded

    @classmethod
    def from_json(cls, body: bytes | str) -> CostEvent:
        """Rebuild an event from its wire bytes (numbers come back as ``Decimal``, so amounts stay exact)."""
        raw = json.loads(body, parse_float=Decimal)
        stamp = datetime.fromisoformat(raw["timestamp"].replace("Z", "+00:00"))
        event = cls(
            type=raw["type"],
            source=raw["source"],
            idempotency_key=raw["idempotencyKey"],
            timestamp=stamp,
            data=raw["data"],
            subject=raw.get("subject"),
            external_subject=raw.get("externalSubject"),
        )
        event._body.append(body.encode("ascii") if isinstance(body, str) else bytes(body))
        return event
