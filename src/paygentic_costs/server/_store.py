"""SQLite store: costs (soft-deleted, never removed) and events (raw JSON ``data``, exact numbers).

One connection behind one lock: the server is for development, tests and demos, and a single writer keeps the
idempotency check and the insert atomic. Paths (``valueProperty``, ``groupBy``) are evaluated by SQLite's ``->``
operator, which returns the JSON text of a value, so numbers reach Python with their original digits.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from paygentic_costs.client._json import dumps, loads

from ._aggregate import Row

__all__ = ["CostRecord", "EventRecord", "Store"]

DEDUP_WINDOW_US = 24 * 3600 * 1_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS costs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org TEXT NOT NULL,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    unit_cost TEXT NOT NULL,
    product_id TEXT NOT NULL,
    unit TEXT,
    aggregation TEXT,
    event_type TEXT,
    value_property TEXT,
    group_by TEXT,
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL,
    deleted_us INTEGER
);
CREATE INDEX IF NOT EXISTS costs_org ON costs (org, deleted_us, seq);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    org TEXT NOT NULL,
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    subject TEXT,
    external_subject TEXT,
    customer TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL,
    external_id TEXT,
    namespace TEXT NOT NULL,
    data TEXT NOT NULL,
    received_us INTEGER NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS events_query ON events (org, type, ts_us);
CREATE INDEX IF NOT EXISTS events_key ON events (org, idempotency_key);
"""

_COST_COLUMNS = (
    "id, org, name, currency, unit_cost, product_id, unit, aggregation, event_type, value_property, group_by, "
    "created_us, updated_us, deleted_us"
)
_EVENT_COLUMNS = (
    "id, type, source, subject, external_subject, ts_us, idempotency_key, external_id, namespace, data, "
    "received_us, deliveries"
)


