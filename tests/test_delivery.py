"""The delivery pipeline with in-process exporters: lifecycle, flush, shutdown, faults, horizon, thread hygiene."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import fake_paygentic as fp
import pytest

from paygentic_costs import CostEvent
from paygentic_costs._errors import ConfigurationError
from paygentic_costs.export import DeliveryPipeline, InMemoryExporter, Outcome


@pytest.fixture
def pipelines() -> Iterator[list[DeliveryPipeline]]:
    """Pipelines a test creates: identity checked, then shut down, after the test."""
    made: list[DeliveryPipeline] = []
    yield made
    for pipeline in made:
        fp.assert_identity(pipeline.stats())
        pipeline.shutdown(timeout=0.5)
        fp.assert_identity(pipeline.stats())


def _new(made: list[DeliveryPipeline], exporter: Any, **kwargs: Any) -> DeliveryPipeline:
    pipeline = DeliveryPipeline(exporter, **{**fp.FAST, **kwargs})
    made.append(pipeline)
    return pipeline


class GatedExporter:
    """Acknowledges, but only once the gate is open; records which thread exported."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.events: list[CostEvent] = []
        self.threads: set[int] = set()
        self.shut = False

    def export(self, events: Sequence[CostEvent], timeout: float) -> Sequence[Outcome]:
        self.threads.add(threading.get_ident())
        if not self.gate.wait(timeout):
            return [Outcome("retry", reason="timeout")] * len(events)
        self.events.extend(events)
        return [Outcome("ack", status=202)] * len(events)

    def shutdown(self) -> None:
        self.shut = True
        self.gate.set()


class FlakyExporter:
    """Raises, or returns no outcomes, for the first few calls; then acknowledges."""

    def __init__(self, failures: int, mode: str = "raise") -> None:
        self.failures = failures
        self.mode = mode
        self.events: list[CostEvent] = []

    def export(self, events: Sequence[CostEvent], timeout: float) -> Sequence[Outcome]:
        if self.failures > 0:
            self.failures -= 1
            if self.mode == "raise":
                raise RuntimeError("exporter bug")
            return []  # no outcome at all for the events it was given
        self.events.extend(events)
        return [Outcome("ack")] * len(events)

    def shutdown(self) -> None:
        """Nothing to release."""


def test_construction_starts_no_thread_and_first_submit_starts_one(pipelines: list[DeliveryPipeline]) -> None:
    before = {t.ident for t in threading.enumerate()}
    pipeline = _new(pipelines, InMemoryExporter())
    assert {t.ident for t in threading.enumerate()} == before
    assert pipeline.flush(timeout=1)  # nothing submitted: trivially flushed, still no thread
    assert {t.ident for t in threading.enumerate()} == before
    assert pipeline.submit(fp.make_event("first"))
    new = [t for t in threading.enumerate() if t.ident not in before]
    assert [t.name for t in new] == ["paygentic_costs-export"] and new[0].daemon
    assert pipeline.flush(timeout=5)
    assert pipeline.stats()["acknowledged"] == 1


def test_flush_waits_for_delivery_and_honours_its_timeout(pipelines: list[DeliveryPipeline]) -> None:
    exporter = GatedExporter()
    pipeline = _new(pipelines, exporter)
    for i in range(10):
        pipeline.submit(fp.make_event(f"f-{i}"))
    started = time.monotonic()
    assert pipeline.flush(timeout=0.2) is False
    assert time.monotonic() - started < 2
    assert pipeline.stats()["queued"] == 10
    exporter.gate.set()
    assert pipeline.flush(timeout=5) is True
    stats = pipeline.stats()
    assert stats["acknowledged"] == 10 and stats["queued"] == 0 and stats["oldest_pending_age_s"] == 0.0
    assert threading.get_ident() not in exporter.threads


def test_flush_inside_a_running_event_loop_and_aflush(pipelines: list[DeliveryPipeline]) -> None:
    exporter = InMemoryExporter()
    pipeline = _new(pipelines, exporter)

    async def main() -> tuple[bool, bool]:
        pipeline.submit(fp.make_event("loop-1"))
        synchronous = pipeline.flush(timeout=5)  # blocks the loop, but completes
        pipeline.submit(fp.make_event("loop-2"))
        return synchronous, await pipeline.aflush(timeout=5)

    assert asyncio.run(main()) == (True, True)
    assert [e.idempotency_key for e in exporter.events] == ["loop-1", "loop-2"]


