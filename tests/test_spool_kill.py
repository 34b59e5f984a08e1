"""T10 (delivery.md §2b): ``SIGKILL`` a process that records at full speed, restart on the same spool directory.

Every event whose ``record()`` returned at least one commit window (100 ms) before the kill must be acknowledged
after the restart; resends carry the same key and bytes, and only events the dead process had already sent are
ever resent. ``PAYGENTIC_T10_ITERATIONS`` / ``PAYGENTIC_T10_EVENTS`` scale it up (the reference run is 50 x 10 000).
"""

from __future__ import annotations

import functools
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fake_paygentic as fp
import pytest

from paygentic_costs.export import DeliveryPipeline, PaygenticExporter
from paygentic_costs.export._spool import SpoolStore
from paygentic_costs.export._spool_file import list_spool_files

TOKEN = "sk_test_kill"
SRC = str(Path(__file__).resolve().parents[1] / "src")
ITERATIONS = int(os.environ.get("PAYGENTIC_T10_ITERATIONS", "15"))
EVENTS = int(os.environ.get("PAYGENTIC_T10_EVENTS", "2000"))
# The production default; the dead process runs with it. The recorder loop below holds the GIL at full speed, the
# case where the spool's writer thread would starve without the pipeline's commit back-pressure.
COMMIT_WINDOW = 0.1

_RECORDER = textwrap.dedent("""
    import functools, os, sys, time
    from datetime import datetime, timezone
    from decimal import Decimal

    from paygentic_costs import CostEvent
    from paygentic_costs.export import DeliveryPipeline, PaygenticExporter
    from paygentic_costs.export._spool import SpoolStore

    directory, url, token, side, prefix, count = sys.argv[1:7]
    pipeline = DeliveryPipeline(PaygenticExporter(token, base_url=url), store=functools.partial(SpoolStore, directory))
    out = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # unbuffered: survives SIGKILL
    print("ready", flush=True)
    for i in range(int(count)):
        key = f"{prefix}-{i}"
        event = CostEvent(type="cost.ai.inference", source="t10", idempotency_key=key,
                          timestamp=datetime.now(timezone.utc), data={"amount": Decimal("0.0010"), "currency": "USD"},
                          subject="cus_t10")
        if pipeline.submit(event):
            os.write(out, f"{key} {time.monotonic()}\\n".encode())
    time.sleep(600)
""")


@pytest.fixture
def fake() -> Iterator[Any]:
    with fp.FakePaygentic(token=TOKEN) as server:
        yield server


def _returned(side: Path) -> dict[str, float]:
    returned: dict[str, float] = {}
    for line in side.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:  # a line cut by the kill is ignored: its record() had not returned
            returned[parts[0]] = float(parts[1])
    return returned


@pytest.mark.slow
def test_t10_kill_9_at_a_random_moment_loses_nothing_committed(fake: Any, tmp_path: Path) -> None:
    script = tmp_path / "recorder.py"
    script.write_text(_RECORDER)
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    seed = int(os.environ.get("PAYGENTIC_T10_SEED", str(time.time_ns() % 10**6)))
    rng = random.Random(seed)
    checked = resends = 0
    for iteration in range(ITERATIONS):
        directory = tmp_path / f"spool-{iteration}"
        side = tmp_path / f"returned-{iteration}.txt"
        prefix = f"t10-{iteration}"
        proc = subprocess.Popen(
            [sys.executable, str(script), str(directory), fake.url, TOKEN, str(side), prefix, str(EVENTS)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.4))
        killed_at = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        _, stderr = proc.communicate()
        assert "Traceback" not in stderr, stderr

        time.sleep(0.2)  # requests the dead process left in socket buffers reach the server first
        restarted_at = time.monotonic()
        # The next process on the same directory: reopening never raises (no internal error either).
        pipeline = DeliveryPipeline(PaygenticExporter(TOKEN, base_url=fake.url),
                                    store=functools.partial(SpoolStore, directory, adopt_interval=0.2), **fp.FAST)
        try:
            deadline = time.monotonic() + 20
            dead = f"spool-{proc.pid}-"
            while any(p.name.startswith(dead) for p in list_spool_files(directory)):
                assert time.monotonic() < deadline, "the dead process's file was not adopted"
                time.sleep(0.02)  # adoption moves the dead file into ours, then removes it
            assert pipeline.flush(timeout=60), f"iteration {iteration} (seed {seed}): {pipeline.stats()}"
            stats = pipeline.stats()
            fp.assert_identity(stats)
        finally:
            pipeline.shutdown(timeout=1)
        fp.assert_identity(pipeline.stats())

        returned = _returned(side)
        must = {key for key, at in returned.items() if at <= killed_at - COMMIT_WINDOW}
        ledger: set[str] = fake.keys()
        stored = {key for key in ledger if key.startswith(prefix + "-")}
        missing = must - stored
        assert not missing, f"iteration {iteration} (seed {seed}): {len(missing)} committed events lost; {stats}"
        # Nothing the dead process never submitted: the returned keys, plus at most the one whose submit() was
        # still in progress (waiting on commit back-pressure while its event was already committed and sent).
        in_progress = f"{prefix}-{len(returned)}"
        assert stored <= set(returned) | {in_progress}
        checked += len(must)
        # Resends are byte-identical, and the restarted process sends each key once: a key reaches the server
        # twice only when the dead process had already sent it (acknowledged within its last commit window).
        by_key: dict[str, list[Any]] = {}
        for arrival in fake.arrivals_snapshot():
            if arrival.key is not None and arrival.key.startswith(prefix + "-"):
                by_key.setdefault(arrival.key, []).append(arrival)
        for key, arrivals in by_key.items():
            assert len({a.body for a in arrivals}) == 1, key
            assert sum(a.at >= restarted_at for a in arrivals) <= 1, f"{key} was sent twice after the restart"
        resent = sum(1 for arrivals in by_key.values() if len(arrivals) > 1)
        resends += resent
    assert checked > 0  # the kills landed after some commits
    print(f"\nT10: {ITERATIONS} kills (seed {seed}), {checked} events older than 100 ms checked, none lost, "
          f"{resends} resent")
