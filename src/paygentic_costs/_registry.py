"""Which integrations exist (entry-point group ``paygentic_costs.integrations``) and which are active."""

from __future__ import annotations

import importlib.metadata
import logging
import threading

from ._errors import IntegrationUnavailable
from ._guard import internal_logger
from .instrumentation import Instrumentor

__all__ = ["available", "instrument", "instrumentors", "uninstrument"]

GROUP = "paygentic_costs.integrations"
_lock = threading.RLock()
_instances: dict[str, Instrumentor] = {}


def available() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed integrations by name (nothing is imported)."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}


def _instance(name: str, entry_point: importlib.metadata.EntryPoint) -> Instrumentor:
    with _lock:
        existing = _instances.get(name)
        if existing is not None:
            return existing
        cls = entry_point.load()
        if not (isinstance(cls, type) and issubclass(cls, Instrumentor)):
            raise IntegrationUnavailable(f"entry point {name!r} ({entry_point.value}) is not an Instrumentor subclass")
        instance = cls()
        _instances[name] = instance
        return instance


def instrumentors() -> dict[str, Instrumentor]:
    """The integrations instrumented so far (including reverted ones), by name."""
    with _lock:
        return dict(_instances)


def instrument(names: tuple[str, ...], *, event_type: str | None, disabled: frozenset[str]) -> list[str]:
    """Instrument ``names`` (explicit: errors raise) or, with no names, every usable one (errors are skipped)."""
    found = available()
    activated: list[str] = []
    if names:
        for name in names:
            entry_point = found.get(name)
            if entry_point is None:
                known = ", ".join(sorted(found)) or "none installed"
                raise IntegrationUnavailable(
                    f"no integration named {name!r} (installed: {known}); install it with "
                    f"pip install 'paygentic-costs-{name}'"
                )
            _instance(name, entry_point).instrument(event_type=event_type)
            activated.append(name)
        return activated
    for name, entry_point in sorted(found.items()):
        if name in disabled:
            continue
        try:
            instance = _instance(name, entry_point)
            if instance.unavailable_reason() is not None:
                internal_logger.debug("skipping integration %s: %s", name, instance.unavailable_reason())
                continue
            instance.instrument(event_type=event_type)
            activated.append(name)
        except Exception as exc:  # auto-discovery never breaks the host
            internal_logger.log(logging.DEBUG, "skipping integration %s: %s", name, exc)
    return activated


def uninstrument(names: tuple[str, ...]) -> None:
    """Revert ``names``, or every integration when none are given."""
    with _lock:
        targets = names or tuple(_instances)
        for name in targets:
            instance = _instances.get(name)
            if instance is not None:
                instance.uninstrument()
