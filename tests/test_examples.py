"""examples/quickstart.py runs as documented: to stderr with no key, and delivered to a local server with one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from paygentic_costs.server import LocalServer

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PAYGENTIC")}
    return subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, env={**base, **env}
    )


def test_quickstart_without_a_key_prints_the_events(tmp_path: Path) -> None:
    out = _run({"PAYGENTIC_COSTS_STATE_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "no API key configured" in out.stderr
    assert "cus_abc123" in out.stderr and "cus_def456" in out.stderr
    assert "recorded=8" in out.stdout and "dropped={}" in out.stdout


def test_quickstart_delivers_to_a_local_server(tmp_path: Path) -> None:
    with LocalServer(str(tmp_path / "db.sqlite")) as server:
        out = _run(
            {
                "PAYGENTIC_API_KEY": "sk_example",
                "PAYGENTIC_BASE_URL": server.url,
                "PAYGENTIC_COSTS_STATE_DIR": str(tmp_path),
            }
        )
        assert out.returncode == 0, out.stderr
        assert "delivered=True recorded=8 acknowledged=8" in out.stdout
        events = httpx.get(f"{server.url}/_local/events", headers={"Authorization": "Bearer sk_example"}).json()
    keys = sorted(e["idempotencyKey"] for e in events["data"])
    assert keys == sorted(
        f"{job}-{t}"
        for job in ("job_xyz789", "job_xyz790")
        for t in ("cost.ocr", "cost.ai.inference", "cost.enrichment", "cost.compute")
    )
    assert "sk_example" not in out.stdout + out.stderr