def test_shutdown_is_idempotent_and_later_submits_are_counted(pipelines: list[DeliveryPipeline]) -> None:
    errors: list[tuple[str, str, str]] = []
    exporter = InMemoryExporter()
    pipeline = _new(pipelines, exporter, on_error=lambda *args: errors.append(args))
    for i in range(100):
        pipeline.submit(fp.make_event(f"s-{i}"))
    pipeline.shutdown(timeout=5)
    pipeline.shutdown(timeout=5)
    assert len(exporter.events) == 100
    assert pipeline.submit(fp.make_event("late")) is False
    stats = pipeline.stats()
    assert stats["acknowledged"] == 100 and stats["dropped"] == {"shutdown": 1}
    assert errors == [("late", "shutdown", "the pipeline is shut down; the event was dropped")]
    assert pipeline.flush(timeout=0.1) is True  # everything accepted was delivered


def test_shutdown_counts_what_it_could_not_deliver(pipelines: list[DeliveryPipeline]) -> None:
    exporter = GatedExporter()
    pipeline = _new(pipelines, exporter)
    for i in range(50):
        pipeline.submit(fp.make_event(f"d-{i}"))
    target = pipeline.stats()["recorded"]
    started = time.monotonic()
    pipeline.shutdown(timeout=0.3)
    assert time.monotonic() - started < 2
    stats = pipeline.stats()
    assert stats["dropped"] == {"shutdown_timeout": 50 - stats["acknowledged"]}
    assert stats["recorded"] == target
    assert exporter.shut
    assert pipeline.flush(timeout=0.1) is False  # accepted events were lost: flush must not claim success


def test_t16_no_thread_leak_over_many_pipelines() -> None:
    baseline = threading.active_count()
    for i in range(1000):
        pipeline = DeliveryPipeline(InMemoryExporter())
        pipeline.submit(fp.make_event(f"leak-{i}"))
        pipeline.shutdown(timeout=5)
        fp.assert_identity(pipeline.stats())
        assert pipeline.stats()["acknowledged"] == 1
    assert abs(threading.active_count() - baseline) <= 1


def test_t21_dedup_horizon_sets_the_event_aside_unsent(pipelines: list[DeliveryPipeline]) -> None:
    now = [1_000_000.0]
    errors: list[tuple[str, str, str]] = []
    exporter = InMemoryExporter()
    pipeline = _new(pipelines, exporter, clock=lambda: now[0], on_error=lambda *args: errors.append(args))
    gate = threading.Event()
    original = exporter.export

    def slow_export(events: Sequence[CostEvent], timeout: float) -> Sequence[Outcome]:
        gate.wait(5)
        return original(events, timeout)

    exporter.export = slow_export  # type: ignore[method-assign]
    pipeline.submit(fp.make_event("warm-up"))  # occupies the worker until the gate opens
    pipeline.submit(fp.make_event("stale"))  # recorded at t0
    now[0] += 23 * 3600 + 60  # 23 h 1 min later, before it was ever sent
    gate.set()
    assert pipeline.flush(timeout=5)
    assert [e.idempotency_key for e in exporter.events] == ["warm-up"]
    stats = pipeline.stats()
    assert stats["set_aside"] == 1 and stats["set_aside_reasons"] == {"dedup_window_expired": 1}
    assert errors == [("stale", "dedup_window_expired", "dedup_window_expired")]
    assert pipeline.dead_letters[0].event.idempotency_key == "stale"


@pytest.mark.allow_internal_errors
def test_t03_exporter_exceptions_do_not_kill_the_worker(
    pipelines: list[DeliveryPipeline], caplog: pytest.LogCaptureFixture
) -> None:
    for mode in ("raise", "short"):
        exporter = FlakyExporter(failures=3, mode=mode)
        pipeline = _new(pipelines, exporter)
        with caplog.at_level(logging.WARNING, logger="paygentic_costs.internal"):
            for i in range(20):
                assert pipeline.submit(fp.make_event(f"{mode}-{i}"))
            assert pipeline.flush(timeout=10)
        assert len({e.idempotency_key for e in exporter.events}) == 20
        assert pipeline._worker is not None and pipeline._worker.is_alive()
        assert pipeline.stats()["retried"] >= 3
    assert "export" in caplog.text


@pytest.mark.allow_internal_errors
def test_t03_a_raising_on_error_callback_is_contained(pipelines: list[DeliveryPipeline]) -> None:
    calls: list[str] = []

    def on_error(key: str, reason: str, detail: str) -> None:
        calls.append(key)
        raise ValueError("callback bug")

    exporter = GatedExporter()
    pipeline = _new(pipelines, exporter, max_queue_size=5, on_error=on_error)
    results = [pipeline.submit(fp.make_event(f"cb-{i}")) for i in range(10)]
    assert results.count(False) == 5
    exporter.gate.set()
    assert pipeline.flush(timeout=5)
    deadline = time.monotonic() + 5
    while len(calls) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) == 5
    assert pipeline._worker is not None and pipeline._worker.is_alive()


class RejectAll:
    def export(self, events: Sequence[CostEvent], timeout: float) -> Sequence[Outcome]:
        return [Outcome("reject", reason="invalid type", status=400)] * len(events)

    def shutdown(self) -> None:
        """Nothing to release."""


