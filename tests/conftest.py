"""Shared fixtures: every test starts from a clean runtime, and swallowed internal errors fail the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import paygentic_costs as pc
from paygentic_costs import _guard
from paygentic_costs._propagate import disable_propagation


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep held/set-aside files in the test's tmp dir and never pick up a developer's real key."""
    monkeypatch.setenv("PAYGENTIC_COSTS_STATE_DIR", str(tmp_path / "state"))
    for name in (
        "PAYGENTIC_API_KEY",
        "PAYGENTIC_BEARER_AUTH",
        "PAYGENTIC_BASE_URL",
        "PAYGENTIC_COSTS_RATES",
        "PAYGENTIC_COSTS_STRICT",
        "PAYGENTIC_COSTS_SPOOL_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    yield
    pc.uninstrument()
    disable_propagation()
    pc.shutdown(timeout=0)


@pytest.fixture(autouse=True)
def _fail_on_internal_error(request: pytest.FixtureRequest) -> Iterator[list[BaseException]]:
    """Internal errors are swallowed in production; in tests they are failures unless a test expects them."""
    errors: list[BaseException] = []
    _guard.set_error_sink(errors.append)
    yield errors
    _guard.set_error_sink(None)
    if errors and request.node.get_closest_marker("allow_internal_errors") is None:
        raise AssertionError(f"internal errors were swallowed during the test: {errors!r}")
