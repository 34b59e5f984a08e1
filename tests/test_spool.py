"""The durable spool (delivery.md §4.3): commit before send, close to disk, adoption, corruption, disk errors,
the dedup horizon for events from disk, fork, and the ``paygentic-costs spool`` command."""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import fake_paygentic as fp
import pytest

import paygentic_costs as pc
from paygentic_costs import CostEvent
from paygentic_costs import _runtime as runtime_module
from paygentic_costs.cli import main as cli_main
from paygentic_costs.export import DeliveryPipeline, InMemoryExporter, Outcome, PaygenticExporter
from paygentic_costs.export._spool import SpoolStore
from paygentic_costs.export._spool_file import account_directory, list_spool_files

TOKEN = "sk_test_spool"
SRC = str(Path(__file__).resolve().parents[1] / "src")
# Spool timings scaled for tests (production: 100 ms commit window, adoption and reopen every 60 s).
SPOOL_FAST: dict[str, Any] = {"commit_interval": 0.02, "adopt_interval": 0.2, "reopen_interval": 0.2}

Make = Callable[..., DeliveryPipeline]


class DownExporter:
    """The endpoint is down: every send fails as a network error would."""

    def __init__(self) -> None:
        self.calls = 0

    def export(self, events: Sequence[CostEvent], timeout: float) -> Sequence[Outcome]:
        self.calls += len(events)
        return [Outcome("retry", reason="connect_error")] * len(events)

    def shutdown(self) -> None:
        pass


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Make]:
    """Spool-backed pipelines (scaled timings); identity checked before and after each is shut down."""
    made: list[DeliveryPipeline] = []

    def build(exporter: Any, directory: Path | None = None, *, store: dict[str, Any] | None = None,
              **kwargs: Any) -> DeliveryPipeline:
        factory = functools.partial(SpoolStore, directory or tmp_path / "spool", **{**SPOOL_FAST, **(store or {})})
        pipeline = DeliveryPipeline(exporter, store=factory, **{**fp.FAST, **kwargs})
        made.append(pipeline)
        return pipeline

    yield build
    for pipeline in made:
        fp.assert_identity(pipeline.stats())
        pipeline.shutdown(timeout=0.5)
        fp.assert_identity(pipeline.stats())


@pytest.fixture
def fake() -> Iterator[Any]:
    with fp.FakePaygentic(token=TOKEN) as server:
        yield server


def _rows(directory: Path, state: int | None = None) -> list[tuple[str, bytes, float, int]]:
    """(key, body, recorded_at, state) of every row in every spool file of ``directory``."""
    out: list[tuple[str, bytes, float, int]] = []
    for path in list_spool_files(directory):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            query = "SELECT key, body, recorded_at, state FROM events"
            rows = conn.execute(query + (" WHERE state = ?" if state is not None else ""),
                                (() if state is None else (state,))).fetchall()
        finally:
            conn.close()
        out.extend((str(k), bytes(b), float(r), int(s)) for k, b, r, s in rows)
    return out


def _store(pipeline: DeliveryPipeline) -> SpoolStore:
    store = pipeline._store
    assert isinstance(store, SpoolStore)
    return store


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not _holds(predicate):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _holds(predicate: Callable[[], bool]) -> bool:
    # A read-only look at a spool file while its writer adopts or removes files can fail for that instant ("disk
    # I/O error" on a WAL being unlinked): that reading is "not yet", and the next poll reads the settled files.
    try:
        return predicate()
    except sqlite3.OperationalError:
        return False


# ---------------------------------------------------------------------------------------------- basics


def test_events_are_committed_before_they_are_sent_byte_for_byte(make: Make, tmp_path: Path) -> None:
    pipeline = make(DownExporter())
    events = [fp.make_event(f"basic-{i}") for i in range(300)]
    for event in events:
        assert pipeline.submit(event)
    assert _wait(lambda: pipeline.stats()["spooled"] == 300)
    stats = pipeline.stats()
    assert stats["queued"] == 0 and stats["spool_bytes"] > 0
    fp.assert_identity(stats)
    on_disk = {key: body for key, body, _, _ in _rows(tmp_path / "spool")}
    assert on_disk == {event.idempotency_key: event.to_json() for event in events}


