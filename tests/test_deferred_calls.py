"""Provider calls finished through the integration API are priced off the caller's thread, within the linger.

What must not change for the user: the key order inside a job, what flush(), stats() and shutdown() see, strict
mode raising at the call, test captures receiving the event at once, and a forked child never sending what its
parent deferred.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

import paygentic_costs as pc
from paygentic_costs import UnattributedCostError
from paygentic_costs._runtime import get_runtime
from paygentic_costs.export import InMemoryExporter
from paygentic_costs.instrumentation import Instrumentor, Patch, Reported, Usage
from paygentic_costs.testing import capture, internal_errors

RATES = {"llm": {"toy:toy-1": {"input_per_mtok": "1", "output_per_mtok": "2"},
                 "toy:toy-2": {"input_per_mtok": "10", "output_per_mtok": "20"}}}


class Direct(Instrumentor):
    """An integration with nothing to patch: the test drives start_call / finish itself, as a wrapper would."""

    name = "direct"
    distribution = "httpx"
    supported = ">=0.1"
    provider = "toy"

    def _patches(self) -> Iterable[Patch]:
        return ()


@pytest.fixture
def direct() -> Iterator[Direct]:
    instrumentor = Direct()
    instrumentor.instrument()
    yield instrumentor
    instrumentor.uninstrument()


def _finish(instrumentor: Direct, tokens: int, request_id: str) -> None:
    call = instrumentor.start_call("create", model="toy-1")
    assert call is not None
    with call:
        pass
    call.finish(Usage(input_tokens=tokens, output_tokens=tokens // 2), request_id=request_id)


def test_the_worker_delivers_a_finished_call_without_flush(direct: Direct) -> None:
    exporter = InMemoryExporter()
    pc.configure(exporter=exporter, rates=RATES)
    with pc.customer("cus_1"):
        _finish(direct, 1_000_000, "r1")
    deadline = time.monotonic() + 10
    while not exporter.events and time.monotonic() < deadline:
        time.sleep(0.01)
    (event,) = exporter.events
    assert event.amount == Decimal(2) and event.data["request_id"] == "r1"


def test_calls_after_a_drain_and_after_a_quiet_spell_are_delivered_without_flush(direct: Direct) -> None:
    # Within a window (one linger after a drain) the worker wakes at the window's end by itself and arming does not
    # wake it; for a grace after the last drain it keeps waking every linger by itself; after that it may sleep long,
    # and arming must wake it. Each call here lands in one of those states; a missed wake would leave it waiting for
    # the worker's idle timeout.
    from paygentic_costs.export._processor import _DEFER_GRACE, _IDLE_WAIT

    exporter = InMemoryExporter()
    pc.configure(exporter=exporter, rates=RATES)

    def delivered_soon(count: int) -> bool:
        deadline = time.monotonic() + _IDLE_WAIT / 2
        while len(exporter.events) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return len(exporter.events) >= count

    with pc.customer("cus_1"):
        _finish(direct, 10, "r1")
        assert delivered_soon(1)
        _finish(direct, 10, "r2")  # r1's drain opened a window: nobody wakes the worker
        assert delivered_soon(2)
        time.sleep(0.3)  # the windows have closed, the grace has not: the worker wakes every linger by itself
        _finish(direct, 10, "r3")
        assert delivered_soon(3)
        time.sleep(_DEFER_GRACE + 0.3)  # the grace is over: the worker is back in its long sleep
        _finish(direct, 10, "r4")
        assert delivered_soon(4)
    assert [event.data["request_id"] for event in exporter.events] == ["r1", "r2", "r3", "r4"]


def test_stats_and_flush_see_every_call_and_keys_follow_the_finish_order(direct: Direct) -> None:
    exporter = InMemoryExporter()
    pc.configure(exporter=exporter, rates=RATES)
    with pc.job("J", customer="cus_1"):
        for index in range(1, 41):
            _finish(direct, index * 1000, f"r{index}")
    assert pc.stats()["recorded"] == 40  # stats() counts calls finished before it, drained or not
    assert pc.flush(5)
    by_request = {event.data["request_id"]: event for event in exporter.events}
    assert len(by_request) == 40
    assert by_request["r1"].idempotency_key == "J-cost.ai.inference"
    for index in range(2, 41):
        assert by_request[f"r{index}"].idempotency_key == f"J-cost.ai.inference-{index}"
    assert sum(e.amount for e in exporter.events) == sum(Decimal(i * 1000 * 2) / 10**6 for i in range(1, 41))


def test_the_event_keeps_the_time_the_call_finished(direct: Direct) -> None:
    exporter = InMemoryExporter()
    pc.configure(exporter=exporter, rates=RATES)
    with pc.customer("cus_1"):
        before = time.time()
        _finish(direct, 10, "r1")
        after = time.time()
    time.sleep(0.2)  # past the linger: a timestamp taken at pricing time would be later than `after`
    assert pc.flush(5)
    (event,) = exporter.events
    assert before <= event.timestamp.timestamp() <= after


def test_unpriced_and_unattributed_calls_are_counted(direct: Direct) -> None:
    pc.configure(exporter=InMemoryExporter(), rates=RATES)
    call = direct.start_call("create", model="unknown-model")
    assert call is not None
    call.finish(Usage(input_tokens=5))  # no customer in context
    with pc.customer("cus_1"):
        call = direct.start_call("create", model="unknown-model")
        assert call is not None
        call.finish(Usage(input_tokens=5))
    stats = pc.stats()
    assert stats["unattributed"] == 1 and stats["unpriced"] == 1 and stats["recorded"] == 0


def test_strict_mode_raises_at_the_call_and_captures_get_the_event_at_once(direct: Direct) -> None:
    pc.configure(exporter=InMemoryExporter(), rates=RATES, strict=True)
    call = direct.start_call("create", model="toy-1")
    assert call is not None
    with pytest.raises(UnattributedCostError):
        call.finish(Usage(input_tokens=5))
    with capture() as costs, pc.customer("cus_1"):
        _finish(direct, 10, "r1")
        assert len(costs.events) == 1  # before any flush or linger


def test_shutdown_delivers_deferred_calls(direct: Direct) -> None:
    exporter = InMemoryExporter()
    pc.configure(exporter=exporter, rates=RATES)
    with pc.customer("cus_1"):
        for index in range(5):
            _finish(direct, 10, f"r{index}")
    pc.shutdown(5)
    assert sorted(e.data["request_id"] for e in exporter.events) == [f"r{index}" for index in range(5)]


def test_a_forked_child_never_sends_what_its_parent_deferred(tmp_path: object) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        import paygentic_costs as pc
        from paygentic_costs.export import InMemoryExporter
        from paygentic_costs.instrumentation import Instrumentor, Usage

        class Direct(Instrumentor):
            name, distribution, supported, provider = "direct", "httpx", ">=0.1", "toy"
            def _patches(self):
                return ()

        exporter = InMemoryExporter()
        pc.configure(exporter=exporter, rates={"llm": {"toy:toy-1": {"input_per_mtok": "1"}}})
        direct = Direct()
        direct.instrument()
        with pc.customer("cus_1"):
            for i in range(3):
                call = direct.start_call("create", model="toy-1")
                call.finish(Usage(input_tokens=10), request_id=f"parent-{i}")
            pid = os.fork()
            if pid == 0:
                call = direct.start_call("create", model="toy-1")
                call.finish(Usage(input_tokens=10), request_id="child")
                pc.flush(5)
                ids = sorted(e.data["request_id"] for e in exporter.events)
                print("child", ",".join(ids), flush=True)
                os._exit(0)
            os.waitpid(pid, 0)
        pc.flush(5)
        print("parent", ",".join(sorted(e.data["request_id"] for e in exporter.events)), flush=True)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert lines == {"child": "child", "parent": "parent-0,parent-1,parent-2"}


class ProviderUsage:
    """A provider's parsed usage object, as an SDK hands it over."""

    def __init__(self, prompt: int | None, completion: int | None) -> None:
        self.prompt = prompt
        self.completion = completion


