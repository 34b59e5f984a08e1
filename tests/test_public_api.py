"""The public surface: exported names, import-time behaviour, instrument() errors, no-account start."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import paygentic_costs as pc
import paygentic_costs.instrumentation as instrumentation
import paygentic_costs.testing as testing


@pytest.mark.parametrize("module", [pc, instrumentation, testing])
def test_all_lists_exactly_the_public_names(module: object) -> None:
    exported = set(module.__all__)  # type: ignore[attr-defined]
    public = {n for n in vars(module) if not n.startswith("_") and not isinstance(vars(module)[n], type(sys))}
    public -= {"annotations", "TYPE_CHECKING"}
    imported_helpers = {n for n in public if getattr(vars(module)[n], "__module__", "").split(".")[0] in
                        ("typing", "collections", "abc", "datetime", "decimal", "os", "asyncio", "types", "wrapt",
                         "packaging", "threading", "importlib", "dataclasses", "pytest")}
    assert exported == (public - imported_helpers) | ({"RateTable", "__version__"} & exported)
    assert list(module.__all__) == sorted(module.__all__)  # type: ignore[attr-defined]


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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": ":".join(sys.path)})
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