def test_sync_durability_returns_only_once_the_event_is_on_disk(make: Make, tmp_path: Path) -> None:
    pipeline = make(DownExporter(), durability="sync", store={"commit_interval": 1.0})
    for i in range(20):
        assert pipeline.submit(fp.make_event(f"sync-{i}"))
        keys = {key for key, _, _, _ in _rows(tmp_path / "spool")}
        assert f"sync-{i}" in keys  # despite a 1 s group-commit window
    assert pipeline.stats()["spooled"] == 20


def test_acknowledged_rows_are_deleted_and_an_empty_file_removed_on_close(make: Make, tmp_path: Path) -> None:
    exporter = InMemoryExporter()
    pipeline = make(exporter)
    for i in range(200):
        pipeline.submit(fp.make_event(f"ack-{i}"))
    assert pipeline.flush(timeout=10)
    assert _wait(lambda: _rows(tmp_path / "spool") == [])
    pipeline.shutdown(timeout=1)
    assert list_spool_files(tmp_path / "spool") == []
    assert len(exporter.events) == 200


def test_memory_stays_bounded_while_the_backlog_lives_on_disk(make: Make, tmp_path: Path) -> None:
    """More events than max_queue_size during an outage: accepted (spooled), then all sent on recovery."""
    down = threading.Event()
    down.set()
    sent: list[str] = []

    class Switchable:
        def export(self, events: Sequence[CostEvent], timeout: float) -> Sequence[Outcome]:
            if down.is_set():
                return [Outcome("retry", reason="connect_error")] * len(events)
            sent.extend(event.idempotency_key for event in events)
            return [Outcome("ack", status=202)] * len(events)

        def shutdown(self) -> None:
            pass

    pipeline = make(Switchable(), max_queue_size=200)
    for i in range(2000):
        assert pipeline.submit(fp.make_event(f"backlog-{i}"))
        if i % 150 == 149:
            assert _wait(lambda: pipeline.stats()["queued"] == 0)  # the writer keeps the memory queue short
    assert _wait(lambda: pipeline.stats()["spooled"] == 2000)
    store = _store(pipeline)
    assert len(store._ready) + len(store._waiting) <= 200  # the rest is on disk only
    down.clear()
    assert pipeline.flush(timeout=30)
    assert sorted(sent) == sorted(f"backlog-{i}" for i in range(2000)) and len(set(sent)) == 2000


# ---------------------------------------------------------------------------------------------- T08 close


def test_t08_close_with_the_spool_keeps_everything_for_the_next_process(fake: Any, make: Make,
                                                                        tmp_path: Path) -> None:
    fake.script = lambda info: fp.respond(202, delay=1.0) if info.body is not None else None
    pipeline = make(PaygenticExporter(TOKEN, base_url=fake.url))
    for i in range(1000):
        assert pipeline.submit(fp.make_event(f"t08-{i}"))
    started = time.monotonic()
    pipeline.shutdown(timeout=2)
    assert time.monotonic() - started < 2.5 + 0.5  # budget + margin for a loaded machine
    stats = pipeline.stats()
    fp.assert_identity(stats)
    assert "shutdown_timeout" not in stats["dropped"]  # on disk, not lost
    assert stats["acknowledged"] + stats["spooled"] == 1000
    assert len(_rows(tmp_path / "spool")) >= 1000 - stats["acknowledged"]
    fake.script = None
    nxt = make(PaygenticExporter(TOKEN, base_url=fake.url))  # "the next process": same spool directory
    assert _wait(lambda: fake.keys() == {f"t08-{i}" for i in range(1000)}, timeout=30)
    assert _wait(lambda: nxt.stats()["spooled"] == 0)
    assert nxt.stats()["recovered_from_spool"] >= 1000 - stats["acknowledged"]