def _read(usage: ProviderUsage) -> Usage | None:
    if usage.prompt is None and usage.completion is None:
        return None
    return Usage(input_tokens=usage.prompt, output_tokens=usage.completion)


def test_finish_from_reads_the_usage_when_pricing(direct: Direct) -> None:
    exporter = InMemoryExporter()
    pc.configure(exporter=exporter, rates=RATES)
    reads: list[int] = []

    def counting_read(usage: ProviderUsage) -> Usage | None:
        reads.append(1)
        return _read(usage)

    with pc.customer("cus_1"):
        call = direct.start_call("create", model="toy-1")
        assert call is not None
        call.finish_from(counting_read, ProviderUsage(1_000_000, 1_000_000), request_id="r1")
        call.finish_from(counting_read, ProviderUsage(5, 5), request_id="again")  # finalize-once: ignored
        empty = direct.start_call("create", model="toy-1")
        assert empty is not None
        empty.finish_from(_read, ProviderUsage(None, None))
    assert pc.flush(5)
    (event,) = exporter.events
    assert event.amount == Decimal(3) and event.data["request_id"] == "r1" and len(reads) == 1
    assert pc.stats()["usage_missing"] == 1


def test_a_reader_can_report_the_model_id_and_tier_with_the_usage(direct: Direct) -> None:
    exporter = InMemoryExporter()
    pc.configure(exporter=exporter, rates=RATES)

    def read(raw: bytes) -> Reported | None:  # e.g. a stream's last event, kept as bytes until it is priced
        prompt, completion, model, *request_id = raw.decode().split()
        usage = Usage(input_tokens=int(prompt), output_tokens=int(completion))
        return Reported(usage, model=model, request_id=request_id[0] if request_id else None)

    with pc.customer("cus_1"):
        for source in (b"1000000 1000000 toy-2 chunk-1", b"1000000 0 toy-2"):
            call = direct.start_call("create", model="toy-1")
            assert call is not None
            call.finish_from(read, source, request_id="from-the-call")
        empty = direct.start_call("create", model="toy-1")
        assert empty is not None
        empty.finish_from(lambda raw: Reported(None, model="toy-2"), b"")
    assert pc.flush(5)
    first, second = exporter.events
    # The reported model prices the call (toy-2's rates, not the requested toy-1's) and names it; a reported id wins
    # over the one given to finish_from, and where the reader left it None, the one given to finish_from is kept.
    assert (first.amount, second.amount) == (Decimal(30), Decimal(10))
    assert first.data["model"] == second.data["model"] == "toy-2"
    assert (first.data["request_id"], second.data["request_id"]) == ("chunk-1", "from-the-call")
    assert pc.stats()["usage_missing"] == 1


@pytest.mark.allow_internal_errors
def test_a_failing_reader_is_an_internal_error_not_the_callers(direct: Direct) -> None:
    pc.configure(exporter=InMemoryExporter(), rates=RATES)

    def broken(usage: object) -> Usage | None:
        raise KeyError("shape changed")

    with internal_errors() as errors, pc.customer("cus_1"):
        call = direct.start_call("create", model="toy-1")
        assert call is not None
        call.finish_from(broken, object())  # returns normally
        assert pc.flush(5)
    assert [type(error) for error in errors] == [KeyError]
    assert pc.stats()["recorded"] == 0


def test_with_durability_sync_a_finished_call_is_on_disk_when_finish_returns(direct: Direct, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    pc.configure(exporter=InMemoryExporter(), rates=RATES, spool_dir=spool, durability="sync")
    get_runtime().pipeline.pause()  # what flush_after does: nothing is sent (nor deleted) while the file is read
    with pc.customer("cus_1"):
        _finish(direct, 10, "r1")
        rows = 0
        for path in spool.rglob("spool-*.db"):  # read before any flush(), stats() or linger could price the call
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                rows += conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            finally:
                conn.close()
    assert rows == 1
