"""pause() / resume() / flush() on a paused pipeline (the serverless freeze, delivery.md §4.9)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import fake_paygentic as fp
import pytest

from paygentic_costs import CostEvent
from paygentic_costs.export import DeliveryPipeline, InMemoryExporter, Outcome


@pytest.fixture
def pipelines() -> Iterator[list[DeliveryPipeline]]:
    made: list[DeliveryPipeline] = []
    yield made
    for pipeline in made:
        fp.assert_identity(pipeline.stats())
        pipeline.shutdown(timeout=0.5)
        fp.assert_identity(pipeline.stats())


class SlowExporter:
    """Acknowledges after ``delay`` seconds; remembers the keys it was handed, and when."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.sent: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def export(self, events: Sequence[CostEvent], timeout: float) -> Sequence[Outcome]:
        with self.lock:
            self.sent.extend((time.monotonic(), event.idempotency_key) for event in events)
        if self.delay:
            time.sleep(self.delay)
        return [Outcome("ack", status=202)] * len(events)

    def shutdown(self) -> None:
        pass

    def keys(self) -> set[str]:
        with self.lock:
            return {key for _, key in self.sent}


def _new(made: list[DeliveryPipeline], exporter: Any, **kwargs: Any) -> DeliveryPipeline:
    pipeline = DeliveryPipeline(exporter, **{**fp.FAST, **kwargs})
    made.append(pipeline)
    return pipeline


def test_paused_pipeline_sends_nothing_until_resumed(pipelines: list[DeliveryPipeline]) -> None:
    exporter = InMemoryExporter()
    pipeline = _new(pipelines, exporter)
    pipeline.pause()
    assert pipeline.paused and pipeline.stats()["paused"]
    for i in range(20):
        assert pipeline.submit(fp.make_event(f"p-{i}"))
    time.sleep(0.3)
    assert exporter.events == []
    stats = pipeline.stats()
    assert stats["queued"] == 20 and stats["acknowledged"] == 0
    fp.assert_identity(stats)
    pipeline.resume()
    assert not pipeline.paused
    deadline = time.monotonic() + 5
    while len(exporter.events) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert {event.idempotency_key for event in exporter.events} == {f"p-{i}" for i in range(20)}


def test_flush_sends_while_paused_and_pauses_again(pipelines: list[DeliveryPipeline]) -> None:
    exporter = SlowExporter()
    pipeline = _new(pipelines, exporter)
    pipeline.pause()
    for i in range(10):
        pipeline.submit(fp.make_event(f"f-{i}"))
    assert pipeline.flush(timeout=5)
    assert exporter.keys() == {f"f-{i}" for i in range(10)}
    assert pipeline.paused  # flush re-paused it
    flushed_at = time.monotonic()
    for i in range(5):
        pipeline.submit(fp.make_event(f"after-{i}"))
    time.sleep(0.3)
    assert all(at < flushed_at for at, _ in exporter.sent)  # nothing sent after the flush returned
    assert pipeline.stats()["queued"] == 5


def test_pause_lets_in_flight_requests_finish(pipelines: list[DeliveryPipeline]) -> None:
    exporter = SlowExporter(delay=0.3)
    pipeline = _new(pipelines, exporter, max_in_flight=1, max_batch_size=1)
    pipeline.submit(fp.make_event("in-flight"))
    deadline = time.monotonic() + 5
    while not exporter.sent and time.monotonic() < deadline:
        time.sleep(0.005)
    pipeline.pause()
    for i in range(3):
        pipeline.submit(fp.make_event(f"held-{i}"))
    time.sleep(0.6)
    stats = pipeline.stats()
    assert stats["acknowledged"] == 1  # the request on the wire completed
    assert exporter.keys() == {"in-flight"}
    assert stats["queued"] == 3


def test_shutdown_of_a_paused_pipeline_still_delivers(pipelines: list[DeliveryPipeline]) -> None:
    exporter = InMemoryExporter()
    pipeline = _new(pipelines, exporter)
    pipeline.pause()
    for i in range(5):
        pipeline.submit(fp.make_event(f"s-{i}"))
    pipeline.shutdown(timeout=2)
    assert len(exporter.events) == 5
    assert pipeline.stats()["acknowledged"] == 5