# ---------------------------------------------------------------------------------------------- T07 cap


def test_t07_spool_cap_drops_newest_counts_and_logs_once(make: Make, caplog: pytest.LogCaptureFixture) -> None:
    notified: list[str] = []
    pipeline = make(DownExporter(), on_error=lambda key, reason, detail: notified.append(reason),
                    store={"max_bytes": 1024 * 1024}, max_queue_size=100_000)
    caplog.set_level(logging.ERROR, logger="paygentic_costs")
    before: list[float] = []
    after: list[float] = []
    for i in range(12_000):  # about 2.5 MB of events against a 1 MiB cap
        event = fp.make_event(f"t07-{i}")
        event.to_json()  # serialised by the recorder in real use
        started = time.perf_counter()
        pipeline.submit(event)
        (after if pipeline._store.full else before).append(time.perf_counter() - started)
        if i % 500 == 0:
            time.sleep(0.03)  # let group commits happen along the way
    assert _wait(lambda: pipeline.stats()["queued"] == 0)
    stats = pipeline.stats()
    dropped = stats["dropped"].get("spool_full", 0)
    assert dropped > 0 and stats["spooled"] + dropped == 12_000
    assert stats["spool_bytes"] <= 1024 * 1024
    fp.assert_identity(stats)
    assert _wait(lambda: notified.count("spool_full") == dropped)
    full_logs = [r for r in caplog.records if "spool" in r.getMessage() and "full" in r.getMessage()]
    assert len(full_logs) == 1  # at most once per 60 s
    before.sort()
    after.sort()
    p99_before, p99_after = before[int(len(before) * 0.99)], after[int(len(after) * 0.99)]
    assert p99_after <= 10 * p99_before + 0.001  # dropping is not slower than accepting


# ---------------------------------------------------------------------------------------------- T21 horizon


def test_t21_an_event_from_disk_past_the_horizon_is_set_aside_unsent(fake: Any, make: Make, tmp_path: Path) -> None:
    day_ago = time.time() - (23 * 3600 + 60)
    old = make(DownExporter(), tmp_path / "a", clock=lambda: day_ago)  # recorded 23 h 1 min ago, never acked
    old.submit(fp.make_event("t21-old"))
    old.shutdown(timeout=0.2)
    recent = make(DownExporter(), tmp_path / "b")  # recorded just now, by another process that also died
    recent.submit(fp.make_event("t21-recent"))
    recent.shutdown(timeout=0.2)
    (tmp_path / "spool").mkdir()
    for path in [*list_spool_files(tmp_path / "a"), *list_spool_files(tmp_path / "b")]:
        path.rename(tmp_path / "spool" / path.name)
    assert {key for key, _, _, _ in _rows(tmp_path / "spool")} == {"t21-old", "t21-recent"}

    dead_letters = tmp_path / "dead.jsonl"
    clock_now = [time.time()]
    nxt = make(PaygenticExporter(TOKEN, base_url=fake.url), clock=lambda: clock_now[0],
               dead_letter_path=dead_letters)
    assert _wait(lambda: nxt.stats()["set_aside"] == 1 and nxt.stats()["acknowledged"] == 1)
    stats = nxt.stats()
    assert stats["set_aside_reasons"] == {"dedup_window_expired": 1}
    assert stats["recovered_from_spool"] == 2
    assert [a.key for a in fake.arrivals_snapshot()] == ["t21-recent"]  # the old one was never sent
    (line,) = [json.loads(line) for line in dead_letters.read_text().splitlines()]
    assert line["event"]["idempotencyKey"] == "t21-old" and line["reason"] == "dedup_window_expired"
    assert _wait(lambda: [row[0] for row in _rows(tmp_path / "spool")] == ["t21-old"])
    assert _rows(tmp_path / "spool", state=1)[0][0] == "t21-old"  # kept on disk, set aside, for the CLI


# ---------------------------------------------------------------------------------------------- T11 damage


