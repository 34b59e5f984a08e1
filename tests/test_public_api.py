"""The public surface: exported names, import-time behaviour, instrument() errors, no-account start."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types

import pytest

import paygentic_costs as pc
import paygentic_costs.instrumentation as instrumentation
import paygentic_costs.testing as testing


@pytest.mark.parametrize("module", [pc, instrumentation, testing])
def test_all_is_sorted_resolvable_and_complete(module: types.ModuleType) -> None:
    exported = list(module.__all__)
    assert exported == sorted(exported)
    for name in exported:
        assert getattr(module, name) is not None, name
    # Everything public that the module defines itself is a promise, so it must be listed.
    defined_here = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    }
    assert defined_here <= set(exported), defined_here - set(exported)


def test_top_level_reexports_the_documented_api() -> None:
    for name in (
        "configure",
        "instrument",
        "uninstrument",
        "job",
        "customer",
        "record",
        "track",
        "meter",
        "flush",
        "aflush",
        "shutdown",
        "stats",
        "reprice",
        "wrap",
        "Usage",
        "RateTable",
    ):
        assert name in pc.__all__, name


def test_import_has_no_side_effects() -> None:
    code = textwrap.dedent(
        """
        import os, sys, threading
        before = threading.active_count()
        os.environ["PAYGENTIC_API_KEY"] = "sk_should_not_be_read"
        import paygentic_costs
        assert threading.active_count() == before, "a thread started at import"
        assert "openai" not in sys.modules and "genai_prices" not in sys.modules
        from paygentic_costs import _runtime
        assert _runtime.current_runtime() is None
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_no_api_key_prints_events_with_one_notice() -> None:
    code = textwrap.dedent(
        """
        import paygentic_costs as pc
        with pc.job("job_1", customer="cus_1"):
            pc.record("cost.enrichment", amount="0.0010", provider="clearbit")
            pc.record("cost.enrichment", amount="0.0020", provider="clearbit")
        assert pc.flush(5)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": ":".join(sys.path)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("no API key configured") == 1
    printed = out.stdout + out.stderr
    assert "cus_1" in printed and "0.0010" in printed and "0.0020" in printed


def test_instrument_unknown_name_raises_with_install_hint() -> None:
    with pytest.raises(pc.IntegrationUnavailable, match="pip install 'paygentic-costs-nonexistent'"):
        pc.instrument("nonexistent")


def test_instrument_without_names_never_raises() -> None:
    assert isinstance(pc.instrument(), list)


def test_configure_rejects_bad_settings() -> None:
    with pytest.raises(pc.ConfigurationError, match="base_url"):
        pc.configure(base_url="api.paygentic.io")
    with pytest.raises(pc.ConfigurationError, match="max_in_flight"):
        pc.configure(max_in_flight=0)
    with pytest.raises(pc.ConfigurationError, match="durability"):
        pc.configure(durability="maybe")


@pytest.mark.allow_internal_errors
def test_internal_errors_collects_what_was_swallowed() -> None:
    from paygentic_costs.export import InMemoryExporter
    from paygentic_costs.instrumentation import SyncStreamProxy

    pc.configure(exporter=InMemoryExporter())

    def broken_hook(chunk: object) -> None:
        raise RuntimeError("hook bug")

    with testing.internal_errors() as errors:
        assert list(SyncStreamProxy(iter([1, 2]), on_chunk=broken_hook, on_end=lambda e: None)) == [1, 2]
    assert [type(e) for e in errors] == [RuntimeError, RuntimeError]
