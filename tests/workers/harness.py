"""Shared helpers of the worker-model tests: the fake Paygentic (in this process or its own), and the environment
that makes a subprocess deliver to it. Test modules import it as ``workers.harness`` (``tests/`` is on pytest's
``pythonpath``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
WORKERS = Path(__file__).resolve().parent
SRC = str(TESTS.parent / "src")
TOKEN = "sk_test_workers"


def load_fake() -> ModuleType:
    """``tests/fake_paygentic.py`` (for scripts run outside pytest, such as ``serve_fake.py``)."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    import fake_paygentic

    return fake_paygentic


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


class SlowFakeProcess:
    """The fake Paygentic in its own process, answering every request after ``delay`` seconds, so that a test
    measuring the client's event loop does not share a GIL with the server's threads."""

    def __init__(self, *, delay: float, token: str = TOKEN) -> None:
        self._args = [f"--delay={delay}", f"--token={token}"]
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> SlowFakeProcess:
        self._proc = subprocess.Popen(
            [sys.executable, str(WORKERS / "serve_fake.py"), *self._args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=subprocess_env(""),
        )
        assert self._proc.stdout is not None
        self.url = self._proc.stdout.readline().strip()
        assert self.url.startswith("http://"), "the fake server did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def ledger(self) -> dict[str, Any]:
        """``{"ledger": {key: body}, "duplicates": n, "arrivals": [[key, body], ...]}``."""
        with urllib.request.urlopen(self.url + "/_ledger", timeout=60) as response:
            return dict(json.loads(response.read()))
