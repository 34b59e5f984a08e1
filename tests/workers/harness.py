"""Shared helper of the worker-model tests: the environment that makes a subprocess deliver to the fake Paygentic.
Test modules import it as ``workers.harness`` (``tests/`` is on pytest's
``pythonpath``)."""

from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
WORKERS = Path(__file__).resolve().parent
SRC = str(TESTS.parent / "src")
TOKEN = "sk_test_workers"


def subprocess_env(url: str, **extra: str) -> dict[str, str]:
    """The environment of a worker subprocess: our sources importable, the key and URL of the fake."""
    env = dict(os.environ)
    path = [SRC, str(WORKERS)]
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env.update({
        "PYTHONPATH": os.pathsep.join(path),
        "PAYGENTIC_API_KEY": TOKEN,
        "PAYGENTIC_BASE_URL": url,
        "PAYGENTIC_COSTS_SOURCE": "https://workers.test",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env
