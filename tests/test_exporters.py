"""Exporters on their own: the simple ones, and the Paygentic exporter's wire format, classification and secrecy."""

from __future__ import annotations

import email.utils
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import fake_paygentic as fp
import httpx
import pytest

import paygentic_costs.export as export_module
from paygentic_costs import CostEvent
from paygentic_costs._context import is_suppressed
from paygentic_costs._errors import ConfigurationError
from paygentic_costs.export import (
    ConsoleExporter,
    DeliveryPipeline,
    Exporter,
    InMemoryExporter,
    JsonlExporter,
    Outcome,
    PaygenticExporter,
)
from paygentic_costs.export._http import classify_response, parse_retry_after

TOKEN = "sk_test_exporters_secret"


@pytest.fixture
def fake() -> Iterator[Any]:
    with fp.FakePaygentic(token=TOKEN) as server:
        yield server


def _event(key: str = "k-1", **data: Any) -> CostEvent:
    return CostEvent(
        type="cost.ai.inference", source="tests", idempotency_key=key,
        timestamp=datetime(2025, 3, 1, 12, 30, 0, 123456, tzinfo=timezone.utc),
        data={"amount": Decimal("0.00125"), "currency": "USD", "provider": "openai", "model": "gpt-4o-mini",
              "operation": "chat", **data},
        subject="cus_abc123",
    )


def test_public_names() -> None:
    assert export_module.__all__ == sorted(export_module.__all__)
    public = {name for name in vars(export_module) if not name.startswith(("_", "@"))}  # "@": pytest rewriting
    assert set(export_module.__all__) == public - {"annotations"}


# ---------------------------------------------------------------------------------------------- simple exporters


def test_console_exporter_prints_one_readable_line_per_event() -> None:
    stream = io.StringIO()
    exporter = ConsoleExporter(stream)
    assert isinstance(exporter, Exporter)
    outcomes = exporter.export([_event("a"), _event("b")], 1.0)
    assert [o.kind for o in outcomes] == ["ack", "ack"]
    lines = stream.getvalue().splitlines()
    assert lines[0] == (
        "2025-03-01T12:30:00.123Z  cus_abc123  cost.ai.inference  0.00125 USD  openai/gpt-4o-mini/chat  key=a"
    )
    assert len(lines) == 2 and lines[1].endswith("key=b")
    exporter.shutdown()


def test_jsonl_exporter_appends_exact_bodies(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    exporter = JsonlExporter(path)
    first, second = _event("a"), _event("b")
    assert [o.kind for o in exporter.export([first], 1.0)] == ["ack"]
    assert path.read_bytes() == first.to_json() + b"\n"  # flushed per batch, readable before shutdown
    exporter.export([second], 1.0)
    exporter.shutdown()
    JsonlExporter(path).export([first], 1.0)  # a new exporter appends
    assert path.read_bytes().splitlines() == [first.to_json(), second.to_json(), first.to_json()]


def test_in_memory_exporter_keeps_and_clears() -> None:
    exporter = InMemoryExporter()
    pipeline = DeliveryPipeline(exporter)
    for key in ("a", "b", "c"):
        pipeline.submit(_event(key))
    assert pipeline.flush(timeout=5)
    assert [e.idempotency_key for e in exporter.events] == ["a", "b", "c"]
    exporter.clear()
    assert exporter.events == []
    pipeline.shutdown()
    fp.assert_identity(pipeline.stats())


# ---------------------------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("status", "kind"),
    [(200, "ack"), (202, "ack"), (204, "ack"), (408, "retry"), (425, "retry"), (429, "retry"), (500, "retry"),
     (502, "retry"), (503, "retry"), (504, "retry"), (599, "retry"), (501, "reject"), (505, "reject"),
     (409, "retry"), (400, "reject"), (404, "reject"), (413, "reject"), (422, "reject"), (401, "auth"),
     (403, "auth"), (302, "reject")],
)
def test_classification(status: int, kind: str) -> None:
    assert classify_response(status).kind == kind


def test_reject_reason_comes_from_the_message_field() -> None:
    outcome = classify_response(422, None, b'{"message": "amount must be a number", "error": "unprocessable"}')
    assert outcome == Outcome("reject", reason="amount must be a number", status=422)
    assert classify_response(400, None, b"not json").reason == "not json"
    assert classify_response(404).reason == "HTTP 404"
    assert classify_response(409).reason == "conflict"


def test_retry_after_forms() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0.25 ") == 0.25
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None and parse_retry_after("nan") is None
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == 30.0
    assert classify_response(503, "7").retry_after == 7.0


