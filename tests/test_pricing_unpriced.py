"""UnpricedStore: held in memory, persisted as append-only JSONL, taken back out atomically."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from paygentic_costs.pricing import UnpricedStore


def item(n: int, model: str = "mystery-1", **extra: object) -> dict[str, object]:
    return {"provider": "acme", "model": model, "n": n, "input_tokens": 10 * n, **extra}


def test_hold_does_no_io_until_persist(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "unpriced.jsonl"
    store = UnpricedStore(path)
    store.hold(item(1))
    assert store.pending == 1
    assert not path.exists()
    assert store.load() == [item(1)]  # pending items are visible
    assert store.persist() == 1
    assert store.pending == 0
    assert path.read_text(encoding="utf-8").splitlines() == [json.dumps(item(1), separators=(",", ":"))]
    assert store.persist() == 0


def test_persist_appends_one_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "unpriced.jsonl"
    store = UnpricedStore(path)
    for n in range(3):
        store.hold(item(n))
    store.persist()
    store.hold(item(3))
    store.persist()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["n"] for line in lines] == [0, 1, 2, 3]
    # A new store on the same file sees everything.
    assert [i["n"] for i in UnpricedStore(path).load()] == [0, 1, 2, 3]


def test_decimals_and_datetimes_are_written_as_strings(tmp_path: Path) -> None:
    store = UnpricedStore(tmp_path / "u.jsonl")
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    store.hold(item(1, amount_hint=Decimal("0.000001230"), at=when))
    store.persist()
    (loaded,) = store.load()
    assert loaded["amount_hint"] == "0.000001230"
    assert loaded["at"] == "2026-01-02T03:04:05+00:00"


def test_hold_copies_the_item(tmp_path: Path) -> None:
    store = UnpricedStore(tmp_path / "u.jsonl")
    original = item(1)
    store.hold(original)
    original["n"] = 99
    assert store.load()[0]["n"] == 1


def test_take_removes_matching_items_atomically(tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    store = UnpricedStore(path)
    for n in range(6):
        store.hold(item(n, model="a" if n % 2 else "b"))
    store.persist()
    store.hold(item(6, model="a"))  # still pending: take persists it first
    taken = store.take(lambda i: i["model"] == "a")
    assert [i["n"] for i in taken] == [1, 3, 5, 6]
    assert [i["n"] for i in store.load()] == [0, 2, 4]
    assert [json.loads(line)["n"] for line in path.read_text(encoding="utf-8").splitlines()] == [0, 2, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.jsonl"]  # no temp file left behind
    assert store.take(lambda i: False) == []


def test_count_by_model(tmp_path: Path) -> None:
    store = UnpricedStore(tmp_path / "u.jsonl")
    store.hold(item(1, model="x"))
    store.hold(item(2, model="x"))
    store.persist()
    store.hold(item(3, model="y"))
    store.hold({"model": "z"})
    store.hold({"note": "no model"})
    assert store.count_by_model() == {"acme:x": 2, "acme:y": 1, "z": 1, "unknown": 1}


def test_torn_last_line_is_kept_but_never_returned(tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    path.write_text('{"model": "a", "n": 1}\n{"model": "a", "n"', encoding="utf-8")  # crash mid-write
    store = UnpricedStore(path)
    store.hold(item(2, model="b"))
    store.persist()
    assert [i["n"] for i in store.load()] == [1, 2]
    assert [i["n"] for i in store.take(lambda i: i["model"] == "a")] == [1]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == '{"model": "a", "n"'  # kept verbatim
    assert [i["n"] for i in store.load()] == [2]


def test_concurrent_holds_and_persists_lose_nothing(tmp_path: Path) -> None:
    store = UnpricedStore(tmp_path / "u.jsonl")

    def produce(base: int) -> None:
        for n in range(200):
            store.hold(item(base + n))
            if n % 50 == 0:
                store.persist()

    threads = [threading.Thread(target=produce, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.persist()
    assert sorted(i["n"] for i in store.load()) == sorted(k * 1000 + n for k in range(4) for n in range(200))
