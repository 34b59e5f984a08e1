"""examples/anthropic_example.py runs as written against a local fake Anthropic endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "anthropic_example.py"


def test_example_runs_and_bills_both_calls(fake_server: Any, fake: Any, tmp_path: Path) -> None:
    fake_server.fake = fake
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYGENTIC_", "ANTHROPIC_"))}
    env.update(ANTHROPIC_BASE_URL=fake_server.url, ANTHROPIC_API_KEY="test",
               PAYGENTIC_COSTS_STATE_DIR=str(tmp_path / "state"))
    result = subprocess.run([sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    hello = "Hello! How can I help you today?"
    assert result.stdout.splitlines() == [f"{hello} / {hello}", "delivered=True recorded=2 usage_missing=0"]
    # No Paygentic key: the console exporter prints each event, priced from the example's rates.
    printed = [line for line in result.stderr.splitlines() if "cus_abc123" in line]
    assert len(printed) == 2, result.stderr
    assert all("0.00790725" in line and "anthropic" in line for line in printed), printed
    assert len(fake.requests) == 2