def _dead_file(make: Make, directory: Path, count: int, prefix: str) -> Path:
    """A spool file left behind in ``directory``, holding ``count`` events."""
    pipeline = make(DownExporter(), directory)
    for i in range(count):
        pipeline.submit(fp.make_event(f"{prefix}-{i}"))
    assert _wait(lambda: pipeline.stats()["spooled"] == count)
    pipeline.shutdown(timeout=0.1)
    (path,) = list_spool_files(directory)
    return path


def test_t11_a_flipped_byte_is_counted_corrupt_and_the_rest_delivered(make: Make, tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    path = _dead_file(make, directory, 50, "t11flip")
    data = bytearray(path.read_bytes())
    at = data.find(b'"idempotencyKey":"t11flip-17"')
    assert at > 0
    amount = data.find(b'"amount":0.0010', at)
    assert amount > 0
    data[amount + len('"amount":0.00')] ^= 0x03  # 0.0010 becomes 0.0020: must never be sent
    path.write_bytes(bytes(data))

    exporter = InMemoryExporter()
    pipeline = make(exporter, directory)
    assert _wait(lambda: pipeline.stats()["recovered_from_spool"] == 50)
    assert pipeline.flush(timeout=10)
    assert pipeline.stats()["dropped"] == {"corrupt_spool": 1}
    assert sorted(e.idempotency_key for e in exporter.events) == sorted(f"t11flip-{i}" for i in range(50)
                                                                        if i != 17)
    assert all(str(e.data["amount"]) == "0.0010" for e in exporter.events)


def test_t11_a_torn_wal_tail_is_discarded_and_the_rest_delivered(make: Make, tmp_path: Path) -> None:
    """A crash mid-commit leaves a torn last WAL frame: reopening discards that transaction only."""
    live_dir, dead_dir = tmp_path / "live", tmp_path / "dead"
    pipeline = make(DownExporter(), live_dir)
    for i in range(40):
        pipeline.submit(fp.make_event(f"t11wal-a-{i}"))
    assert _wait(lambda: pipeline.stats()["spooled"] == 40)
    for i in range(40):
        pipeline.submit(fp.make_event(f"t11wal-b-{i}"))
    assert _wait(lambda: pipeline.stats()["spooled"] == 80)
    (path,) = list_spool_files(live_dir)
    wal = Path(f"{path}-wal")
    assert wal.exists() and wal.stat().st_size > 0  # the commits are in the WAL, not yet checkpointed
    dead_dir.mkdir()
    for suffix in ("", "-wal"):  # what a SIGKILL leaves on disk
        shutil.copyfile(f"{path}{suffix}", dead_dir / f"spool-1-1.db{suffix}")
    torn = dead_dir / "spool-1-1.db-wal"
    with open(torn, "r+b") as fh:
        fh.truncate(torn.stat().st_size - 100)  # the last frame (of the second commit) is torn

    exporter = InMemoryExporter()
    reopened = make(exporter, dead_dir)
    assert _wait(lambda: len(exporter.events) >= 40)
    assert reopened.flush(timeout=10)
    keys = {e.idempotency_key for e in exporter.events}
    assert {f"t11wal-a-{i}" for i in range(40)} <= keys  # every committed record before the torn one
    assert not {k for k in keys if k.startswith("t11wal-b-")}  # the torn transaction is gone as a whole
    assert reopened.stats()["dropped"] == {}


def test_t11_a_truncated_file_is_quarantined_and_reopening_never_raises(make: Make, tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    path = _dead_file(make, directory, 400, "t11trunc")
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size - size // 3 - 100)  # mid-page, mid-record
    exporter = InMemoryExporter()
    pipeline = make(exporter, directory)
    assert _wait(lambda: any(name.endswith(".corrupt") for name in os.listdir(directory)))
    assert pipeline.flush(timeout=10)
    keys = {e.idempotency_key for e in exporter.events}
    assert keys <= {f"t11trunc-{i}" for i in range(400)}
    assert len(keys) == len(exporter.events)  # nothing sent twice
    assert list_spool_files(directory) == [p for p in list_spool_files(directory) if p.name.endswith(".db")]
    fp.assert_identity(pipeline.stats())


# ---------------------------------------------------------------------------------------------- T12 disk full


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs when this process may mount one (root in a container), else skip."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_t12_disk_full_degrades_to_memory_and_recovers(make: Make, tiny_disk: Path) -> None:
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 - 200 * 1024))  # leave ~200 KB
    exporter = InMemoryExporter()
    gate = threading.Event()

    class Gated:
        def export(self, events: Sequence[CostEvent], timeout: float) -> Sequence[Outcome]:
            if not gate.is_set():
                return [Outcome("retry", reason="connect_error")] * len(events)
            return exporter.export(events, timeout)

        def shutdown(self) -> None:
            pass

    pipeline = make(Gated(), tiny_disk / "spool", max_queue_size=50_000)
    accepted = 0
    for i in range(3000):  # ~700 KB of events: more than the disk has
        accepted += pipeline.submit(fp.make_event(f"t12-{i}"))
        if i % 200 == 0:
            time.sleep(0.02)
    assert accepted == 3000  # record() never fails on a full disk
    assert _wait(lambda: pipeline.stats()["spool_errors"] >= 1)
    assert _wait(lambda: pipeline.stats()["queued"] > 0)  # the overflow is held in memory
    fp.assert_identity(pipeline.stats())
    filler.unlink()  # space returns
    time.sleep(3 * SPOOL_FAST["reopen_interval"])  # at least one reopen after the space came back
    assert _wait(lambda: not _store(pipeline).degraded)
    errors, spooled_before = pipeline.stats()["spool_errors"], pipeline.stats()["spooled"]
    for i in range(100):
        pipeline.submit(fp.make_event(f"t12-late-{i}"))
    assert _wait(lambda: pipeline.stats()["spooled"] == spooled_before + 100)  # spooling resumed
    assert pipeline.stats()["spool_errors"] == errors
    gate.set()
    assert pipeline.flush(timeout=30)
    keys = {e.idempotency_key for e in exporter.events}
    assert keys == {f"t12-{i}" for i in range(3000)} | {f"t12-late-{i}" for i in range(100)}