def test_t03_an_unwritable_dead_letter_file_is_logged_not_raised(
    pipelines: list[DeliveryPipeline], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = _new(pipelines, RejectAll(), dead_letter_path=tmp_path)  # a directory: every append fails
    with caplog.at_level(logging.ERROR, logger="paygentic_costs.internal"):
        pipeline.submit(fp.make_event("poison"))
        assert pipeline.flush(timeout=5)
    assert "cannot append to the dead-letter file" in caplog.text
    assert pipeline.stats()["set_aside"] == 1 and pipeline.dead_letters[0].reason == "invalid type"
    assert pipeline._worker is not None and pipeline._worker.is_alive()


def test_dead_letter_file_lines_are_replayable(pipelines: list[DeliveryPipeline], tmp_path: Path) -> None:
    path = tmp_path / "state" / "dead-letter.jsonl"  # the directory is created on first use
    pipeline = _new(pipelines, RejectAll(), dead_letter_path=path)
    event = fp.make_event("poison", "0.000000123")
    pipeline.submit(event)
    assert pipeline.flush(timeout=5)
    [line] = path.read_text().splitlines()
    record = json.loads(line)
    assert record["reason"] == "invalid type" and record["status"] == 400 and record["attempts"] == 0
    assert CostEvent.from_json(json.dumps(record["event"], separators=(",", ":"))).idempotency_key == "poison"
    assert line.endswith(',"event":' + event.to_json().decode() + "}")  # byte-exact body, digits intact


@pytest.mark.allow_internal_errors
def test_t03_submit_never_raises(pipelines: list[DeliveryPipeline]) -> None:
    def broken_clock() -> float:
        raise OSError("clock unavailable")

    pipeline = _new(pipelines, InMemoryExporter(), clock=broken_clock)
    assert pipeline.submit(fp.make_event("x")) is False
    assert pipeline.submit(None) is False  # type: ignore[arg-type]


def test_delivery_without_a_worker_thread_happens_on_the_caller(
    pipelines: list[DeliveryPipeline], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where no thread can start (interpreter exit, a host without threads), flush and shutdown deliver inline."""

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    exporter = GatedExporter()
    exporter.gate.set()
    pipeline = _new(pipelines, exporter)
    with caplog.at_level(logging.WARNING, logger="paygentic_costs"):
        assert pipeline.submit(fp.make_event("inline-1"))
    assert "cannot start the delivery thread" in caplog.text
    assert pipeline.flush(timeout=5)
    assert pipeline.submit(fp.make_event("inline-2"))
    pipeline.shutdown(timeout=5)
    assert [e.idempotency_key for e in exporter.events] == ["inline-1", "inline-2"]
    assert exporter.threads == {threading.get_ident()}


def test_rejects_and_retries_follow_the_outcomes(pipelines: list[DeliveryPipeline]) -> None:
    class Scripted:
        def __init__(self) -> None:
            self.calls: dict[str, int] = {}

        def export(self, events: Sequence[CostEvent], timeout: float) -> Sequence[Outcome]:
            out = []
            for event in events:
                key = event.idempotency_key
                self.calls[key] = self.calls.get(key, 0) + 1
                if key == "bad":
                    out.append(Outcome("reject", reason="invalid type", status=400))
                elif key == "flaky" and self.calls[key] < 3:
                    out.append(Outcome("retry", status=502))
                else:
                    out.append(Outcome("ack", status=202))
            return out

        def shutdown(self) -> None:
            """Nothing to release."""

    exporter = Scripted()
    pipeline = _new(pipelines, exporter)
    for key in ("good", "bad", "flaky"):
        pipeline.submit(fp.make_event(key))
    assert pipeline.flush(timeout=5)
    assert exporter.calls == {"good": 1, "bad": 1, "flaky": 3}
    stats = pipeline.stats()
    assert stats["acknowledged"] == 2 and stats["set_aside"] == 1 and stats["retried"] == 2
    assert stats["requests"] == {"2xx": 2, "4xx": 1, "5xx": 2, "network": 0}


def test_stats_has_every_documented_key(pipelines: list[DeliveryPipeline]) -> None:
    stats = _new(pipelines, InMemoryExporter()).stats()
    assert {"recorded", "acknowledged", "queued", "spooled", "set_aside", "dropped", "in_flight",
            "concurrency_limit", "paused_until", "oldest_pending_age_s", "requests", "retried"} <= set(stats)
    assert stats["spooled"] == 0 and stats["concurrency_limit"] == 8 and stats["paused_until"] is None


@pytest.mark.parametrize("kwargs", [{"max_queue_size": 0}, {"max_in_flight": 0}, {"max_in_flight": 65},
                                    {"shutdown_timeout": -1.0}, {"backoff_cap": float("nan")}])
def test_invalid_settings_fail_fast(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        DeliveryPipeline(InMemoryExporter(), **kwargs)