@dataclass(frozen=True, slots=True)
class CostRecord:
    """A stored cost."""

    id: str
    org: str
    name: str
    currency: str
    unit_cost: Decimal
    product_id: str
    unit: str | None
    aggregation: str | None
    event_type: str | None
    value_property: str | None
    group_by: dict[str, str] | None
    created_us: int
    updated_us: int
    deleted_us: int | None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A stored event, with when it arrived and how many times it was delivered (duplicates included)."""

    id: str
    type: str
    source: str
    subject: str | None
    external_subject: str | None
    ts_us: int
    idempotency_key: str
    external_id: str | None
    namespace: str
    data: str
    received_us: int
    deliveries: int


def _cost(row: Sequence[Any]) -> CostRecord:
    values = list(row)
    values[4] = Decimal(values[4])
    values[10] = loads(values[10]) if values[10] is not None else None
    return CostRecord(*values)


def _dimension(text: str | None) -> str:
    # Dimension values are strings on the wire; a missing or null value is "", other JSON keeps its text.
    if text is None or text == "null":
        return ""
    if text.startswith('"'):
        value = loads(text)
        return value if isinstance(value, str) else text
    return text


class Store:
    """Costs and events of every organisation, in one SQLite database.

    Args:
        path: A database file (created if absent), or ``None`` for a private in-memory database.
    """

    def __init__(self, path: str | None = None) -> None:
        if sqlite3.sqlite_version_info < (3, 38, 0):
            raise RuntimeError(f"the local server needs SQLite >= 3.38 (JSON '->'); found {sqlite3.sqlite_version}")
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path or ":memory:", check_same_thread=False, isolation_level=None)
        if path:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()

    # -- events ---------------------------------------------------------------------------------------------

    def ingest(
        self,
        org: str,
        *,
        type: str,
        source: str,
        subject: str | None,
        external_subject: str | None,
        ts_us: int,
        idempotency_key: str | None,
        external_id: str | None,
        namespace: str,
        data: Mapping[str, Any],
        now_us: int,
    ) -> tuple[EventRecord, bool]:
        """Store an event unless its key was seen in this organisation within 24 h.

        Returns:
            The stored event (the earlier one for a duplicate) and whether it was a duplicate.
        """
        key = idempotency_key or f"gen_{uuid.uuid4().hex}"
        with self._lock:
            if idempotency_key is not None:
                found = self._conn.execute(
                    f"SELECT seq, {_EVENT_COLUMNS} FROM events WHERE org = ? AND idempotency_key = ? "
                    "ORDER BY seq DESC LIMIT 1",
                    (org, key),
                ).fetchone()
                if found is not None and now_us - found[11] < DEDUP_WINDOW_US:
                    self._conn.execute("UPDATE events SET deliveries = deliveries + 1 WHERE seq = ?", (found[0],))
                    return EventRecord(*found[1:]), True
            record = EventRecord(
                id=f"evt_{uuid.uuid4().hex[:24]}",
                type=type,
                source=source,
                subject=subject,
                external_subject=external_subject,
                ts_us=ts_us,
                idempotency_key=key,
                external_id=external_id,
                namespace=namespace,
                data=dumps(data),
                received_us=now_us,
                deliveries=1,
            )
            self._conn.execute(
                f"INSERT INTO events (org, customer, {_EVENT_COLUMNS}) VALUES ({', '.join('?' * 14)})",
                (org, subject or external_subject or "", *_event_values(record)),
            )
        return record, False

    def events(self, org: str, *, limit: int, offset: int) -> tuple[list[EventRecord], int]:
        """An organisation's stored events in arrival order, and how many there are."""
        with self._lock:
            total = self._conn.execute("SELECT count(*) FROM events WHERE org = ?", (org,)).fetchone()[0]
            rows = self._conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE org = ? ORDER BY seq LIMIT ? OFFSET ?",
                (org, limit, offset),
            ).fetchall()
        return [EventRecord(*row) for row in rows], int(total)

    def rows(
        self,
        org: str,
        event_type: str,
        *,
        from_us: int,
        to_us: int,
        customer: str | None,
        value_property: str | None,
        group_by: Mapping[str, str] | None,
    ) -> list[Row]:
        """Matched events (``from_us <= t < to_us``) reduced to aggregation rows, in time then arrival order."""
        dims = list((group_by or {}).items())
        value_column = "data -> ?" if value_property is not None else "NULL"
        columns = ", ".join(["ts_us", "customer", value_column] + ["data -> ?"] * len(dims))
        params: list[Any] = [*([value_property] if value_property is not None else []), *(p for _, p in dims)]
        params += [org, event_type, from_us, to_us]
        where = "org = ? AND type = ? AND ts_us >= ? AND ts_us < ?"
        if customer is not None:
            where += " AND customer = ?"
            params.append(customer)
        with self._lock:
            found = self._conn.execute(
                f"SELECT {columns} FROM events WHERE {where} ORDER BY ts_us, seq", params
            ).fetchall()
        out = []
        for record in found:
            value = loads(record[2]) if record[2] is not None else None
            names = {name: _dimension(record[3 + i]) for i, (name, _) in enumerate(dims)}
            out.append(Row(ts_us=record[0], customer=record[1], value=value, dims=names))
        return out

    def extent(self, org: str, event_types: Sequence[str]) -> tuple[int, int] | None:
        """First and last timestamps of an organisation's events of these types, or ``None`` when there are none."""
        if not event_types:
            return None
        marks = ", ".join("?" * len(event_types))
        with self._lock:
            low, high = self._conn.execute(
                f"SELECT min(ts_us), max(ts_us) FROM events WHERE org = ? AND type IN ({marks})", (org, *event_types)
            ).fetchone()
        return None if low is None else (int(low), int(high))

    # -- costs ----------------------------------------------------------------------------------------------

    def create_cost(self, org: str, fields: Mapping[str, Any], now_us: int) -> CostRecord:
        """Store a new cost. ``fields`` holds the ``CostRecord`` fields other than ids and times."""
        record = CostRecord(
            id=f"cst_{uuid.uuid4().hex[:24]}",
            org=org,
            created_us=now_us,
            updated_us=now_us,
            deleted_us=None,
            **fields,
        )
        with self._lock:
            self._conn.execute(
                f"INSERT INTO costs ({_COST_COLUMNS}) VALUES ({', '.join('?' * 14)})", _cost_values(record)
            )
        return record

    def get_cost(self, org: str, cost_id: str) -> CostRecord | None:
        """An active (not deleted) cost of the organisation."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COST_COLUMNS} FROM costs WHERE org = ? AND id = ? AND deleted_us IS NULL", (org, cost_id)
            ).fetchone()
        return None if row is None else _cost(row)

    def list_costs(self, org: str, *, product_id: str | None, limit: int, offset: int) -> tuple[list[CostRecord], int]:
        """A page of active costs in creation order, and how many match."""
        where = "org = ? AND deleted_us IS NULL"
        params: list[Any] = [org]
        if product_id is not None:
            where += " AND product_id = ?"
            params.append(product_id)
        with self._lock:
            total = self._conn.execute(f"SELECT count(*) FROM costs WHERE {where}", params).fetchone()[0]
            rows = self._conn.execute(
                f"SELECT {_COST_COLUMNS} FROM costs WHERE {where} ORDER BY seq LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
        return [_cost(row) for row in rows], int(total)

    def save_cost(self, record: CostRecord) -> None:
        """Write back an updated or soft-deleted cost."""
        with self._lock:
            self._conn.execute(
                "UPDATE costs SET name = ?, currency = ?, unit_cost = ?, product_id = ?, unit = ?, aggregation = ?, "
                "event_type = ?, value_property = ?, group_by = ?, created_us = ?, updated_us = ?, deleted_us = ? "
                "WHERE id = ? AND org = ?",
                (*_cost_values(record)[2:], record.id, record.org),
            )


def _cost_values(record: CostRecord) -> tuple[Any, ...]:
    return (
        record.id,
        record.org,
        record.name,
        record.currency,
        str(record.unit_cost),
        record.product_id,
        record.unit,
        record.aggregation,
        record.event_type,
        record.value_property,
        None if record.group_by is None else dumps(record.group_by),
        record.created_us,
        record.updated_us,
        record.deleted_us,
    )


def _event_values(record: EventRecord) -> tuple[Any, ...]:
    return (
        record.id,
        record.type,
        record.source,
        record.subject,
        record.external_subject,
        record.ts_us,
        record.idempotency_key,
        record.external_id,
        record.namespace,
        record.data,
        record.received_us,
        record.deliveries,
    )