def test_t12_unusable_spool_directory_degrades_and_recovers(make: Make, tmp_path: Path) -> None:
    """Where no tmpfs can be mounted: a spool path that is a file (ENOTDIR) until it is fixed."""
    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")
    exporter = InMemoryExporter()
    pipeline = make(exporter, blocked / "spool")
    assert pipeline.submit(fp.make_event("t12b-0"))
    assert _wait(lambda: pipeline.stats()["spool_errors"] >= 1)
    assert pipeline.flush(timeout=5)  # delivered memory-only meanwhile
    blocked.unlink()
    blocked.mkdir()
    assert _wait(lambda: not _store(pipeline).degraded, timeout=5)
    pipeline.pause()
    pipeline.submit(fp.make_event("t12b-1"))
    assert _wait(lambda: pipeline.stats()["spooled"] == 1)
    pipeline.resume()
    assert pipeline.flush(timeout=5)
    assert [e.idempotency_key for e in exporter.events] == ["t12b-0", "t12b-1"]


# ---------------------------------------------------------------------------------------------- adoption


_ADOPTER = textwrap.dedent("""
    import functools, json, sys, time
    from paygentic_costs.export import DeliveryPipeline, PaygenticExporter
    from paygentic_costs.export._spool import SpoolStore

    directory, url, token, go_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    while time.time() < go_at:  # both processes start together
        time.sleep(0.001)
    pipeline = DeliveryPipeline(
        PaygenticExporter(token, base_url=url),
        store=functools.partial(SpoolStore, directory, commit_interval=0.02, adopt_interval=0.2),
    )
    time.sleep(1.5)
    pipeline.flush(timeout=10)
    stats = pipeline.stats()
    pipeline.shutdown(timeout=2)
    print(json.dumps({"recovered": stats["recovered_from_spool"], "acknowledged": stats["acknowledged"]}))
""")