# ---------------------------------------------------------------------------------------------- the wire


def test_wire_format_headers_and_path(fake: Any) -> None:
    exporter = PaygenticExporter(TOKEN, base_url=fake.url + "/api/")  # trailing slash stripped, prefix kept
    event = _event()
    assert [o.kind for o in exporter.export([event], 5.0)] == ["ack"]
    exporter.shutdown()
    [arrival] = fake.arrivals_snapshot()
    assert arrival.path == "/api/v0/events"
    assert arrival.body == event.to_json()
    headers = arrival.headers
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["content-type"] == "application/json" and headers["accept"] == "application/json"
    assert headers["user-agent"].startswith("paygentic-costs/")


def test_a_key_that_already_says_bearer_is_sent_as_is(fake: Any) -> None:
    exporter = PaygenticExporter(f"bearer {TOKEN}", base_url=fake.url)
    outcomes = exporter.export([_event()], 5.0)
    exporter.shutdown()
    assert fake.arrivals_snapshot()[0].authorization == f"bearer {TOKEN}"
    assert outcomes[0].kind == "auth"  # the fake wants the canonical "Bearer": proof nothing was re-prefixed


def test_batch_export_returns_outcomes_in_order(fake: Any) -> None:
    fake.script = lambda info: fp.respond(422, message="bad data") if info.key == "b" else None
    exporter = PaygenticExporter(TOKEN, base_url=fake.url)
    outcomes = exporter.export([_event("a"), _event("b"), _event("c")], 5.0)
    exporter.shutdown()
    assert [(o.kind, o.status) for o in outcomes] == [("ack", 202), ("reject", 422), ("ack", 202)]
    assert outcomes[1].reason == "bad data"


def test_unserialisable_event_is_rejected_not_raised(fake: Any) -> None:
    exporter = PaygenticExporter(TOKEN, base_url=fake.url)
    [outcome] = exporter.export([_event(blob=object())], 5.0)
    exporter.shutdown()
    assert outcome.kind == "reject" and outcome.reason is not None and outcome.reason.startswith("invalid_event")
    assert fake.arrivals_snapshot() == []


def test_shutdown_cuts_a_hung_export_short(fake: Any) -> None:
    fake.script = lambda info: fp.BLACK_HOLE
    exporter = PaygenticExporter(TOKEN, base_url=fake.url)
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(exporter.export([_event("a"), _event("b")], 60.0)))
    worker.start()
    assert fake.wait_for(lambda: len(fake.arrivals_snapshot()) == 2)
    started = time.monotonic()
    exporter.shutdown()
    worker.join(10)
    assert not worker.is_alive() and time.monotonic() - started < 5
    assert [o.kind for o in result[0]] == ["retry", "retry"]
    assert exporter.export([_event("c")], 1.0)[0].reason == "not_sent"  # closed for good


def test_export_traffic_is_not_instrumented() -> None:
    seen: list[bool] = []

    class Recording(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(is_suppressed())
            return httpx.Response(202, json={"object": "event"})

    exporter = PaygenticExporter(TOKEN, base_url="https://api.example.test", transport=Recording())
    assert [o.kind for o in exporter.export([_event()], 5.0)] == ["ack"]
    exporter.shutdown()
    assert seen == [True] and not is_suppressed()


def test_the_api_key_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exporter = PaygenticExporter(TOKEN, base_url=f"http://127.0.0.1:{port}")
    assert TOKEN not in repr(exporter) and TOKEN not in str(exporter) and "<redacted>" in repr(exporter)
    with caplog.at_level(logging.DEBUG):
        pipeline = DeliveryPipeline(exporter, **fp.FAST)
        pipeline.submit(_event())
        assert not pipeline.flush(timeout=0.5)
        stats = pipeline.stats()
        pipeline.shutdown(timeout=0.2)
    assert stats["requests"]["network"] >= 1
    fp.assert_identity(stats)
    fp.assert_identity(pipeline.stats())
    assert TOKEN not in caplog.text and TOKEN not in json.dumps(stats, default=str)
    for item in pipeline.dead_letters:
        assert TOKEN not in item.reason


@pytest.mark.parametrize("kwargs", [{"api_key": ""}, {"api_key": "k", "base_url": "ftp://x"},
                                    {"api_key": "k", "max_in_flight": 0}, {"api_key": "k", "timeout": 0}])
def test_invalid_exporter_settings_fail_fast(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        PaygenticExporter(**kwargs)
