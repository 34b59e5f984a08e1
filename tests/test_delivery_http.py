"""Delivery over real HTTP on 127.0.0.1 against the fake Paygentic server (delivery.md §2b)."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import fake_paygentic as fp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paygentic_costs._events import decimal_to_json, format_timestamp
from paygentic_costs.export import DeliveryPipeline, PaygenticExporter

TOKEN = "sk_test_delivery"

MakePipeline = Callable[..., DeliveryPipeline]


@pytest.fixture
def fake() -> Iterator[Any]:
    with fp.FakePaygentic(token=TOKEN) as server:
        yield server


@pytest.fixture
def make_pipeline() -> Iterator[MakePipeline]:
    """Pipelines with scaled timings; each is shut down and its stats identity checked after the test."""
    made: list[DeliveryPipeline] = []

    def make(url: str, *, exporter: Any = None, **kwargs: Any) -> DeliveryPipeline:
        options = {**fp.FAST, **kwargs}
        pipeline = DeliveryPipeline(exporter or PaygenticExporter(TOKEN, base_url=url), **options)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        fp.assert_identity(pipeline.stats())
        pipeline.shutdown(timeout=0.5)
        fp.assert_identity(pipeline.stats())


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------- T04 headline


@pytest.mark.slow
def test_t04_no_double_count_under_faults(make_pipeline: MakePipeline) -> None:
    """10 000 events; 30 % process-then-reset, 10 % process-then-500, 10 % 503 + Retry-After (scaled to 2 ms).

    The server runs in its own process so the two sides do not share one GIL.
    """
    rng = random.Random(20240601)
    amounts = {f"t04-{i}": Decimal(rng.randint(0, 10**6)) / Decimal(10**6) for i in range(10_000)}
    events = {key: fp.make_event(key, amount) for key, amount in amounts.items()}
    with fp.FakePaygenticProcess(token=TOKEN, reset=0.3, error_500=0.1, unavailable=0.1, retry_after="0.002") as fake:
        pipeline = make_pipeline(fake.url, backoff_floor=0.001, backoff_base=0.002, backoff_cap=0.02)
        for event in events.values():
            assert pipeline.submit(event)
        assert pipeline.flush(timeout=100)
        seen = fake.ledger()

    stored = {key: json.loads(body, parse_float=Decimal)["data"]["amount"] for key, body in seen["ledger"].items()}
    assert set(stored) == set(amounts)  # exactly 10 000 distinct keys, none missing, none extra
    assert sum(stored.values()) == sum(amounts.values())
    assert all(Decimal(stored[key]) == amount for key, amount in amounts.items())
    stats = pipeline.stats()
    assert stats["acknowledged"] == 10_000 and stats["dropped"] == {} and stats["set_aside"] == 0
    assert stats["retried"] > 0 and seen["duplicates"] > 0  # the faults really happened and were deduplicated
    # Every resend of an event reused its key and its byte-identical body.
    for key, body in seen["arrivals"]:
        if key is not None:
            assert body.encode() == events[key].to_json()
    fp.assert_identity(stats)


# ---------------------------------------------------------------------------------------------- hot path, hung server


def test_t01_hot_path_does_no_network_io(
    fake: Any, make_pipeline: MakePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 000 submits against a black-holed endpoint: no socket call on the caller thread; p99 reported."""
    fake.script = lambda info: fp.BLACK_HOLE
    io_threads: set[int] = set()
    for name in ("connect", "connect_ex", "send", "sendall", "sendto", "recv", "recv_into"):
        original = getattr(socket.socket, name)

        def spy(self: socket.socket, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            io_threads.add(threading.get_ident())
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(socket.socket, name, spy)
    pipeline = make_pipeline(fake.url, export_timeout=30)
    events = [fp.make_event(f"t01-{i}") for i in range(100_000)]
    durations = []
    clock = time.perf_counter_ns
    for event in events:
        start = clock()
        pipeline.submit(event)
        durations.append(clock() - start)
    assert fake.wait_for(lambda: len(fake.arrivals_snapshot()) > 0)  # the worker did reach the network
    assert threading.get_ident() not in io_threads
    assert io_threads  # the spy saw the worker's traffic, so it would have seen ours
    durations.sort()
    p50, p99 = durations[len(durations) // 2] / 1000, durations[int(len(durations) * 0.99)] / 1000
    print(f"submit(): median {p50:.1f} us, p99 {p99:.1f} us")
    assert p99 < 5_000  # a sanity bound only (the target is 50 us; bench/bench_exporter.py measures it)
    stats = pipeline.stats()
    assert stats["queued"] == 10_000 and stats["dropped"] == {"queue_full": 90_000}


def test_t02_hung_endpoint(fake: Any, make_pipeline: MakePipeline) -> None:
    """The server accepts TCP and never answers: submits stay fast, in-flight stays within the cap."""
    fake.script = lambda info: fp.BLACK_HOLE
    pipeline = make_pipeline(fake.url, export_timeout=30)
    started = time.monotonic()
    assert all(pipeline.submit(fp.make_event(f"t02-{i}")) for i in range(10_000))
    assert time.monotonic() - started < 5  # generous: the point is that nothing waits on the network
    assert fake.wait_for(lambda: fake.peak_concurrency >= 8)
    time.sleep(0.2)
    stats = pipeline.stats()
    assert stats["in_flight"] <= 8 and fake.peak_concurrency <= 8
    assert pipeline.exporter.peak_in_flight <= 8  # type: ignore[attr-defined]
    started = time.monotonic()
    pipeline.shutdown(timeout=0.5)
    assert time.monotonic() - started < 3
    stats = pipeline.stats()
    assert stats["dropped"] == {"shutdown_timeout": 10_000} and stats["acknowledged"] == 0


def test_t06_overflow_with_endpoint_down(make_pipeline: MakePipeline) -> None:
    notified: list[tuple[str, str]] = []
    pipeline = make_pipeline(
        f"http://127.0.0.1:{_closed_port()}", max_queue_size=100, on_error=lambda k, r, d: notified.append((k, r))
    )
    accepted = [pipeline.submit(fp.make_event(f"t06-{i}")) for i in range(1000)]
    assert accepted.count(True) == 100 and accepted.count(False) == 900
    stats = pipeline.stats()
    assert stats["dropped"] == {"queue_full": 900} and stats["queued"] == 100
    deadline = time.monotonic() + 10
    while len(notified) < 900 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(notified) == 900 and {reason for _, reason in notified} == {"queue_full"}
    assert {key for key, _ in notified} == {f"t06-{i}" for i in range(100, 1000)}
    assert pipeline.stats()["requests"]["network"] > 0


def test_t08_graceful_close_counts_the_unsent(fake: Any, make_pipeline: MakePipeline) -> None:
    fake.script = lambda info: fp.respond(202, delay=0.2) if info.body is not None else None
    pipeline = make_pipeline(fake.url)
    for i in range(1000):
        pipeline.submit(fp.make_event(f"t08-{i}"))
    time.sleep(0.1)
    started = time.monotonic()
    pipeline.shutdown(timeout=1.0)
    assert time.monotonic() - started < 2.5  # budget + margin
    stats = pipeline.stats()
    assert stats["acknowledged"] > 0
    assert stats["acknowledged"] + stats["dropped"]["shutdown_timeout"] == 1000
    assert not pipeline.submit(fp.make_event("late"))
    assert pipeline.stats()["dropped"]["shutdown"] == 1


# ---------------------------------------------------------------------------------------------- server answers


def test_t19_rate_limit_honours_retry_after(fake: Any, make_pipeline: MakePipeline) -> None:
    """429 + Retry-After: 0.5 for 1.5 s: no request inside any Retry-After window; concurrency halves."""
    until = time.monotonic() + 1.5

    def script(info: Any) -> Any:
        if info.body is not None and time.monotonic() < until:
            return fp.respond(429, retry_after="0.5")
        return None

    fake.script = script
    pipeline = make_pipeline(fake.url)
    for i in range(200):
        pipeline.submit(fp.make_event(f"t19-{i}"))
    assert fake.wait_for(lambda: any(a.status == 429 for a in fake.arrivals_snapshot()))
    assert fake.wait_for(lambda: pipeline.stats()["concurrency_limit"] < 8, timeout=5)
    assert pipeline.flush(timeout=20)
    arrivals = fake.arrivals_snapshot()
    answered_429 = [a.answered_at for a in arrivals if a.status == 429 and a.answered_at is not None]
    slack = 0.05  # requests already on the wire when the first 429 went out
    for answered in answered_429:
        inside = [a for a in arrivals if answered + slack < a.at < answered + 0.5 - slack]
        assert not inside, f"{len(inside)} request(s) sent inside a Retry-After window"
    stats = pipeline.stats()
    assert stats["acknowledged"] == 200 and stats["dropped"] == {} and stats["set_aside"] == 0
    assert stats["requests"]["4xx"] == len(answered_429)
    assert fake.keys() == {f"t19-{i}" for i in range(200)}


def test_t20_poison_event_is_sent_once_and_set_aside(fake: Any, make_pipeline: MakePipeline, tmp_path: Path) -> None:
    fake.script = lambda info: fp.respond(422, message="amount must be a number") if info.key == "poison" else None
    errors: list[tuple[str, str, str]] = []
    dead_letter = tmp_path / "dead.jsonl"
    pipeline = make_pipeline(fake.url, on_error=lambda *args: errors.append(args), dead_letter_path=dead_letter)
    poison = fp.make_event("poison")
    for event in (fp.make_event("ok-1"), poison, fp.make_event("ok-2")):
        pipeline.submit(event)
    assert pipeline.flush(timeout=10)
    assert len(fake.requests_for("poison")) == 1
    assert fake.keys() == {"ok-1", "ok-2"}
    assert errors == [("poison", "amount must be a number", "HTTP 422: amount must be a number")]
    stats = pipeline.stats()
    assert stats["set_aside"] == 1 and stats["acknowledged"] == 2
    assert stats["set_aside_reasons"] == {"amount must be a number": 1}
    [line] = dead_letter.read_text().splitlines()
    record = json.loads(line, parse_float=Decimal)
    assert record["reason"] == "amount must be a number" and record["status"] == 422
    assert json.dumps(record["event"], separators=(",", ":"), default=str).encode() != b""
    assert line.endswith(poison.to_json().decode() + "}")  # the exact body, for reconciliation
    [aside] = pipeline.dead_letters
    assert aside.event is poison and aside.status == 422


def test_t20_refused_key_pauses_and_loses_nothing(fake: Any, make_pipeline: MakePipeline) -> None:
    fake.token = "sk_rotated"  # our key is refused with 401
    errors: list[object] = []
    pipeline = make_pipeline(fake.url, on_error=lambda *args: errors.append(args), auth_probe_interval=0.2)
    for i in range(50):
        pipeline.submit(fp.make_event(f"t20-{i}"))
    assert fake.wait_for(lambda: sum(a.status == 401 for a in fake.arrivals_snapshot()) >= 3, timeout=5)
    # The server logs a 401 before the client has read it: wait for the client to have acted on the refusals.
    assert fake.wait_for(lambda: pipeline.stats()["circuit_state"] == "auth_paused", timeout=5)
    stats = pipeline.stats()
    assert stats["circuit_state"] == "auth_paused" and stats["queued"] == 50 and stats["dropped"] == {}
    refused = sum(a.status == 401 for a in fake.arrivals_snapshot())
    assert refused < 20  # paused: one probe per interval, not a retry storm
    fake.token = TOKEN
    assert pipeline.flush(timeout=10)
    assert fake.keys() == {f"t20-{i}" for i in range(50)}
    assert errors == [] and pipeline.stats()["set_aside"] == 0


def test_conflict_is_retried_three_times_then_set_aside(fake: Any, make_pipeline: MakePipeline) -> None:
    fake.script = lambda info: fp.respond(409) if info.key == "busy" else None
    pipeline = make_pipeline(fake.url)
    pipeline.submit(fp.make_event("busy"))
    assert pipeline.flush(timeout=10)
    assert len(fake.requests_for("busy")) == 4
    assert pipeline.stats()["set_aside_reasons"] == {"conflict": 1}


def test_t22_stale_keep_alive_is_replaced_at_once(fake: Any, make_pipeline: MakePipeline) -> None:
    """The server drops a connection that sat idle (the race where it closes as we send): one immediate resend
    on a new connection, not counted as a failure, no backoff."""
    fake.script = lambda info: (
        fp.RESET_BEFORE_BODY if info.body is None and info.conn_index > 0 and info.idle_for > 0.3 else None
    )
    pipeline = make_pipeline(fake.url, backoff_floor=5.0, backoff_base=5.0)  # a counted failure would stall
    pipeline.submit(fp.make_event("t22-a"))
    assert pipeline.flush(timeout=5)
    time.sleep(0.5)
    pipeline.submit(fp.make_event("t22-b"))
    assert pipeline.flush(timeout=3)
    stats = pipeline.stats()
    assert stats["retried"] == 0 and stats["requests"]["network"] == 0
    assert pipeline.exporter.reconnects == 1  # type: ignore[attr-defined]
    arrivals = fake.arrivals_snapshot()
    assert [a.action for a in arrivals] == ["respond", "reset_before_body", "respond"]
    assert arrivals[1].conn_id == arrivals[0].conn_id and arrivals[2].conn_id != arrivals[0].conn_id


def test_idle_connections_closed_by_the_server_are_not_failures(make_pipeline: MakePipeline) -> None:
    with fp.FakePaygentic(token=TOKEN, idle_timeout=0.2) as fake:
        pipeline = make_pipeline(fake.url, backoff_floor=5.0, backoff_base=5.0)
        pipeline.submit(fp.make_event("idle-a"))
        assert pipeline.flush(timeout=5)
        time.sleep(0.5)
        pipeline.submit(fp.make_event("idle-b"))
        assert pipeline.flush(timeout=3)
        assert pipeline.stats()["retried"] == 0 and fake.keys() == {"idle-a", "idle-b"}
        pipeline.shutdown()


def test_t24_timestamps_are_record_time(fake: Any, make_pipeline: MakePipeline) -> None:
    until = time.monotonic() + 0.6
    fake.script = lambda info: fp.respond(503) if info.body is not None and time.monotonic() < until else None
    pipeline = make_pipeline(fake.url)
    events = [fp.make_event(f"t24-{i}") for i in range(20)]
    for event in events:
        pipeline.submit(event)
    assert pipeline.flush(timeout=10)
    ledger = {key: json.loads(body) for key, body in fake.ledger.items()}
    for event in events:
        assert ledger[event.idempotency_key]["timestamp"] == format_timestamp(event.timestamp)
    assert pipeline.stats()["retried"] > 0  # they did wait through the outage


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[Any]:
    with fp.FakePaygentic(token=TOKEN) as server:
        yield server


_amounts = st.builds(
    # Built from a string, which is exact; Decimal.scaleb would round to the context's 28 digits.
    lambda digits, places: Decimal(f"{digits}e-{places}"),
    st.integers(min_value=0, max_value=10**28),
    st.integers(min_value=0, max_value=18),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_amounts, min_size=1, max_size=10))
def test_amounts_arrive_with_exactly_their_digits(shared_fake: Any, amounts: list[Decimal]) -> None:
    pipeline = DeliveryPipeline(PaygenticExporter(TOKEN, base_url=shared_fake.url), **fp.FAST)
    try:
        keys = [f"dec-{uuid.uuid4().hex}" for _ in amounts]  # hypothesis seeds `random` per example
        for key, amount in zip(keys, amounts, strict=True):
            assert pipeline.submit(fp.make_event(key, amount))
        assert pipeline.flush(timeout=10)
        for key, amount in zip(keys, amounts, strict=True):
            raw = json.loads(shared_fake.ledger[key], parse_float=Decimal, parse_int=Decimal)["data"]["amount"]
            assert raw.as_tuple() == amount.as_tuple()  # the same digits and exponent, not just equal
            assert decimal_to_json(raw) == decimal_to_json(amount)
        fp.assert_identity(pipeline.stats())
    finally:
        pipeline.shutdown(timeout=1)
