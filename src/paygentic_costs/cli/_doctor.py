"""``paygentic-costs doctor``: what is installed, what would be instrumented, and whether the API answers."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform

from .._registry import available
from ._summary import connection

__all__ = ["run_doctor"]


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_doctor(args: argparse.Namespace) -> int:
    """Print the checks; exit 0 when the endpoint answered and the key (if any) was accepted."""
    import httpx

    from ..instrumentation import Instrumentor

    print(f"paygentic-costs {_version('paygentic-costs')} on Python {platform.python_version()}")
    print("\nIntegrations (entry point group paygentic_costs.integrations):")
    found = available()
    if not found:
        print("  none installed (pip install paygentic-costs-openai, paygentic-costs-anthropic, ...)")
    for name, entry_point in sorted(found.items()):
        try:
            cls = entry_point.load()
        except Exception as exc:  # a broken third-party package must not stop the report
            print(f"  {name:<12} cannot load {entry_point.value}: {type(exc).__name__}: {exc}")
            continue
        if not (isinstance(cls, type) and issubclass(cls, Instrumentor)):
            print(f"  {name:<12} {entry_point.value} is not an Instrumentor")
            continue
        reason = cls.unavailable_reason()
        sdk = f"{cls.distribution} {_version(cls.distribution) or '-'}"
        status = "would be instrumented" if reason is None else f"skipped: {reason}"
        print(f"  {name:<12} {sdk:<22} supports {cls.supported:<14} {status}")

    base_url, api_key = connection(args)
    print(f"\nEndpoint {base_url}")
    print(f"  API key: {'set' if api_key else 'not set (events would be printed to stderr)'}")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{base_url}/v0/costs", params={"limit": 1}, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        print(f"  reachable: no ({type(exc).__name__})")
        return 1
    print(f"  reachable: yes (HTTP {response.status_code})")
    if not api_key:
        return 0
    if response.status_code in (401, 403):
        print("  key: rejected — check PAYGENTIC_API_KEY and its permissions (events:create, costs:write)")
        return 1
    print("  key: accepted" if response.status_code < 400 else f"  key: unknown (HTTP {response.status_code})")
    return 0 if response.status_code < 400 else 1
