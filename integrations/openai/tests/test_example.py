"""examples/openai_example.py runs end to end against a local fake OpenAI server (stdlib http.server in a thread)."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "openai_example.py"


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["http"])
def test_example_prints_one_priced_event_per_call(fake: Any, fake_server: Any, transport: str) -> None:
    fake_server.target = fake
    env = {
        **os.environ,
        "OPENAI_BASE_URL": fake_server.url + "/v1",
        "OPENAI_API_KEY": "test",
        "PAYGENTIC_COSTS_RATES": "",
    }
    done = subprocess.run([sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "reply: Hello! How can I help you today?"
    events = [line for line in lines if line.startswith("cost.ai.inference ")]
    assert len(events) == 2
    assert all("customer=cus_example" in e and "model=gpt-4o-2024-08-06" in e for e in events)
    assert "key=job_example_1-cost.ai.inference " in events[0]
    assert "key=job_example_1-cost.ai.inference-2 " in events[1]
    total = next(line for line in lines if line.startswith("total:"))
    assert Decimal(total.split()[1]) == Decimal("0.0032050")  # 2 x (93 x 2.50 + 1024 x 1.25 + 9 x 10) / 1M
    assert total.endswith("usage_missing: 0")
    # The stream was asked for usage on the wire (the example's caller did not ask for it).
    assert fake.requests[-1]["body"]["stream_options"] == {"include_usage": True}
