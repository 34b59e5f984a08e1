"""Opt-in (``configure(propagate=True)``): carry attribution into ThreadPoolExecutor tasks and new Threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import wrapt

from ._context import wrap

__all__ = ["disable_propagation", "enable_propagation"]

# `_self_` keeps the marker on the wrapt wrapper: other names are forwarded to (and left on) the original function.
_MARKER = "_self_paygentic_costs_propagate"
_originals: dict[str, Any] = {}


def _submit(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # Bind the task to the submitting thread's attribution, as asyncio does for tasks.
    if args:
        return wrapped(wrap(args[0]), *args[1:], **kwargs)
    return wrapped(*args, **kwargs)


def _start(wrapped: Any, instance: threading.Thread, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # Thread.run runs in an empty context; bind it to the starting thread's attribution.
    instance.run = wrap(instance.run)  # type: ignore[method-assign]
    return wrapped(*args, **kwargs)


def enable_propagation() -> None:
    """Patch ``ThreadPoolExecutor.submit`` and ``Thread.start`` once (idempotent)."""
    for owner, name, wrapper in ((ThreadPoolExecutor, "submit", _submit), (threading.Thread, "start", _start)):
        current = owner.__dict__[name]
        if getattr(current, _MARKER, False):
            continue
        patched = wrapt.FunctionWrapper(current, wrapper)
        setattr(patched, _MARKER, True)
        _originals[f"{owner.__name__}.{name}"] = (owner, name, current)
        setattr(owner, name, patched)


def disable_propagation() -> None:
    """Restore the originals."""
    for owner, name, original in list(_originals.values()):
        setattr(owner, name, original)
    _originals.clear()