@pytest.mark.slow
def test_two_processes_starting_together_adopt_a_dead_file_exactly_once(fake: Any, make: Make,
                                                                        tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    _dead_file(make, directory, 300, "adopt")
    script = tmp_path / "adopter.py"
    script.write_text(_ADOPTER)
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    go_at = str(time.time() + 1.0)
    procs = [subprocess.Popen([sys.executable, str(script), str(directory), fake.url, TOKEN, go_at],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["recovered"] for r in results) == [0, 300]  # exactly one replayed it
    assert fake.keys() == {f"adopt-{i}" for i in range(300)}
    assert fake.duplicates == 0
    assert all(len(fake.requests_for(f"adopt-{i}")) == 1 for i in range(300))


def test_a_live_process_file_is_never_adopted(make: Make, tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    owner = make(DownExporter(), directory)
    for i in range(30):
        owner.submit(fp.make_event(f"owned-{i}"))
    assert _wait(lambda: owner.stats()["spooled"] == 30)
    other = make(InMemoryExporter(), directory)
    other.submit(fp.make_event("other-0"))
    assert other.flush(timeout=5)
    time.sleep(0.5)  # a few adoption rounds
    assert other.stats()["recovered_from_spool"] == 0
    assert len(_rows(directory)) == 30


# ---------------------------------------------------------------------------------------------- fork


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_opens_its_own_spool_file(fake: Any, make: Make, tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    pipeline = make(PaygenticExporter(TOKEN, base_url=fake.url), directory)
    pipeline.pause()  # the parent's events stay pending in its file during the fork
    for i in range(10):
        pipeline.submit(fp.make_event(f"parent-{i}"))
    assert _wait(lambda: pipeline.stats()["spooled"] == 10)
    parent_files = set(list_spool_files(directory))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            pipeline.resume()
            for i in range(20):
                pipeline.submit(fp.make_event(f"child-{i}"))
            ok = pipeline.flush(timeout=10)
            child_files = {str(p) for p in list_spool_files(directory)} - {str(p) for p in parent_files}
            os.write(write_end, json.dumps({"ok": ok, "stats": pipeline.stats(), "new_files": len(child_files)})
                     .encode())
            pipeline.shutdown(timeout=1)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        report = json.loads(pipe.read())
    assert os.waitstatus_to_exitcode(status) == 0
    assert report["ok"] and report["new_files"] == 1
    assert report["stats"]["recovered_from_spool"] == 0  # the parent's file is alive: never adopted
    assert fake.keys() == {f"child-{i}" for i in range(20)}
    assert set(list_spool_files(directory)) == parent_files  # the parent's file is intact
    pipeline.resume()
    assert pipeline.flush(timeout=10)
    assert fake.keys() == {f"child-{i}" for i in range(20)} | {f"parent-{i}" for i in range(10)}


# ---------------------------------------------------------------------------------------------- configure()


def test_configure_wires_the_spool_per_account(fake: Any, tmp_path: Path) -> None:
    root = tmp_path / "root"
    pc.configure(api_key=TOKEN, base_url=fake.url, spool_dir=root, source="https://spool.test")
    pipeline = runtime_module.get_runtime().pipeline
    assert isinstance(pipeline._store, SpoolStore)
    assert pipeline._store.directory == account_directory(root, TOKEN, fake.url)
    pc.record("cost.test", amount="0.0010", customer="cus_spool", operation_id="cfg-1")
    assert pc.flush(timeout=5)
    assert fake.keys() == {next(iter(fake.keys()))} and len(fake.keys()) == 1
    fp.assert_identity(pc.stats())


def test_configure_spool_defaults_and_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from paygentic_costs._config import resolve_settings

    base: dict[str, Any] = {"api_key": "k", "base_url": None, "source": None, "rates": None, "exporter": None,
            "max_queue_size": 10, "max_in_flight": 8, "shutdown_timeout": 1.0, "durability": "batch",
            "strict": None, "propagate": None, "state_dir": tmp_path / "state", "on_error": None}
    assert resolve_settings(spool_dir=None, **base).spool_dir == tmp_path / "state" / "spool"
    assert resolve_settings(spool_dir="off", **base).spool_dir is None
    assert resolve_settings(spool_dir=False, **base).spool_dir is None
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "handler")
    assert resolve_settings(spool_dir=None, **base).spool_dir is None  # serverless: off unless configured
    assert resolve_settings(spool_dir=tmp_path / "x", **base).spool_dir == tmp_path / "x"
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME")
    monkeypatch.setenv("PAYGENTIC_COSTS_SPOOL_MAX_BYTES", "2000000")
    assert resolve_settings(spool_dir=None, **base).spool_max_bytes == 2_000_000
    monkeypatch.setenv("PAYGENTIC_COSTS_SPOOL_DIR", "off")
    assert resolve_settings(spool_dir=None, **base).spool_dir is None


# ---------------------------------------------------------------------------------------------- CLI


def _cli(*argv: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli_main(list(argv)) == 0
    return out.getvalue()


def test_cli_spool_show_retry_and_export(make: Make, tmp_path: Path) -> None:
    root = tmp_path / "root"
    directory = account_directory(root, TOKEN, "http://127.0.0.1:1")
    # One file: 3 pending, 1 set aside recently (retryable), 1 set aside past the horizon (never retried).
    now = time.time()
    clock = [now - 23 * 3600 - 60]
    rejecting = {"cli-expired"}

    class Rejects:
        def export(self, events: Sequence[CostEvent], timeout: float) -> Sequence[Outcome]:
            return [Outcome("reject", reason="HTTP 422", status=422) if e.idempotency_key in rejecting
                    else Outcome("retry", reason="connect_error") for e in events]

        def shutdown(self) -> None:
            pass

    pipeline = make(Rejects(), directory, clock=lambda: clock[0], retry_horizon=10 * 86400.0)
    pipeline.submit(fp.make_event("cli-expired"))
    assert _wait(lambda: pipeline.stats()["set_aside"] == 1)
    clock[0] = now
    rejecting.add("cli-rejected")
    pipeline.submit(fp.make_event("cli-rejected"))
    for i in range(3):
        pipeline.submit(fp.make_event(f"cli-pending-{i}"))
    assert _wait(lambda: pipeline.stats()["set_aside"] == 2 and pipeline.stats()["spooled"] == 3)
    pipeline.shutdown(timeout=0.2)

    shown = _cli("spool", "--spool-dir", str(root))
    assert "3 pending, 2 set aside" in shown and "no live owner" in shown
    assert "total: 3 pending, 2 set aside in 1 file(s)" in shown

    exported = tmp_path / "out.jsonl"
    _cli("spool", "export", str(exported), "--spool-dir", str(root))
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert {(line["event"]["idempotencyKey"], line["state"]) for line in lines} == {
        ("cli-expired", "set_aside"), ("cli-rejected", "set_aside"),
        *((f"cli-pending-{i}", "pending") for i in range(3)),
    }
    stdout_export = _cli("spool", "export", "--spool-dir", str(root))
    assert len(stdout_export.splitlines()) == 5

    retried = _cli("spool", "retry", "--spool-dir", str(root))
    assert "re-queued 1 set-aside event(s); 1 past the dedup horizon" in retried
    assert "total: 4 pending, 1 set aside in 2 file(s)" in _cli("spool", "--spool-dir", str(root))

    exporter = InMemoryExporter()
    nxt = make(exporter, directory)  # the next process adopts both files and sends what is pending
    assert _wait(lambda: nxt.stats()["recovered_from_spool"] == 4)
    assert nxt.flush(timeout=10)
    assert sorted(e.idempotency_key for e in exporter.events) == sorted(
        ["cli-rejected", *(f"cli-pending-{i}" for i in range(3))])


def test_cli_spool_when_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYGENTIC_COSTS_SPOOL_DIR", "off")
    assert "the spool is off" in _cli("spool")
